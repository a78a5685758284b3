"""Every ``--json`` output validates against its documented JSON Schema (docs/json/).

Real outputs from a real server: one story exercises each command with
``--json`` and checks the document against ``docs/json/<name>.schema.json``;
another test checks that every parser offering ``--json`` has a schema.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema_rs

from exchange.cli.main import build_parser
from exchange.crypto.keys import ParticipantIdentity
from tests.e2e.conftest import World

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "json"
#: Command (as typed) -> schema name. ``key show --json`` prints a public bundle, a file
#: format of its own (the same bytes as ``--bundle-out``), not a report.
DOCUMENTED = {
    "upload": "upload", "files": "files", "pull": "pull", "enrol": "enrol",
    "case create": "case", "case show": "case", "case list": "case-list",
    "case add-member": "case-member", "case remove-member": "case-member",
    "agent status": "agent-status", "custody verify": "custody-verify",
    "custody complete": "custody-complete", "audit verify": "audit-verify",
    "audit report": "audit-report", "audit check": "audit-check",
    "audit compare": "audit-compare", "key passwd": "key-passwd",
    "participant list": "participant-list", "participant show": "participant-show",
    "server backup": "server-backup", "server check": "server-check",
    "server migrate": "server-migrate", "server restore": "server-restore",
    "trust show": "trust-show", "case policy": "case-policy", "case erase": "case-erase",
    "server sweep": "server-sweep", "server log-key show": "server-log-key-show",
    "server log-key rotate": "server-log-key-rotate", "server move": "server-move",
}
NOT_REPORTS = {"key show"}


def _valid(name: str, text: str) -> dict[str, Any]:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    document: dict[str, Any] = json.loads(text)
    jsonschema_rs.validator_for(schema).validate(document)
    return document


def _json_commands() -> set[str]:
    found: set[str] = set()

    def walk(parser: Any, prefix: str) -> None:
        for action in parser._actions:
            if "--json" in action.option_strings:
                found.add(prefix.strip())
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict) and action.dest != "help":
                for name, sub in choices.items():
                    if name != "enroll":  # an alias of enrol
                        walk(sub, f"{prefix} {name}")

    walk(build_parser(), "")
    return found


def test_every_json_output_is_documented() -> None:
    assert _json_commands() == set(DOCUMENTED) | NOT_REPORTS
    for name in set(DOCUMENTED.values()):
        schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
        assert schema["properties"]["schema"] == {"const": 1}
    table = (SCHEMAS.parent / "json.md").read_text()
    # One more shape under commands already listed: files/audit report --deliveries.
    assert "`exchange files CASE --deliveries --json`" in table
    assert "json/deliveries.schema.json" in table
    for command, name in DOCUMENTED.items():
        assert f"`exchange {command}" in table and f"json/{name}.schema.json" in table


def test_real_outputs_validate_against_their_schemas(world: World, tmp_path: Path) -> None:
    created = _valid("case", world.cli("prosecutor", "case", "create", "--title",
                                       "Operation Schema", "--json").stdout)
    case_id = created["case_id"]
    _valid("case-member", world.cli("prosecutor", "case", "add-member", case_id, "coordinator",
                                    "--json").stdout)
    folder = tmp_path / "box"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.txt").write_text("a\n")
    (folder / "b.bin").write_bytes(os.urandom(1000))
    _valid("upload", world.cli("prosecutor", "upload", case_id, str(folder), "--json").stdout)
    _valid("files", world.cli("coordinator", "files", case_id, "--json").stdout)
    dest = tmp_path / "dest"
    _valid("pull", world.cli("coordinator", "pull", case_id, "--dest", str(dest),
                             "--json").stdout)
    _valid("deliveries", world.cli("coordinator", "files", case_id, "--deliveries",
                                   "--json").stdout)
    listed = _valid("case-list", world.cli("prosecutor", "case", "list", "--json").stdout)
    ours = next(c for c in listed["cases"] if c["case_id"] == case_id)
    assert {m["participant"] for m in ours["members"]} == {"prosecutor", "coordinator"}
    assert [e["epoch"] for e in ours["epochs"]] == [1]
    shown = _valid("case", world.cli("prosecutor", "case", "show", case_id, "--json").stdout)
    assert shown["created_at"].endswith("Z")
    _valid("custody-verify", world.cli("coordinator", "custody", "verify", str(dest),
                                       "--json").stdout)
    _valid("custody-complete", world.cli("coordinator", "custody", "complete", str(dest),
                                         "--json").stdout)
    _valid("agent-status", world.cli("coordinator", "agent", "status", "--json",
                                     check=False).stdout)
    _valid("case-member", world.cli("prosecutor", "case", "remove-member", case_id,
                                    "coordinator", "--json").stdout)

    bundle = tmp_path / "newcomer.bundle.json"
    bundle.write_bytes(ParticipantIdentity.generate("newcomer-json").bundle_document())
    _valid("enrol", world.cli("admin", "enrol", str(bundle), "--role", "coordinator",
                              "--organisation", "Eurojust", "--json").stdout)

    verified = _valid("audit-verify", world.cli("auditor", "audit", "verify", "--json").stdout)
    assert verified["ok"] is True
    report = _valid("audit-report", world.cli("auditor", "audit", "report", "--json",
                                              "--case", case_id).stdout)
    _valid("deliveries", world.cli("auditor", "audit", "report", "--deliveries", "--case",
                                   case_id, "--json").stdout)
    first = report["entries"][0]["index"]
    receipt = tmp_path / "entry.receipt"
    world.cli("auditor", "audit", "receipt", str(first), "-o", str(receipt))
    _valid("audit-check", world.cli("auditor", "audit", "check", str(receipt),
                                    "--json").stdout)
