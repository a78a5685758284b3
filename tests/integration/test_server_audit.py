"""The audit-log API over real signed HTTP, on SQLite and PostgreSQL.

Everything a client or auditor receives is checked with the pure audit core
only, never against the store: the checkpoint verifies with the key printed
by ``server init``; tiles rebuild the checkpoint's root; inclusion and
consistency proofs and tlog-proof receipts verify offline; the whole log,
fetched as entry bundles, passes ``exchange.audit.verify_log`` (request
signatures included). Role boundaries are refusals with their own entries.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from exchange.audit import (
    TileId,
    entry_bundles,
    hashes_from_tiles,
    leaf_hash,
    open_checkpoint,
    parse_bundle,
    root_at,
    tiles_for_size,
    verify_consistency,
    verify_inclusion,
    verify_log,
    verify_receipt,
)
from exchange.audit.checkpoint import SignedCheckpoint
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER
from tests.server_harness import (
    ORIGIN,
    Deployment,
    entry_at,
    expect_problem,
    json_of,
    run,
)


async def get_checkpoint(session: SignedSession, vkey: str) -> tuple[bytes, SignedCheckpoint]:
    response = await session.request("GET", "/v1/audit/checkpoint")
    async with response:
        note = await response.read()
        assert response.status == 200, note
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert AUDIT_INDEX_HEADER not in response.headers  # checkpoint polls are not logged
    return note, open_checkpoint(note, vkey, origin=ORIGIN)


async def get_bytes(session: SignedSession, path: str) -> bytes:
    """GET a log resource; tiles and entry bundles are not logged, receipts are."""
    response = await session.request("GET", path)
    async with response:
        body = await response.read()
        assert response.status == 200, (path, body[:300])
        if path.startswith("/v1/audit/tile/"):
            assert AUDIT_INDEX_HEADER not in response.headers, path
        else:
            assert int(response.headers[AUDIT_INDEX_HEADER]) >= 0
    return body


async def fetch_log(session: SignedSession, size: int) -> list[bytes]:
    entries: list[bytes] = []
    for bundle in entry_bundles(0, size):
        data = await get_bytes(session, "/v1/audit/" + bundle.path())
        entries.extend(parse_bundle(data, bundle.width))
    return entries


async def audit_api_flow(d: Deployment) -> None:
    async with d.session("auditor") as auditor, d.session("prosecutor") as prosecutor:
        # Make some traffic: listings by the prosecutor (each one an entry).
        own_indexes = []
        for _ in range(3):
            response = await prosecutor.request("GET", "/v1/cases")
            await json_of(response)
            own_indexes.append(int(response.headers[AUDIT_INDEX_HEADER]))

        note1, signed1 = await get_checkpoint(auditor, d.log_vkey)
        cp1 = signed1.checkpoint
        assert cp1.size > max(own_indexes)  # on-demand publication covers fresh entries
        # A second poll with no traffic in between returns the same checkpoint: polls
        # do not grow the log.
        note_again, _ = await get_checkpoint(auditor, d.log_vkey)
        assert note_again == note1

        # Hash tiles rebuild the checkpoint's root.
        tiles: dict[TileId, bytes] = {}
        for tile in tiles_for_size(cp1.size):
            tiles[tile] = await get_bytes(auditor, "/v1/audit/" + tile.path())
        getter = hashes_from_tiles(lambda ids: [tiles[t] for t in ids], cp1.size)
        assert root_at(getter, cp1.size) == cp1.root

        # The whole log through the API verifies offline, request signatures included.
        entries = await fetch_log(auditor, cp1.size)
        report = verify_log(entries, d.log_vkey, note1, origin=ORIGIN)
        assert report.ok, [str(f) for f in report.findings]
        assert report.entries == cp1.size
        # Mirroring (every hash tile and entry bundle) added no entry.
        note_after_mirror, _ = await get_checkpoint(auditor, d.log_vkey)
        assert note_after_mirror == note1

        # Inclusion proof of the prosecutor's own entry, checked against the checkpoint.
        index = own_indexes[0]
        proof = await json_of(await prosecutor.request(
            "GET", f"/v1/audit/proof/inclusion?index={index}&size={cp1.size}"))
        hashes = [base64.b64decode(h) for h in proof["hashes"]]
        verify_inclusion(leaf_hash(entries[index]), index, cp1.size, hashes, cp1.root)

        # Consistency between two checkpoints (the proof read above grew the log).
        _, signed2 = await get_checkpoint(auditor, d.log_vkey)
        cp2 = signed2.checkpoint
        assert cp2.size > cp1.size
        proof = await json_of(await prosecutor.request(
            "GET", f"/v1/audit/proof/consistency?old={cp1.size}&new={cp2.size}"))
        verify_consistency(cp1.size, cp2.size, [base64.b64decode(h) for h in proof["hashes"]],
                           cp1.root, cp2.root)

        # A receipt for the prosecutor's own entry verifies offline with the log key.
        text = await get_bytes(prosecutor, f"/v1/audit/receipt/{index}")
        verify_receipt(text, entries[index], d.log_vkey, origin=ORIGIN)
        # ... and the auditor may fetch it too.
        text = await get_bytes(auditor, f"/v1/audit/receipt/{index}")
        verify_receipt(text, entries[index], d.log_vkey, origin=ORIGIN)
        # A receipt for the very latest entry needs a fresh checkpoint: published on demand.
        response = await prosecutor.request("GET", "/v1/cases")
        await json_of(response)
        latest = int(response.headers[AUDIT_INDEX_HEADER])
        text = await get_bytes(prosecutor, f"/v1/audit/receipt/{latest}")
        (stored,) = await _entries(d, latest)
        verify_receipt(text, stored, d.log_vkey, origin=ORIGIN)

        # Every read above (except checkpoints) is an audit.read entry of its reader.
        read_entry = await entry_at(d, int(response.headers[AUDIT_INDEX_HEADER]) + 1)
        assert read_entry["action"] == "audit.read"
        assert read_entry["actor"] == d.cast["prosecutor"].id
        assert read_entry["object"] == f"receipt/{latest}"


async def _entries(d: Deployment, index: int) -> list[bytes]:
    store = await d.open_store()
    try:
        return [e.entry for e in await store.audit_entries(index, index + 1)]
    finally:
        await store.close()


def test_audit_api_verifies_offline(deployment: Deployment) -> None:
    run(audit_api_flow(deployment))


async def role_boundaries(d: Deployment) -> None:
    async with d.session("prosecutor") as prosecutor, d.session("auditor") as auditor, \
            d.session("coordinator") as coordinator, d.session("admin") as admin:
        _, signed = await get_checkpoint(prosecutor, d.log_vkey)
        size = signed.checkpoint.size
        # Entry bundles are for auditors and admins only: a refusal with its own entry.
        index = await expect_problem(
            await prosecutor.request("GET", "/v1/audit/tile/entries/000.p/1"), 403, "forbidden")
        denied = await entry_at(d, index)
        assert denied["outcome"] == "denied"
        assert denied["action"] == "audit.read"
        assert denied["actor"] == d.cast["prosecutor"].id
        assert denied["reason"] == "forbidden"
        assert denied["object"] == "tile/entries/000.p/1"
        await expect_problem(
            await coordinator.request("GET", "/v1/audit/tile/entries/000.p/1"), 403, "forbidden")
        assert parse_bundle(await get_bytes(admin, "/v1/audit/tile/entries/000.p/2"), 2)
        # Level-0 hash tiles are fine for everyone.
        assert len(await get_bytes(prosecutor, "/v1/audit/tile/0/000.p/1")) == 32

        # Receipts: not of another participant's entry (entry 1 is the admin's enrolment).
        await expect_problem(await prosecutor.request("GET", "/v1/audit/receipt/1"),
                             403, "forbidden")
        assert (await get_bytes(auditor, "/v1/audit/receipt/1")).startswith(
            b"c2sp.org/tlog-proof@v1\n")

        # Bad and out-of-range parameters are refusals with entries too.
        await expect_problem(await prosecutor.request(
            "GET", f"/v1/audit/proof/inclusion?index=0&size={size + 10**6}"), 404, "not-found")
        await expect_problem(await prosecutor.request(
            "GET", "/v1/audit/proof/inclusion?index=5&size=5"), 400, "invalid-request")
        await expect_problem(await prosecutor.request(
            "GET", "/v1/audit/proof/inclusion?index=01&size=5"), 400, "invalid-request")
        await expect_problem(await prosecutor.request(
            "GET", "/v1/audit/proof/consistency?old=3"), 400, "invalid-request")
        await expect_problem(await prosecutor.request(
            "GET", "/v1/audit/proof/consistency?old=3&new=2"), 400, "invalid-request")
        await expect_problem(await auditor.request("GET", "/v1/audit/tile/0/001"),
                             404, "not-found")  # a full tile that does not exist yet
        await expect_problem(await auditor.request("GET", "/v1/audit/tile/0/0001"),
                             400, "invalid-request")  # not canonical
        await expect_problem(await auditor.request("GET", "/v1/audit/tile/0/000.p/256"),
                             400, "invalid-request")
        await expect_problem(await auditor.request("GET", f"/v1/audit/receipt/{10**9}"),
                             404, "not-found")

        # Unsigned checkpoint fetches are refused (not logged: nobody signed them).
        async with prosecutor.session.get(prosecutor.url("/v1/audit/checkpoint")) as response:
            body: dict[str, Any] = json.loads(await response.text())
            assert response.status == 401, body
            assert AUDIT_INDEX_HEADER not in response.headers


def test_audit_read_role_boundaries(sqlite_deployment: Deployment) -> None:
    run(role_boundaries(sqlite_deployment))
