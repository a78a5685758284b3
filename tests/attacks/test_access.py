"""Access across boundaries: a removed member with its old key, a member of another case.

The basic boundaries (outsider, admin and auditor on cases, envelopes,
uploads, evidence and blobs; a removed member's old envelope) are in
``tests/integration/test_server_cases.py`` and ``test_server_evidence.py``.
Here a removed member who kept its epoch-1 key and an old evidence id tries
everything in the case — listing, the old evidence record and its bytes, the
feed, uploads, the new epoch's envelope — and is refused each time (403
``not-a-member``, logged); evidence sealed after the removal is for the new
epoch's key, which the old key cannot open. A member of case A cannot reach
case B's evidence through its own case or by id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from exchange.crypto.age import decrypt, encrypt
from exchange.errors import CryptoError
from exchange.transport.client import SignedSession
from tests import statements
from tests.faults._tools import TUS, b64, case_head, new_case, sha256_hex
from tests.server_harness import Deployment, entry_at, expect_problem, run


async def _commit(d: Deployment, pro: SignedSession, case_id: str, data: bytes,
                  epoch: int) -> str:
    upload = await pro.create_upload(case_id, len(data))
    await pro.append_chunk(upload.path, 0, len(data), lambda s, e: _once(data[s:e]))
    record = await pro.commit_upload(upload.path, sealed_manifest=b"m",
                                     ciphertext_sha256=sha256_hex(data), epoch=epoch,
                                     case_head=await case_head(d, pro, case_id))
    return str(record["evidence_id"])


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_removed_member_with_old_key_and_ids_is_refused(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro, d.session("coordinator") as gone:
            case_id, key1 = await new_case(d, pro, "coordinator")
            old_eid = await _commit(d, pro, case_id, encrypt(b"before", [key1.recipient()]), 1)
            removed, key2 = await statements.remove_member(pro, d.anchor, case_id,
                                                           "coordinator")
            assert removed.status == 200, removed.body
            sealed_after = encrypt(b"after", [key2.recipient()])
            new_eid = await _commit(d, pro, case_id, sealed_after, 2)
            for method, path, headers in (
                ("GET", f"/v1/cases/{case_id}/evidence", {}),
                ("GET", f"/v1/evidence/{old_eid}", {}),
                ("GET", f"/v1/evidence/{old_eid}/content", {}),
                ("GET", f"/v1/evidence/{new_eid}/content", {"Range": "bytes=0-9"}),
                ("GET", f"/v1/cases/{case_id}/epochs/2/envelope", {}),
                ("GET", f"/v1/cases/{case_id}/feed?after=0&wait=0", {}),
                ("POST", f"/v1/cases/{case_id}/uploads", {**TUS, "Upload-Length": "1"}),
            ):
                index = await expect_problem(await gone.request(method, path, headers=headers),
                                             403, "not-a-member")
                entry = await entry_at(d, index)
                assert (entry["actor"], entry["outcome"]) == ("coordinator", "denied")
            # Even with the bytes (from elsewhere), the old epoch's key opens nothing new.
            with pytest.raises(CryptoError):
                decrypt(sealed_after, [key1.identity])

    run(scenario())


def test_member_of_one_case_cannot_reach_another(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro, d.session("prosecutor2") as pro2, \
                d.session("coordinator2") as coord2:
            case_a, _ = await new_case(d, pro2, "coordinator2", owner="prosecutor2")
            case_b, _ = await new_case(d, pro)
            eid_b = await _commit(d, pro, case_b, b"case b ciphertext", 1)
            for session in (pro2, coord2):
                for path in (f"/v1/evidence/{eid_b}", f"/v1/evidence/{eid_b}/content",
                             f"/v1/cases/{case_b}/evidence", f"/v1/cases/{case_b}"):
                    await expect_problem(await session.request("GET", path), 403,
                                         "not-a-member")
            # Its own case does not lend access either: B's evidence id is not in A.
            upload = await pro2.create_upload(case_a, 3)
            await pro2.append_chunk(upload.path, 0, 3, lambda s, e: _once(b"abc"[s:e]))
            response = await pro2.request("POST", upload.path + "/commit", json={
                "sealed_manifest": b64(b"m"), "ciphertext_sha256": sha256_hex(b"case b "),
                "epoch": 1, "case_head": await case_head(d, pro2, case_a)})
            assert response.status == 422  # the hash of someone else's blob is not a way in
            response.release()

    run(scenario())
