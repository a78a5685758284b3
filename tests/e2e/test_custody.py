"""Custody records end complete and check offline, as a court would check them."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.e2e.conftest import World, new_case


def _pulled(world: World, tmp_path: Path, title: str) -> tuple[str, Path, Path]:
    case_id = new_case(world, title, "coordinator")
    source = tmp_path / "phone dump.bin"
    source.write_bytes(os.urandom(300_000))
    world.cli("prosecutor", "upload", case_id, str(source))
    dest = tmp_path / "dest"
    world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    return case_id, dest / case_id / source.name, dest


def _statuses(stdout: str) -> dict[str, str]:
    document = json.loads(stdout)
    assert document["schema"] == 1
    (record,) = document["records"]
    return {c["check"]: c["status"] for c in record["checks"]}


def test_a_good_record_verifies_and_says_what_was_proven(world: World, tmp_path: Path) -> None:
    _, evidence, dest = _pulled(world, tmp_path, "Operation Custody")
    record = json.loads(evidence.with_name(evidence.name + ".custody.json").read_text())
    assert record["format"] == "exchange-custody/v2" and record["file_name"] == evidence.name

    done = world.cli("coordinator", "custody", "verify", str(dest), "--json")
    assert _statuses(done.stdout) == {
        "manifest signature": "ok", "file": "ok",
        # A coordinator has no log entries: the receipts' checkpoints verify, inclusion
        # needs the entry, which the report says rather than claiming it.
        "upload receipt": "not checked", "download receipt": "not checked"}
    assert "no errors were found" in done.stderr

    # An auditor with a verified mirror proves the entries too, via 'audit check'.
    world.cli("auditor", "audit", "verify")
    checked = world.cli("auditor", "audit", "check",
                        str(evidence.with_name(evidence.name + ".custody.json")), "--json")
    assert set(_statuses(checked.stdout).values()) == {"ok"}
    text = world.cli("auditor", "audit", "check",
                     str(evidence.with_name(evidence.name + ".custody.json")))
    assert "ok          upload receipt: entry" in text.stdout
    assert "evidence.commit by 'prosecutor'" in text.stdout


def test_a_tampered_record_or_file_fails(world: World, tmp_path: Path) -> None:
    _, evidence, _ = _pulled(world, tmp_path, "Operation Tamper")
    record_path = evidence.with_name(evidence.name + ".custody.json")
    original = record_path.read_text()

    evidence.write_bytes(evidence.read_bytes()[:-1] + b"\x00")
    flipped = world.cli("coordinator", "custody", "verify", str(record_path), "--json",
                        check=False)
    assert flipped.returncode == 3
    assert _statuses(flipped.stdout)["file"] == "failed"

    record = json.loads(original)
    record["manifest"]["uploaded_at"] = "2020-01-01T00:00:00Z"
    record["signed_manifest"]["manifest"] = record["manifest"]
    record_path.write_text(json.dumps(record))
    forged = world.cli("coordinator", "custody", "verify", str(record_path), "--json",
                       check=False)
    assert forged.returncode == 3
    assert _statuses(forged.stdout)["manifest signature"] == "failed"


def test_a_missing_receipt_is_reported_then_filled_in(world: World, tmp_path: Path) -> None:
    _, evidence, dest = _pulled(world, tmp_path, "Operation Drain")
    record_path = evidence.with_name(evidence.name + ".custody.json")
    record = json.loads(record_path.read_text())
    kept = record["download"]["receipt"]
    record["download"]["receipt"] = None  # what a pull during a server drain leaves
    record_path.write_text(json.dumps(record))

    missing = world.cli("coordinator", "custody", "verify", str(dest), "--json", check=False)
    assert missing.returncode == 1
    assert _statuses(missing.stdout)["download receipt"] == "missing"
    assert "exchange custody complete" in missing.stderr

    completed = world.cli("coordinator", "custody", "complete", str(dest), "--json")
    assert json.loads(completed.stdout)["completed"] == [
        {"record": str(record_path), "parts": ["download"]}]
    assert json.loads(record_path.read_text())["download"]["receipt"] is not None
    assert world.cli("coordinator", "custody", "verify", str(dest)).returncode == 0
    assert kept is not None


def test_any_later_command_completes_records_noted_as_pending(world: World,
                                                              tmp_path: Path) -> None:
    _, evidence, _ = _pulled(world, tmp_path, "Operation Later")
    record_path = evidence.with_name(evidence.name + ".custody.json")
    record = json.loads(record_path.read_text())
    record["upload"]["receipt"] = None
    record_path.write_text(json.dumps(record))
    (state,) = world.state_dir("coordinator").glob("*/coordinator")
    (state / "custody_pending.json").write_text(json.dumps({"paths": [str(record_path)]}))

    listed = world.cli("coordinator", "case", "list")
    assert "completed custody records that were missing a receipt" in listed.stderr
    assert json.loads(record_path.read_text())["upload"]["receipt"] is not None
    assert json.loads((state / "custody_pending.json").read_text()) == {"paths": []}
