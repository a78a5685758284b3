"""Deliveries (who of an item's intended recipients pulled it, when), on both databases.

A real server (SQLite, then PostgreSQL) and the real CLI: the prosecutor
uploads to a case with three other members, two of them pull, the third is
removed. The auditor's answer (the whole verified log) must match exactly
what happened, members see their own pulls only, and a server that edits its
database between two commands, adding a download nobody made or dropping one
that happened, is caught or does not change a verified answer.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from exchange.audit.entry import AuditEntry
from exchange.cli._ui import ExitCode
from tests.e2e.conftest import World, new_case
from tests.server_harness import Deployment, run

RECIPIENTS = ("coordinator", "coordinator2", "prosecutor2")


def _deliveries(world: World, who: str, case_id: str, *, check: bool = True) -> Any:
    done = world.cli(who, "files", case_id, "--deliveries", "--json", check=check)
    return json.loads(done.stdout) if check else done


def _append_forged_download(deployment: Deployment, *, actor: str, case_id: str,
                            evidence_id: str, size: int) -> int:
    """The operator logs a download nobody made (it holds the log key, not the actor's)."""

    async def append() -> int:
        store = await deployment.open_store()
        try:
            async with store.transaction("operator") as tx:
                appended = await tx.append_audit(lambda index, prev, time: AuditEntry(
                    index=index, time=time, actor=actor, actor_key="",
                    action="evidence.download", case=case_id, object=evidence_id,
                    outcome="ok", reason=None, request=None,
                    details={"ciphertext_sha256": "0" * 64, "start": 0, "end": size},
                    prev=prev))
            await store.publish_checkpoint()
            return appended.index
        finally:
            await store.close()

    return run(append())


def _drop_entry(deployment: Deployment, index: int) -> None:
    """The operator deletes one audit entry row from its database."""
    if deployment.database_url is None:
        path = deployment.data_dir / "exchange.sqlite3"
        with contextlib.closing(sqlite3.connect(path, timeout=30)) as db, db:
            assert db.execute("DELETE FROM audit_entries WHERE idx = ?", (index,)).rowcount == 1
        return

    async def drop() -> None:
        conn = await asyncpg.connect(deployment.database_url)
        try:
            assert await conn.execute("DELETE FROM audit_entries WHERE idx = $1",
                                      index) == "DELETE 1"
        finally:
            await conn.close()

    run(drop())


@dataclass
class Story:
    """What happened: the case, the item, and the download entries of the two pulls."""

    world: World
    case_id: str
    evidence_id: str
    ciphertext_size: int
    pulled: dict[str, int]


@pytest.fixture(scope="module")
def story(both: World, tmp_path_factory: pytest.TempPathFactory) -> Story:
    """Upload to a case with three other members; two of them pull; the third is removed."""
    world, tmp_path = both, tmp_path_factory.mktemp("story")
    case_id = new_case(world, "Operation Delivery", *RECIPIENTS)
    item = tmp_path / "ledger.csv"
    item.write_bytes(b"account;amount\n" * 500)
    evidence_id = world.cli("prosecutor", "upload", case_id, str(item)).stdout.strip()
    pulled: dict[str, int] = {}
    size = 0
    for who in ("coordinator", "prosecutor2"):
        dest = tmp_path / who
        world.cli(who, "pull", case_id, "--dest", str(dest))
        record = json.loads((dest / case_id / "ledger.csv.custody.json").read_text())
        pulled[who], size = record["download"]["audit_index"], record["sizes"]["ciphertext"]
    world.cli("prosecutor", "case", "remove-member", case_id, "coordinator2")
    return Story(world=world, case_id=case_id, evidence_id=evidence_id, ciphertext_size=size,
                 pulled=pulled)


def test_deliveries_match_what_happened(story: Story) -> None:
    world, case_id, pulled = story.world, story.case_id, story.pulled
    # The auditor reads the whole verified log: the complete answer.
    full = _deliveries(world, "auditor", case_id)
    assert (full["complete"], full["limits"]) == (True, "")
    (only,) = full["evidence"]
    assert (only["evidence_id"], only["uploader"], only["upload_position_verified"]) == (
        story.evidence_id, "prosecutor", True)
    got = {r["participant"]: (r["pulled"], r["pulled_audit_index"], r["removed"])
           for r in only["recipients"]}
    assert got == {"coordinator": (True, pulled["coordinator"], False),
                   "coordinator2": (False, None, True),
                   "prosecutor2": (True, pulled["prosecutor2"], False)}
    assert only["pending"] == ["coordinator2"] and only["others"] == []
    assert all(r["pulled_at"].endswith("Z") for r in only["recipients"] if r["pulled"])
    removed = next(r for r in only["recipients"] if r["participant"] == "coordinator2")
    assert removed["removed_audit_index"] > pulled["prosecutor2"]
    # The auditor's report says the same, from its mirror.
    report = json.loads(world.cli("auditor", "audit", "report", "--deliveries", "--case",
                                  case_id, "--json").stdout)
    assert report["evidence"] == full["evidence"]

    # A member sees the recipients and its own pull; others' pulls are not readable.
    mine = _deliveries(world, "coordinator", case_id)
    assert mine["complete"] is False and "auditor" in mine["limits"]
    (seen,) = mine["evidence"]
    assert seen["file_name"] == "ledger.csv" and seen["upload_position_verified"] is False
    assert {r["participant"]: r["pulled"] for r in seen["recipients"]} == {
        "coordinator": True, "coordinator2": None, "prosecutor2": None}
    assert _deliveries(world, "prosecutor", case_id)["evidence"][0][
        "upload_position_verified"] is True


def test_a_server_that_adds_or_drops_a_download_is_caught(story: Story) -> None:
    world, case_id = story.world, story.case_id
    if world.deployment.backend == "sqlite":  # the renderings do not depend on the database
        page = world.base / "deliveries.html"
        world.cli("auditor", "audit", "report", "--deliveries", "--case", case_id, "--html",
                  str(page))
        html = page.read_text()
        assert "not pulled; removed from the case" in html and "pulled 20" in html
        assert "default-src 'none'" in html
        human = world.cli("coordinator", "files", case_id, "--deliveries")
        assert "not visible to you" in human.stdout and "incomplete:" in human.stderr
    before = _deliveries(world, "prosecutor", case_id)["evidence"]

    # The server adds a download nobody made: the auditor refuses to answer, and a
    # member's verified answer does not change.
    _append_forged_download(world.deployment, actor="coordinator2", case_id=case_id,
                            evidence_id=story.evidence_id, size=story.ciphertext_size)
    caught = _deliveries(world, "auditor", case_id, check=False)
    assert caught.returncode == ExitCode.VERIFICATION_FAILED, caught.stderr
    assert "does not verify" in caught.stderr
    assert _deliveries(world, "prosecutor", case_id)["evidence"] == before

    # The server drops the coordinator's download entry: the coordinator's client kept the
    # entry it verified, so its answer does not change; a client of the coordinator's that
    # never verified it (a new state directory) gets no answer rather than a wrong one.
    mine = _deliveries(world, "coordinator", case_id)["evidence"]
    _drop_entry(world.deployment, story.pulled["coordinator"])
    assert _deliveries(world, "coordinator", case_id)["evidence"] == mine
    (kept,) = world.state_dir("coordinator").glob("*/coordinator/own_entries.json")
    kept.unlink()
    dropped = _deliveries(world, "coordinator", case_id, check=False)
    assert dropped.returncode != 0, dropped.stdout
    assert '"pulled": true' not in dropped.stdout
