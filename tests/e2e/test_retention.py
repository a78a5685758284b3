"""Retention and verifiable erasure (issue 19 part 3), on SQLite and PostgreSQL.

A policy "until every intended recipient has pulled" erases an item exactly
when the last recipient's complete download is logged (not after the first),
with an ``evidence.erase`` entry the verifier accepts; a legal hold blocks the
sweep and the owner's erase-now alike; a pull of an erased item says so with
its own exit status; ``server check`` does not miss the erased blob.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.verify import verify_log
from tests.e2e.conftest import PASSPHRASE, World, new_case
from tests.server_harness import ORIGIN, deployed, read_log, run, write_test_keystore

ERASED_EXIT = 5


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def both(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A running server with the cast's keystores, once per database."""
    base = tmp_path_factory.mktemp(f"retention-{request.param}")
    with deployed(base, request.param) as deployment:
        keys = base / "keys"
        keys.mkdir()
        for name, identity in deployment.cast.items():
            write_test_keystore(keys / f"{name}.keystore", identity, PASSPHRASE)
        yield World(deployment=deployment, base=base)


def sweep(world: World) -> list[str]:
    """Run ``exchange server sweep`` once; return the ids it erased."""
    d = world.deployment
    args = ["server", "sweep", "--data-dir", str(d.data_dir), "--json"]
    if d.database_url:
        args += ["--database", d.database_url]
    erased: list[str] = json.loads(world.cli("admin", *args).stdout)["erased"]
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


def test_until_delivered_erases_when_the_last_recipient_pulled(
        both: World, tmp_path: Path) -> None:
    world = both
    case_id = new_case(world, "Operation Retention", "coordinator", "coordinator2")
    world.cli("prosecutor", "case", "policy", case_id, "--until-delivered")
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
    d = world.deployment
    check = world.cli("admin", "server", "check", "--data-dir", str(d.data_dir),
                      *(["--database", d.database_url] if d.database_url else []))
    assert "no errors were found" in check.stderr


def test_legal_hold_blocks_the_sweep_and_erase_now(both: World, tmp_path: Path) -> None:
    world = both
    case_id = new_case(world, "Operation Hold", "coordinator")
    world.cli("prosecutor", "case", "policy", case_id, "--until-delivered")
    world.cli("prosecutor", "case", "policy", case_id, "--legal-hold", "on")
    item = tmp_path / "ledger.csv"
    item.write_text("a,b\n1,2\n")
    evidence_id = upload(world, case_id, item)
    world.cli("coordinator", "pull", case_id, "--dest", str(tmp_path / "c"))
    assert evidence_id not in sweep(world)
    refused = world.cli("prosecutor", "case", "erase", case_id, check=False)
    assert refused.returncode == 1 and "legal-hold" in refused.stderr, refused.stderr
    world.cli("prosecutor", "case", "policy", case_id, "--legal-hold", "off")
    assert evidence_id in sweep(world)
    _, report = log_entries(world)
    assert report.ok, [str(f) for f in report.findings]
