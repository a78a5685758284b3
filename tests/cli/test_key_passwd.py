"""Transcripts of ``exchange key passwd``: new passphrase, same identity, current Argon2 cost."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from exchange.crypto.keystore import keystore_params, open_keystore
from tests.cli.conftest import Run, stderr_lines

OLD = "the old keystore passphrase"
NEW = "a brand new keystore passphrase"


def test_passwd_changes_passphrase_and_upgrades_params(run: Run, tmp_path: Path) -> None:
    made = run("keygen", "--id", "alice.fr", "-o", "alice.ks", "--test-kdf-params", "1:64:1",
               env={"EXCHANGE_PASSPHRASE": OLD})
    assert made.returncode == 0, made.stderr
    before = (tmp_path / "alice.ks").read_bytes()
    identity = open_keystore(before, OLD)
    (tmp_path / "new.txt").write_text(NEW + "\n")

    changed = run("key", "passwd", "alice.ks", "--new-passphrase-file", "new.txt",
                  "--test-kdf-params", "2:128:1", "--json", env={"EXCHANGE_PASSPHRASE": OLD})
    assert changed.returncode == 0, changed.stderr
    report = json.loads(changed.stdout)
    assert report["old_kdf"] == {"time_cost": 1, "memory_kib": 64, "parallelism": 1}
    assert report["new_kdf"] == {"time_cost": 2, "memory_kib": 128, "parallelism": 1}
    after = (tmp_path / "alice.ks").read_bytes()
    assert stat.S_IMODE((tmp_path / "alice.ks").stat().st_mode) == 0o600
    reopened = open_keystore(after, NEW)
    assert reopened.public_bundle() == identity.public_bundle()
    assert bytes(reopened.signing_key) == bytes(identity.signing_key)
    assert keystore_params(after).time_cost == 2
    wrong_old = run("key", "show", "alice.ks")  # public part still readable
    assert wrong_old.returncode == 0


def test_passwd_defaults_to_current_params(run: Run, tmp_path: Path) -> None:
    run("keygen", "--id", "bob.de", "-o", "bob.ks", "--test-kdf-params", "1:64:1",
        env={"EXCHANGE_PASSPHRASE": OLD})
    changed = run("key", "passwd", "bob.ks",
                  env={"EXCHANGE_PASSPHRASE": OLD, "EXCHANGE_NEW_PASSPHRASE": NEW})
    assert changed.returncode == 0, changed.stderr
    params = keystore_params((tmp_path / "bob.ks").read_bytes())
    assert (params.time_cost, params.memory_kib, params.parallelism) == (3, 256 * 1024, 4)
    assert "argon2id t=3 m=262144 KiB p=4 (was t=1 m=64 KiB p=1)" in changed.stderr.decode()


def test_passwd_wrong_passphrase_leaves_file_alone(run: Run, tmp_path: Path) -> None:
    run("keygen", "--id", "carol.nl", "-o", "carol.ks", "--test-kdf-params", "1:64:1",
        env={"EXCHANGE_PASSPHRASE": OLD})
    before = (tmp_path / "carol.ks").read_bytes()
    refused = run("key", "passwd", "carol.ks", "--test-kdf-params", "1:64:1",
                  env={"EXCHANGE_PASSPHRASE": "not it", "EXCHANGE_NEW_PASSPHRASE": NEW})
    assert refused.returncode == 4
    assert "wrong passphrase" in stderr_lines(refused)[0]
    assert (tmp_path / "carol.ks").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["carol.ks"]


def test_passwd_help_has_example(run: Run) -> None:
    result = run("key", "passwd", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "--test-kdf-params" not in text
    assert text.rstrip().splitlines()[-1].startswith("  exchange key passwd ")
