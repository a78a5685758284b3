"""The client CLI end to end against a real server: round trip, live feed, key substitution."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import time
from pathlib import Path

from exchange.audit.checkpoint import open_checkpoint
from exchange.audit.receipt import verify_receipt
from exchange.crypto.keys import ParticipantIdentity
from tests.e2e.conftest import Background, World, new_case
from tests.server_harness import entry_at, run


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_upload_then_pull_round_trip_with_custody(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, "Operation Round Trip", "coordinator")
    small = tmp_path / "note.txt"
    small.write_text("seized ledger, page 4\n")
    big = tmp_path / "image.bin"
    big.write_bytes(os.urandom(3 * 1024 * 1024 + 12345))  # several PATCHes of 1 MiB
    up = world.cli("prosecutor", "upload", case_id, str(small), str(big), "--chunk-mib", "1",
                   "--json")
    uploaded = json.loads(up.stdout)
    assert uploaded["schema"] == 1
    assert [u["file_name"] for u in uploaded["uploaded"]] == ["note.txt", "image.bin"]

    listed = json.loads(world.cli("coordinator", "files", case_id, "--json").stdout)["evidence"]
    assert sorted(e["file_name"] for e in listed) == ["image.bin", "note.txt"]
    assert {e["uploader"] for e in listed} == {"prosecutor"}
    titles = json.loads(world.cli("coordinator", "case", "list", "--json").stdout)["cases"]
    assert {"case_id": case_id, "title": "Operation Round Trip"}.items() <= next(
        c for c in titles if c["case_id"] == case_id).items()

    dest = tmp_path / "dest"
    pulled = world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    assert "2 file(s) pulled" in pulled.stderr
    for source in (small, big):
        got = dest / case_id / source.name
        assert got.read_bytes() == source.read_bytes()
        custody = json.loads((dest / case_id / f"{source.name}.custody.json").read_text())
        assert custody["hashes"]["plaintext_sha256"] == _sha(source)
        assert custody["uploader"]["key_checked_against_log"] is True
        # Both receipts verify offline against the logged entries.
        for part in ("upload", "download"):
            entry = run(entry_at(world.deployment, custody[part]["audit_index"]))
            assert entry["action"] == ("evidence.commit" if part == "upload"
                                       else "evidence.download")
            raw = _entry_bytes(world, custody[part]["audit_index"])
            verify_receipt(custody[part]["receipt"].encode(), raw, world.deployment.log_vkey)
    assert not list((dest / ".partial").iterdir())

    again = world.cli("coordinator", "pull", case_id, "--dest", str(dest), "--json")
    summary = json.loads(again.stdout)
    assert summary["pulled"] == [] and summary["already_pulled"] == 2


def _entry_bytes(world: World, index: int) -> bytes:
    async def read() -> bytes:
        store = await world.deployment.open_store()
        try:
            (stored,) = await store.audit_entries(index, index + 1)
            return stored.entry
        finally:
            await store.close()

    return run(read())


def test_watch_pulls_a_new_file_within_seconds_and_sigint_exits_130(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Action Day", "coordinator")
    dest = tmp_path / "dest"
    watcher = Background(world.popen("coordinator", "pull", case_id, "--dest", str(dest),
                                     "--watch"))
    try:
        assert watcher.wait_for("watching case", 60), watcher.text
        evidence = tmp_path / "live.bin"
        evidence.write_bytes(os.urandom(200_000))
        world.cli("prosecutor", "upload", case_id, str(evidence))
        uploaded_at = time.monotonic()
        target = dest / case_id / "live.bin"
        while not target.exists():
            assert time.monotonic() - uploaded_at < 10, watcher.text
            time.sleep(0.05)
        assert target.read_bytes() == evidence.read_bytes()
        assert (dest / case_id / "live.bin.custody.json").exists()
    finally:
        code = watcher.stop(signal.SIGINT)
    assert code == 130, watcher.text
    assert watcher.lines[-1] == "exchange: stopped watching\n", watcher.text
    assert "error" not in watcher.text and "Traceback" not in watcher.text, watcher.text


def test_watch_all_picks_up_a_newly_shared_case_from_the_membership_feed(
    world: World, tmp_path: Path,
) -> None:
    # prosecutor2 is in no case yet: it learns of the new one only from its membership feed.
    case_id = world.cli("prosecutor", "case", "create", "--title", "Operation Shared").stdout
    case_id = case_id.strip()
    evidence = tmp_path / "shared.bin"
    evidence.write_bytes(os.urandom(100_000))
    world.cli("prosecutor", "upload", case_id, str(evidence))
    dest = tmp_path / "dest"
    watcher = Background(world.popen("prosecutor2", "pull", "--all", "--dest", str(dest),
                                     "--watch"))
    try:
        assert watcher.wait_for("watching for cases shared with you", 60), watcher.text
        world.cli("prosecutor", "case", "add-member", case_id, "prosecutor2")
        shared_at = time.monotonic()
        target = dest / case_id / "shared.bin"
        while not (target.exists() and (dest / case_id / "shared.bin.custody.json").exists()):
            # Generous for a loaded machine; typically well under 2 s (the feed is pushed).
            assert time.monotonic() - shared_at < 10, watcher.text
            time.sleep(0.02)
        print(f"newly shared case pulled {time.monotonic() - shared_at:.2f} s after add-member")
        assert target.read_bytes() == evidence.read_bytes()
        assert f"case {case_id} was shared with you" in watcher.text
        # A removal drops the case quietly: the watch goes on.
        world.cli("prosecutor", "case", "remove-member", case_id, "prosecutor2")
        assert watcher.wait_for(f"you were removed from case {case_id}", 10), watcher.text
        assert watcher.process.poll() is None, watcher.text
    finally:
        code = watcher.stop(signal.SIGINT)
    assert code == 130, watcher.text
    assert "error" not in watcher.text and "Traceback" not in watcher.text, watcher.text
    # The auditor replays the log with its membership.feed entries: nothing to report.
    verified = world.cli("auditor", "audit", "verify", "--state", str(tmp_path / "mirror"),
                         check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_key_substituted_in_the_database_has_no_effect(world: World) -> None:
    case_id = new_case(world, "Operation Substitution")
    # The server's operator swaps coordinator2's keys for their own in the participants row.
    # Clients never read that row: keys come from the signed enrolment statement.
    attacker = ParticipantIdentity.generate("coordinator2").public_bundle()
    with sqlite3.connect(world.deployment.data_dir / "exchange.sqlite3") as db:
        db.execute("UPDATE participants SET signing_key = ?, age_recipient = ?, fingerprint = ? "
                   "WHERE id = ?", (attacker.signing_key, attacker.age_recipient,
                                    attacker.fingerprint, "coordinator2"))
    added = world.cli("prosecutor", "case", "add-member", case_id, "coordinator2")
    real = world.deployment.cast["coordinator2"].public_bundle().fingerprint
    assert real in added.stderr and attacker.fingerprint not in added.stderr
    shown = json.loads(world.cli("prosecutor", "case", "show", case_id, "--json").stdout)
    assert {m["participant"]: m["fingerprint"] for m in shown["members"]}["coordinator2"] == real


def test_without_a_trust_anchor_nothing_is_trusted_and_the_hint_says_how(world: World) -> None:
    done = world.cli("coordinator", "case", "list", "--state-dir", str(world.base / "nokey"),
                     check=False, unset=("EXCHANGE_TRUST",))
    assert done.returncode == 4, done.stderr
    assert "no trust anchor is pinned" in done.stderr
    assert "ask your administrator" in done.stderr and "EXCHANGE_TRUST" in done.stderr


def test_a_log_key_other_than_the_anchors_is_refused(world: World) -> None:
    world.cli("coordinator", "case", "list")
    other = "exchange.test/log+00000000+" + "A" * 43 + "="
    done = world.cli("coordinator", "case", "list", "--log-key", other, check=False)
    assert done.returncode in (3, 4), done.stderr
    assert "trust anchor" in done.stderr


def test_checkpoint_state_is_kept_and_checked(world: World) -> None:
    world.cli("prosecutor", "case", "list")
    notes = list(world.state_dir("prosecutor").glob("*/prosecutor/checkpoint"))
    assert len(notes) == 1
    checkpoint = open_checkpoint(notes[0].read_bytes(), world.deployment.log_vkey).checkpoint
    assert checkpoint.size > 0


def _routes_logged(world: World, since: int) -> list[str]:
    """The routes the server answered after its ``since``-th stderr line."""
    lines = world.deployment.processes[0].lines[since:]
    return [json.loads(line)["route"] for line in lines
            if line.startswith("{") and '"request_handled"' in line]


def test_a_pull_syncs_the_directory_once(world: World, tmp_path: Path) -> None:
    """The manifest check reuses the case-key sync's directory (issue 17: per-pull cost).

    Before, the uploader lookup synced the directory alone a second time: a
    checkpoint, a consistency proof and a statement listing more per pull.
    """
    case_id = new_case(world, "Operation One Sync", "coordinator")
    source = tmp_path / "memo.txt"
    source.write_text("one directory sync per pull\n")
    world.cli("prosecutor", "upload", case_id, str(source))
    since = len(world.deployment.processes[0].lines)
    world.cli("coordinator", "pull", case_id, "--dest", str(tmp_path / "dest"))
    routes = _routes_logged(world, since)
    assert "/v1/evidence/{eid}/content" in routes
    assert routes.count("/v1/directory/statements") == 1, routes
    assert routes.count("/v1/cases/{cid}/statements") == 1, routes
    assert (tmp_path / "dest" / case_id / "memo.txt").read_text() == source.read_text()


def test_a_logged_read_says_in_the_server_log_how_long_it_waited_for_the_database(
    world: World,
) -> None:
    """``db_wait_ms`` (exchange.storage.waits) names the group commit's share of a slow answer."""
    since = len(world.deployment.processes[0].lines)
    world.cli("prosecutor", "case", "list")
    records = [json.loads(line) for line in world.deployment.processes[0].lines[since:]
               if line.startswith("{") and '"request_handled"' in line]
    listing = [r for r in records if r["route"] == "/v1/cases" and r["method"] == "GET"]
    assert listing, [r["route"] for r in records]
    for record in listing:  # logged: it waited for its unit's turn and for the commit
        waited = record["db_wait_ms"]
        assert {"queued", "lock", "commit"} <= set(waited), record
        assert waited["commit"] > 0 and 0 <= sum(waited.values()) <= record["duration_ms"]
