"""Retention and verifiable erasure (issue 19 part 3), on SQLite and PostgreSQL.

A policy "until every intended recipient has pulled" erases an item exactly
when the last recipient's complete download is logged (not after the first),
with an ``evidence.erase`` entry the verifier accepts; a legal hold blocks the
sweep and the owner's erase-now alike; a pull of an erased item says so with
its own exit status; ``server check`` does not miss the erased blob.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.verify import verify_log
from exchange.cli.main import main as cli_main
from exchange.crypto.age import NoIdentityMatch, decrypt
from exchange.crypto.envelope import unwrap_envelope
from exchange.service.retention import erase_record
from exchange.storage.errors import NotFound
from exchange.storage.sqlite_store import SqliteStore
from tests.e2e.conftest import World, new_case
from tests.e2e.test_json_outputs import _valid
from tests.server_harness import ORIGIN, read_log, run

ERASED_EXIT = 5


def server_cli(world: World, *args: str) -> str:
    """Run an ``exchange server`` command in process (as the operator); return its stdout."""
    d = world.deployment
    argv = ["server", *args, "--data-dir", str(d.data_dir)]
    if d.database_url and args[0] != "restore":
        argv += ["--database", d.database_url]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(argv) == 0
    return out.getvalue()


def sweep(world: World) -> list[str]:
    """Run ``exchange server sweep`` once; return the ids it erased."""
    erased: list[str] = _valid("server-sweep", server_cli(world, "sweep", "--json"))["erased"]
    return erased


def log_entries(world: World) -> tuple[list[dict[str, Any]], Any]:
    """The whole log, decoded, and the verifier's report with the pinned anchor."""
    entries, note = run(read_log(world.deployment))
    report = verify_log(entries, world.deployment.log_vkey, note, origin=ORIGIN,
                        anchor=world.deployment.anchor)
    return [json.loads(e) for e in entries], report


def upload(world: World, case_id: str, path: Path) -> str:
    """Upload ``path`` as the prosecutor; return the evidence id."""
    return world.cli("prosecutor", "upload", case_id, str(path)).stdout.strip()


def test_until_delivered_erases_when_the_last_recipient_pulled_unless_on_hold(
        both: World, tmp_path: Path) -> None:
    world = both
    case_id = new_case(world, "Operation Retention", "coordinator", "coordinator2")
    policy = _valid("case-policy", world.cli("prosecutor", "case", "policy", case_id,
                                             "--until-delivered", "--json").stdout)
    assert policy["policy"] == {"retention": {"mode": "until-delivered"}}
    item = tmp_path / "statement.pdf"
    item.write_bytes(b"%PDF" + bytes(3000))
    evidence_id = upload(world, case_id, item)
    assert sweep(world) == []
    world.cli("coordinator", "pull", case_id, "--dest", str(tmp_path / "c1"))
    assert sweep(world) == []  # one of two recipients: not yet
    world.cli("coordinator2", "pull", case_id, "--dest", str(tmp_path / "c2"))
    assert sweep(world) == [evidence_id]

    again = world.cli("coordinator", "pull", case_id, "--file", evidence_id,
                      "--dest", str(tmp_path / "again"), check=False)
    assert again.returncode == ERASED_EXIT, again.stderr
    assert "erased on" in again.stderr and "until" not in again.stdout

    entries, report = log_entries(world)
    assert report.ok, [str(f) for f in report.findings]
    erasures = [e for e in entries if e["action"] == "evidence.erase"]
    assert [(e["object"], e["details"]["reason"]) for e in erasures] == [
        (evidence_id, "delivered")]
    policy = [e for e in entries if e["action"] == "case.policy" and e["case"] == case_id]
    assert erasures[0]["details"]["policy"] == policy[-1]["details"]["statement_hash"]
    downloads = [e["index"] for e in entries if e["action"] == "evidence.download"
                 and e["object"] == evidence_id and e["outcome"] == "ok"]
    assert erasures[0]["index"] > max(downloads)
    server_cli(world, "check")  # exit 0: the erased blob is not reported missing

    # Legal hold: the same policy, the same pulls, and nothing goes (sweep or erase-now).
    world.cli("prosecutor", "case", "policy", case_id, "--legal-hold", "on")
    held = upload(world, case_id, item)
    for name in ("coordinator", "coordinator2"):
        world.cli(name, "pull", case_id, "--dest", str(tmp_path / f"{name}-held"))
    assert held not in sweep(world)
    refused = world.cli("prosecutor", "case", "erase", case_id, check=False)
    assert refused.returncode == 1 and "legal-hold" in refused.stderr, refused.stderr
    world.cli("prosecutor", "case", "policy", case_id, "--legal-hold", "off")
    assert sweep(world) == [held]
    _, report = log_entries(world)
    assert report.ok, [str(f) for f in report.findings]


#: The backup and operator tests read the data directory as files; one database is enough
#: for them, so they take only the SQLite instance of the module's server (never a skip).
sqlite_only = pytest.mark.parametrize("both", ["sqlite"], indirect=True)


async def _case_keys(store: SqliteStore, case_id: str, world: World) -> list[Any]:
    """Every epoch key the prosecutor can open from what ``store`` holds."""
    identity = world.deployment.cast["prosecutor"].age_identity
    keys = []
    async with store.transaction("test") as tx:
        latest = (await tx.latest_key_epoch(case_id)).epoch
        for epoch in range(1, latest + 1):
            try:
                envelope = await tx.get_envelope(case_id, epoch, "prosecutor")
            except NotFound:
                continue
            keys.append(unwrap_envelope(envelope.data, identity, case_id=case_id, epoch=epoch))
    return keys


@sqlite_only
def test_a_restored_backup_cannot_decrypt_a_kept_copy_of_erased_evidence(
        both: World, tmp_path: Path) -> None:
    world = both
    d = world.deployment
    case_id = new_case(world, "Operation Shred")
    item = tmp_path / "intercept.txt"
    item.write_text("the secret the erasure must take away\n")
    evidence_id = upload(world, case_id, item)

    async def blob_and_keys() -> tuple[str, list[Any]]:
        store = await d.open_store()
        try:
            async with store.transaction("test") as tx:
                blob_id = (await tx.get_evidence(evidence_id)).blob_id
            return blob_id, await _case_keys(store, case_id, world)  # type: ignore[arg-type]
        finally:
            await store.close()

    blob_id, before = run(blob_and_keys())
    kept = tmp_path / "kept-ciphertext"  # what a careless copy (or an old backup) keeps
    shutil.copyfile(d.data_dir / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id, kept)
    assert decrypt(kept.read_bytes(), [before[0].identity])  # readable while the epoch lives

    done = _valid("case-erase", world.cli("prosecutor", "case", "erase", case_id, "--file",
                                          evidence_id, "--json").stdout)
    assert done["erased"] == [evidence_id] and done["shredded"] == [1]
    assert not (d.data_dir / "blobs" / blob_id[:2] / blob_id[2:4] / blob_id).exists()
    archive = tmp_path / "after-erasure.tar"
    server_cli(world, "backup", "-o", str(archive))
    restored = tmp_path / "restored"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["server", "restore", str(archive), "--data-dir", str(restored)]) == 0

    async def offered() -> list[Any]:
        store = await SqliteStore.open(restored, signer=None)
        try:
            async with store.transaction("test") as tx:
                with pytest.raises(NotFound):
                    await tx.get_evidence(evidence_id)
                assert (await tx.get_erasure(evidence_id)).reason == "owner"
            return await _case_keys(store, case_id, world)
        finally:
            await store.close()

    keys = run(offered())
    assert [k.epoch for k in keys] == [2]  # epoch 1's envelopes were shredded
    with pytest.raises(NoIdentityMatch):
        decrypt(kept.read_bytes(), [k.identity for k in keys])

    entries, report = log_entries(world)  # the owner's erase and the shred verify
    assert report.ok, [str(f) for f in report.findings]
    request = [e for e in entries if e["action"] == "case.erase" and e["case"] == case_id]
    assert [(e["object"], e["outcome"]) for e in request] == [(evidence_id, "ok")]
    erasure = next(e for e in entries if e["action"] == "evidence.erase"
                   and e["object"] == evidence_id)
    assert erasure["details"]["request"] == request[0]["index"]
    assert any(e["action"] == "envelope.shred" and e["case"] == case_id for e in entries)


@sqlite_only
def test_the_verifier_names_erasures_the_log_does_not_justify(
        both: World, tmp_path: Path) -> None:
    """A hostile operator (database and log key in hand) erases what is not due, then
    erases under legal hold: each forged erasure entry is named."""
    world = both
    d = world.deployment
    case_id = new_case(world, "Operation Operator", "coordinator")
    world.cli("prosecutor", "case", "policy", case_id, "--until-delivered")
    ids = []
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text(name)
        ids.append(upload(world, case_id, tmp_path / name))
    entries, _ = log_entries(world)
    policy = [e for e in entries if e["action"] == "case.policy" and e["case"] == case_id]

    async def operator_erases(evidence_id: str, reason: str) -> int:
        store = await d.open_store()
        try:
            async with store.transaction("operator") as tx:
                record = await tx.get_evidence(evidence_id)
                index = await erase_record(
                    tx, record, now=int(time.time()), reason=reason,
                    policy=policy[-1]["details"]["statement_hash"], request_index=None)
            blob = d.data_dir / "blobs" / record.blob_id[:2] / record.blob_id[2:4]
            (blob / record.blob_id).unlink()
            await store.publish_checkpoint()
            return index
        finally:
            await store.close()

    not_due = run(operator_erases(ids[0], "delivered"))  # nobody pulled it
    world.cli("prosecutor", "case", "policy", case_id, "--legal-hold", "on")
    held = run(operator_erases(ids[1], "owner"))
    _, report = log_entries(world)
    named = {(f.index, f.rule) for f in report.findings}
    assert (not_due, "erasure-unjustified") in named, [str(f) for f in report.findings]
    assert (held, "erased-under-hold") in named, [str(f) for f in report.findings]
