"""Custody records end complete and check offline, as a court would check them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.client.custody import read_record
from exchange.client.custody_caseuco import export_case_uco
from tests.e2e.conftest import World, new_case


@pytest.fixture(scope="module")
def pulled(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One case, four files uploaded and pulled once; each test gets its own file."""
    base = tmp_path_factory.mktemp("custody")
    case_id = new_case(world, "Operation Custody", "coordinator")
    sources = []
    for name in NAMES:
        (base / "src").mkdir(exist_ok=True)
        sources.append(base / "src" / name)
        sources[-1].write_bytes(os.urandom(100_000))
    world.cli("prosecutor", "upload", case_id, *map(str, sources))
    world.cli("coordinator", "pull", case_id, "--dest", str(base / "dest"))
    return {name: base / "dest" / case_id / name for name in NAMES}


NAMES = ("good.bin", "tampered.bin", "drained.bin", "later.bin")


def _statuses(stdout: str) -> dict[str, str]:
    document = json.loads(stdout)
    assert document["schema"] == 1
    (record,) = document["records"]
    return {c["check"]: c["status"] for c in record["checks"]}


def _record(evidence: Path) -> Path:
    return evidence.with_name(evidence.name + ".custody.json")


def test_a_good_record_verifies_and_says_what_was_proven(world: World,
                                                         pulled: dict[str, Path]) -> None:
    evidence = pulled["good.bin"]
    record = json.loads(_record(evidence).read_text())
    assert record["format"] == "exchange-custody/v2" and record["file_name"] == evidence.name

    done = world.cli("coordinator", "custody", "verify", str(_record(evidence)), "--json")
    assert _statuses(done.stdout) == {
        "manifest signature": "ok", "file": "ok",
        # A coordinator has no log entries: the receipts' checkpoints verify, inclusion
        # needs the entry, which the report says rather than claiming it.
        "upload receipt": "not checked", "download receipt": "not checked"}
    assert "no errors were found" in done.stderr

    # An auditor with a verified mirror proves the entries too, via 'audit check'.
    world.cli("auditor", "audit", "verify")
    checked = world.cli("auditor", "audit", "check", str(_record(evidence)), "--json")
    assert set(_statuses(checked.stdout).values()) == {"ok"}
    text = world.cli("auditor", "audit", "check", str(_record(evidence)))
    assert "ok          upload receipt: entry" in text.stdout
    assert "evidence.commit by 'prosecutor'" in text.stdout


def test_a_tampered_record_or_file_fails(world: World, pulled: dict[str, Path]) -> None:
    evidence = pulled["tampered.bin"]
    record_path = _record(evidence)
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


def test_a_missing_receipt_is_reported_then_filled_in(world: World,
                                                      pulled: dict[str, Path]) -> None:
    evidence = pulled["drained.bin"]
    record_path = _record(evidence)
    record = json.loads(record_path.read_text())
    kept = record["download"]["receipt"]
    record["download"]["receipt"] = None  # what a pull during a server drain leaves
    record_path.write_text(json.dumps(record))

    missing = world.cli("coordinator", "custody", "verify", str(record_path), "--json",
                        check=False)
    assert missing.returncode == 1
    assert _statuses(missing.stdout)["download receipt"] == "missing"
    assert "exchange custody complete" in missing.stderr

    completed = world.cli("coordinator", "custody", "complete", str(record_path), "--json")
    assert json.loads(completed.stdout)["completed"] == [
        {"record": str(record_path), "parts": ["download"]}]
    assert json.loads(record_path.read_text())["download"]["receipt"] is not None
    assert world.cli("coordinator", "custody", "verify", str(record_path)).returncode == 0
    assert kept is not None


def test_any_later_command_completes_records_noted_as_pending(
    world: World, pulled: dict[str, Path],
) -> None:
    record_path = _record(pulled["later.bin"])
    record = json.loads(record_path.read_text())
    record["upload"]["receipt"] = None
    record_path.write_text(json.dumps(record))
    (state,) = world.state_dir("coordinator").glob("*/coordinator")
    (state / "custody_pending.json").write_text(json.dumps({"paths": [str(record_path)]}))

    listed = world.cli("coordinator", "case", "list")
    assert "completed custody records that were missing a receipt" in listed.stderr
    assert json.loads(record_path.read_text())["upload"]["receipt"] is not None
    assert json.loads((state / "custody_pending.json").read_text()) == {"paths": []}


def test_the_case_uco_export_passes_the_case_projects_validator(
    world: World, pulled: dict[str, Path], tmp_path: Path,
) -> None:
    record_path = _record(pulled["good.bin"])
    record = json.loads(record_path.read_text())
    out = tmp_path / "good.case.jsonld"
    world.cli("coordinator", "custody", "export", str(record_path), "--format", "case-uco",
              "-o", str(out))
    document = json.loads(out.read_text())
    assert export_case_uco(read_record(record_path)) == document  # same identifiers each time
    nodes = document["@graph"]
    kinds = [n["@type"] for n in nodes]
    assert kinds.count("case-investigation:InvestigativeAction") == 2
    assert kinds.count("case-investigation:ProvenanceRecord") == 2
    digests = {n["uco-types:hashValue"]["@value"] for n in nodes
               if n["@type"] == "uco-types:Hash"}
    assert digests == {record["hashes"]["plaintext_sha256"],
                       record["hashes"]["ciphertext_sha256"]}
    payloads = {n.get("uco-observable:dataPayload") for n in nodes}
    assert record["upload"]["receipt"] in payloads and record["download"]["receipt"] in payloads
    # The CASE project's own validator (case-utils, SHACL over the bundled CASE 1.x / UCO
    # 1.x ontologies; it needs no network).
    validator = Path(sys.executable).parent / "case_validate"
    done = subprocess.run([str(validator), str(out)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Conforms: True" in done.stdout
