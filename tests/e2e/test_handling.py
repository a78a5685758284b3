"""Handling codes (H0-H3) and notes: chosen at upload, sealed and signed, shown on every read.

The code lives inside the signed, sealed manifest, so the server can neither
read it nor change it: a manifest re-sealed with another code (even by someone
who knows the rest of it, as a leaked custody record would tell) no longer
verifies and the file is refused.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

from exchange.crypto.age import encrypt, parse_recipient
from exchange.crypto.jcs import canonicalize
from tests.e2e.conftest import World, new_case

NOTE = "ask the Dutch prosecutor before sharing; ref 2026/17"


def test_handling_code_round_trips_and_is_shown_on_files_pull_and_custody(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Handling", "coordinator")
    secret = tmp_path / "intercept.wav"
    secret.write_bytes(b"RIFF" + bytes(5000))
    plain = tmp_path / "plain.txt"
    plain.write_text("no code\n")
    up = json.loads(world.cli("prosecutor", "upload", case_id, str(secret), "--handling", "H2",
                              "--handling-note", NOTE, "--json").stdout)["uploaded"]
    assert (up[0]["handling"], up[0]["handling_note"]) == ("H2", NOTE)
    world.cli("prosecutor", "upload", case_id, str(plain))

    listed = json.loads(world.cli("coordinator", "files", case_id, "--json").stdout)["evidence"]
    by_name = {e["file_name"]: e for e in listed}
    assert (by_name["intercept.wav"]["handling"], by_name["intercept.wav"]["handling_note"]) \
        == ("H2", NOTE)
    assert (by_name["plain.txt"]["handling"], by_name["plain.txt"]["handling_note"]) == ("", "")
    text = world.cli("coordinator", "files", case_id).stdout
    assert f"HANDLING H2 (no dissemination without the provider's permission): {NOTE}" in text

    dest = tmp_path / "dest"
    pulled = world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    assert "intercept.wav: HANDLING H2" in pulled.stderr and NOTE in pulled.stderr
    assert "plain.txt: HANDLING" not in pulled.stderr
    custody = json.loads((dest / case_id / "intercept.wav.custody.json").read_text())
    assert custody["handling"] == {"code": "H2", "note": NOTE}
    assert custody["manifest"]["handling"] == "H2"


def test_bad_handling_code_is_a_usage_error_before_anything_is_sent(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Bad Code")
    item = tmp_path / "x.bin"
    item.write_bytes(b"x")
    done = world.cli("prosecutor", "upload", case_id, str(item), "--handling", "H9", check=False)
    assert done.returncode == 2, done.stderr
    done = world.cli("prosecutor", "upload", case_id, str(item), "--handling-note", "a\x1bb",
                     check=False)
    assert done.returncode == 2 and "control character" in done.stderr, done.stderr
    assert json.loads(world.cli("prosecutor", "files", case_id, "--json").stdout)["evidence"] == []


def test_the_server_cannot_lower_a_handling_code(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, "Operation Tamper Code", "coordinator")
    item = tmp_path / "ledger.xlsx"
    item.write_bytes(b"PK" + bytes(3000))
    evidence_id = world.cli("prosecutor", "upload", case_id, str(item), "--handling", "H1",
                            "--handling-note", NOTE).stdout.strip()
    dest = tmp_path / "first"
    world.cli("prosecutor", "pull", case_id, "--dest", str(dest))
    custody = json.loads((dest / case_id / "ledger.xlsx.custody.json").read_text())
    shown = json.loads(world.cli("prosecutor", "case", "show", case_id, "--json").stdout)
    recipient = parse_recipient(shown["epochs"][-1]["recipient"])
    # The worst case: the server knows the whole manifest and the case's public key.
    lowered = {k: v for k, v in custody["manifest"].items() if k not in ("handling",
                                                                         "handling_note")}
    forged = encrypt(canonicalize({"format": "exchange-signed-manifest/v1",
                                   "manifest": lowered, "signature": custody["signature"]}),
                     [recipient])
    with contextlib.closing(sqlite3.connect(world.deployment.data_dir / "exchange.sqlite3")) \
            as db, db:
        changed = db.execute("UPDATE evidence SET sealed_manifest = ? WHERE id = ?",
                             (forged, evidence_id)).rowcount
    assert changed == 1
    listed = world.cli("coordinator", "files", case_id, check=False)
    assert listed.returncode == 3, listed.stdout + listed.stderr
    assert "signature" in listed.stderr
    pulled = world.cli("coordinator", "pull", case_id, "--dest", str(tmp_path / "second"),
                       check=False)
    assert pulled.returncode == 3, pulled.stdout + pulled.stderr
    assert not (tmp_path / "second" / case_id / "ledger.xlsx").exists()


def test_a_local_policy_refuses_coded_files_in_a_shared_destination_only_when_set(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Policy", "coordinator")
    coded, plain = tmp_path / "coded.txt", tmp_path / "open.txt"
    coded.write_text("restricted\n")
    plain.write_text("free\n")
    world.cli("prosecutor", "upload", case_id, str(coded), "--handling", "H0")
    world.cli("prosecutor", "upload", case_id, str(plain))
    share = tmp_path / "court-share"
    policy = {"EXCHANGE_HANDLING_SHARED_DEST": str(share)}
    refused = world.cli("coordinator", "pull", case_id, "--dest", str(share / "in"),
                        check=False, extra_env=policy)
    assert refused.returncode == 1, refused.stderr
    assert "handling code H0" in refused.stderr
    assert "EXCHANGE_HANDLING_SHARED_DEST" in refused.stderr
    assert (share / "in" / case_id / "open.txt").read_text() == "free\n"
    assert not (share / "in" / case_id / "coded.txt").exists()
    assert not list((share / "in" / case_id).glob("coded.txt*"))
    # Another destination under the same policy, and the same one without a policy: pulled.
    world.cli("coordinator", "pull", case_id, "--dest", str(tmp_path / "desk"), extra_env=policy)
    assert (tmp_path / "desk" / case_id / "coded.txt").read_text() == "restricted\n"
    world.cli("prosecutor", "pull", case_id, "--dest", str(share / "in"))
    assert (share / "in" / case_id / "coded.txt").read_text() == "restricted\n"
