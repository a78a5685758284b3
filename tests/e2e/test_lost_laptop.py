"""The README's lost-laptop procedure, step by step, against a real server with the real CLI.

A prosecutor's keystore is stolen: the administrator suspends it, records the new keys from
the participant's new bundle, reinstates them; a prosecutor of the case re-keys it. The
stolen key is refused (and the refusals logged), the old evidence stays readable with the
new keys, new evidence is readable with the new keys only, and the log verifies.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sqlite3
from pathlib import Path

from exchange.crypto.keys import ParticipantIdentity
from tests.e2e.conftest import PASSPHRASE, World, new_case
from tests.server_harness import write_test_keystore
from tests.support import ROOT

WHO = {"administrator": "admin", "participant": "prosecutor2",
       "a prosecutor of each case": "prosecutor"}


def readme_steps() -> list[tuple[list[str], str]]:
    """Return the README's lost-keys commands with who runs each."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("### Lost keys"):text.index("### Moving a server")]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    steps = []
    for line in block.group(1).splitlines():
        command, _, comment = line.partition("#")
        who = comment.strip().split(",")[0]
        steps.append((shlex.split(command), WHO[who]))
    return steps


def test_the_lost_laptop_procedure(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, "Operation Stolen Laptop", "prosecutor2")
    before = tmp_path / "before.bin"
    before.write_bytes(os.urandom(50_000))
    world.cli("prosecutor", "upload", case_id, str(before))
    old_keystore = world.base / "keys" / "prosecutor2.keystore"
    stolen = tmp_path / "stolen.keystore"
    stolen.write_bytes(old_keystore.read_bytes())
    new_identity = ParticipantIdentity.generate("prosecutor2")

    steps = readme_steps()
    assert [s[0][:3] for s in steps] == [
        ["exchange", "participant", "suspend"], ["exchange", "keygen", "--id"],
        ["exchange", "participant", "key-change"], ["exchange", "participant", "reinstate"],
        ["exchange", "case", "rekey"], ["exchange", "pull", "case-0123456789abcdef01234567"]]
    for words, who in steps:
        named = [a.replace("prosecutor-nl-01", "prosecutor2")
                 .replace("case-0123456789abcdef01234567", case_id) for a in words[1:]]
        if named[0] == "keygen":
            # the participant's new machine: a new keystore and bundle (cheap Argon2 here)
            old_keystore.unlink()  # our test file, copied to 'stolen' above
            write_test_keystore(old_keystore, new_identity, PASSPHRASE)
            (world.base / "new.bundle.json").write_bytes(new_identity.bundle_document())
            continue
        argv = [str(world.base / a) if a.endswith(".bundle.json") else a for a in named]
        if argv[0] == "pull":
            argv[argv.index("--dest") + 1] = str(tmp_path / "evidence")
        world.cli(who, *argv)
        if argv[:2] == ["participant", "suspend"]:
            refused = world.cli("prosecutor2", "case", "list", check=False)  # the thief
            assert refused.returncode == 4 and "suspended" in refused.stderr, refused.stderr
    assert (tmp_path / "evidence" / case_id / "before.bin").read_bytes() == before.read_bytes()

    # The stolen key is refused, and so logged; new evidence reaches the new keys only.
    env_stolen = {"EXCHANGE_KEYSTORE": str(stolen)}
    thief = world.cli("prosecutor2", "case", "list", check=False, extra_env=env_stolen)
    assert thief.returncode == 4, thief.stderr
    after = tmp_path / "after.bin"
    after.write_bytes(os.urandom(40_000))
    world.cli("prosecutor", "upload", case_id, str(after))
    world.cli("prosecutor2", "pull", case_id, "--dest", str(tmp_path / "evidence"))
    assert (tmp_path / "evidence" / case_id / "after.bin").read_bytes() == after.read_bytes()
    with sqlite3.connect(world.deployment.data_dir / "exchange.sqlite3") as db:
        entries = [json.loads(row[0]) for row in db.execute("SELECT entry FROM audit_entries")]
    refusals = [e for e in entries if e["actor"] == "prosecutor2" and e["outcome"] == "denied"]
    assert "participant-suspended" in {e["reason"] for e in refusals}
    verified = world.cli("auditor", "audit", "verify", "--state", str(tmp_path / "mirror"),
                         check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
