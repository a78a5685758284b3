"""Transcripts of ``exchange keygen`` and ``exchange key show``."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

from exchange.crypto.keys import parse_bundle
from exchange.crypto.keystore import open_keystore, read_public_bundle
from tests.cli.conftest import Run, only_file, stderr_lines

FAST = ("--test-kdf-params", "1:64:1")
ENV = {"EXCHANGE_PASSPHRASE": "a long keystore passphrase",
       "EXCHANGE_TEST_WEAK_KDF": "1"}  # FAST keystores are below keygen's default cost
FINGERPRINT = r"(?:[A-Z2-7]{4}-){7}[A-Z2-7]{4}"


def test_keygen_keystore_bundle_and_show(run: Run, tmp_path: Path) -> None:
    result = run("keygen", "--id", "alice.fr", "--name", "Alice Martin", "-o", "alice.ks",
                 "--bundle-out", "alice.json", *FAST, env=ENV)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b""
    err = result.stderr.decode()
    printed = re.search(rf"participant 'alice.fr' fingerprint: ({FINGERPRINT})", err)
    assert printed, err
    assert "exchange: warning: keep this keystore and its passphrase safe" in err
    assert "lost" in err

    keystore = (tmp_path / "alice.ks").read_bytes()
    assert stat.S_IMODE((tmp_path / "alice.ks").stat().st_mode) == 0o600
    identity = open_keystore(keystore, ENV["EXCHANGE_PASSPHRASE"])
    bundle = parse_bundle((tmp_path / "alice.json").read_bytes())
    assert identity.public_bundle() == bundle == read_public_bundle(keystore)
    assert bundle.fingerprint == printed.group(1)
    assert bundle.display_name == "Alice Martin"

    for path in ("alice.ks", "alice.json"):
        shown = run("key", "show", path)
        assert shown.returncode == 0, shown.stderr
        text = shown.stdout.decode()
        assert re.search(rf"^fingerprint: +{bundle.fingerprint}$", text, re.M)
        assert f"age recipient: {bundle.age_recipient}" in text
        as_json = run("key", "show", "--json", path)
        assert parse_bundle(as_json.stdout) == bundle
    from_stdin = run("key", "show", "--json", "-", input=keystore)
    assert parse_bundle(from_stdin.stdout) == bundle


def test_keystore_decrypts_age_files_as_identity(run: Run, tmp_path: Path) -> None:
    assert run("keygen", "--id", "bob", "-o", "bob.ks", "--pq", *FAST, env=ENV).returncode == 0
    bundle = read_public_bundle((tmp_path / "bob.ks").read_bytes())
    assert bundle.pq_recipient is not None
    for recipient in (bundle.age_recipient, bundle.pq_recipient):
        enc = run("age", "encrypt", "-r", recipient, input=b"for bob")
        dec = run("age", "decrypt", "-i", "bob.ks", input=enc.stdout, env=ENV)
        assert (dec.returncode, dec.stdout) == (0, b"for bob"), dec.stderr
    wrong = run("age", "decrypt", "-i", "bob.ks", input=enc.stdout,
                env={**ENV, "EXCHANGE_PASSPHRASE": "wrong"})
    assert wrong.returncode == 4
    assert stderr_lines(wrong) == ["exchange: error: wrong passphrase for this keystore"]


def test_keygen_passphrase_file_and_stdout(run: Run, tmp_path: Path) -> None:
    (tmp_path / "pass.txt").write_text("from a file, long enough\nignored second line\n")
    result = run("keygen", "--id", "carol", "--passphrase-file", "pass.txt", *FAST)
    assert result.returncode == 0, result.stderr
    assert open_keystore(result.stdout, "from a file, long enough").id == "carol"


def test_keygen_refuses_existing_output(run: Run, tmp_path: Path) -> None:
    (tmp_path / "ks").write_bytes(b"keep me")
    result = run("keygen", "--id", "dave", "-o", "ks", *FAST, env=ENV)
    assert result.returncode == 1
    assert stderr_lines(result)[0] == "exchange: error: output file 'ks' already exists"
    assert (tmp_path / "ks").read_bytes() == b"keep me"
    assert only_file(tmp_path) == ["ks"]


def test_keygen_usage_errors(run: Run, tmp_path: Path) -> None:
    bad_id = run("keygen", "--id", "Not Valid", *FAST, env=ENV)
    assert bad_id.returncode == 2
    assert stderr_lines(bad_id)[0].startswith("exchange: error: participant id 'Not Valid'")
    missing = run("keygen", *FAST, env=ENV)
    assert missing.returncode == 2
    assert "--id" in stderr_lines(missing)[0]
    no_tty = run("keygen", "--id", "erin", *FAST)
    assert no_tty.returncode == 2
    assert stderr_lines(no_tty)[1] == (
        "exchange: hint: set EXCHANGE_PASSPHRASE or use a passphrase file"
    )
    empty = run("keygen", "--id", "erin", *FAST, env={"EXCHANGE_PASSPHRASE": ""})
    assert empty.returncode == 2
    assert only_file(tmp_path) == []


def test_show_rejects_other_files(run: Run, tmp_path: Path) -> None:
    (tmp_path / "x.json").write_text(json.dumps({"format": "exchange-bundle/v1"}))
    result = run("key", "show", "x.json")
    assert result.returncode == 1
    assert stderr_lines(result) == [
        "exchange: error: 'x.json' is neither a keystore nor a valid bundle: "
        "bundle is missing the field 'id'"
    ]
    missing = run("key", "show", "nope.json")
    assert missing.returncode == 1
    assert stderr_lines(missing) == [
        "exchange: error: cannot read 'nope.json': no such file or directory"
    ]


def test_show_damaged_keystore_is_a_key_problem(run: Run, tmp_path: Path) -> None:
    assert run("keygen", "--id", "fay", "-o", "fay.ks", *FAST, env=ENV).returncode == 0
    data = (tmp_path / "fay.ks").read_bytes()
    (tmp_path / "cut.ks").write_bytes(data[: len(data) // 2])
    result = run("key", "show", "cut.ks")
    assert result.returncode == 4
    assert "truncated or damaged" in stderr_lines(result)[0]


def test_help_ends_with_examples(run: Run) -> None:
    for args in (["keygen"], ["key"], ["key", "show"]):
        result = run(*args, "--help")
        assert result.returncode == 0
        text = result.stdout.decode()
        assert "--test-kdf-params" not in text
        assert "4    authentication or key problem" in text
        assert text.rstrip().splitlines()[-1].startswith("  exchange ")


def test_keygen_refuses_a_short_passphrase_unless_insisted(run: Run) -> None:
    short = {"EXCHANGE_PASSPHRASE": "hunter2"}
    refused = run("keygen", "--id", "gus", "-o", "gus.ks", *FAST, env=short)
    assert refused.returncode == 2
    assert "the passphrase has 7 characters; at least 12" in refused.stderr.decode()
    assert "--allow-weak-passphrase" in refused.stderr.decode()
    insisted = run("keygen", "--id", "gus", "-o", "gus.ks", "--allow-weak-passphrase", *FAST,
                   env=short)
    assert insisted.returncode == 0, insisted.stderr
    assert "exchange: warning: the passphrase has 7 characters" in insisted.stderr.decode()


def test_keygen_passphrase_from_a_command(run: Run, tmp_path: Path) -> None:
    (tmp_path / "secret.txt").write_text("a passphrase from a password manager\n")
    made = run("keygen", "--id", "hal", *FAST,
               env={"EXCHANGE_PASSPHRASE_COMMAND": "cat secret.txt"})
    assert made.returncode == 0, made.stderr
    assert open_keystore(made.stdout, "a passphrase from a password manager").id == "hal"
    failing = run("keygen", "--id", "hal", *FAST, env={"EXCHANGE_PASSPHRASE_COMMAND": "false"})
    assert failing.returncode == 4
    assert "the passphrase command 'false' failed with status 1" in failing.stderr.decode()


def test_weak_or_readable_keystores_are_refused_and_key_upgrade_fixes_both(
    run: Run, tmp_path: Path
) -> None:
    strict = {"EXCHANGE_PASSPHRASE": ENV["EXCHANGE_PASSPHRASE"]}  # no test-only weak-KDF hook
    assert run("keygen", "--id", "gus", "-o", "gus.ks", *FAST, env=ENV).returncode == 0
    bundle = read_public_bundle((tmp_path / "gus.ks").read_bytes())
    enc = run("age", "encrypt", "-r", bundle.age_recipient, input=b"for gus")

    # Cheap Argon2 parameters: refused before any passphrase is asked for, with the way out.
    weak = run("age", "decrypt", "-i", "gus.ks", input=enc.stdout, env=strict)
    assert weak.returncode == 4, weak.stderr
    lines = stderr_lines(weak)
    assert "below what keygen writes" in lines[0]
    assert lines[1] == "exchange: hint: re-encrypt it with current parameters: " \
                       "exchange key upgrade gus.ks"
    client = run("case", "list", "--url", "http://127.0.0.1:9", "--keystore", "gus.ks",
                 env=strict)
    assert client.returncode == 4 and "exchange key upgrade gus.ks" in client.stderr.decode()

    # Readable by others: refused unless explicitly allowed (then only a warning).
    (tmp_path / "gus.ks").chmod(0o644)
    loose = run("age", "decrypt", "-i", "gus.ks", input=enc.stdout, env=ENV)
    assert loose.returncode == 4
    assert "world-readable" in loose.stderr.decode() and "--allow-insecure-keystore" in \
        loose.stderr.decode()
    allowed = run("age", "decrypt", "-i", "gus.ks", "--allow-insecure-keystore",
                  input=enc.stdout, env=ENV)
    assert (allowed.returncode, allowed.stdout) == (0, b"for gus"), allowed.stderr
    assert "warning: secret key file 'gus.ks' is world-readable" in allowed.stderr.decode()
    by_env = run("age", "decrypt", "-i", "gus.ks", input=enc.stdout,
                 env={**ENV, "EXCHANGE_ALLOW_INSECURE_KEYSTORE": "1"})
    assert by_env.returncode == 0, by_env.stderr

    # A wrong passphrase changes nothing; the right one re-encrypts at full cost, mode 0600.
    before = (tmp_path / "gus.ks").read_bytes()
    wrong = run("key", "upgrade", "gus.ks", env={"EXCHANGE_PASSPHRASE": "wrong"})
    assert wrong.returncode == 4 and (tmp_path / "gus.ks").read_bytes() == before
    upgraded = run("key", "upgrade", "gus.ks", env=strict)
    assert upgraded.returncode == 0, upgraded.stderr
    assert stat.S_IMODE((tmp_path / "gus.ks").stat().st_mode) == 0o600
    kdf = json.loads((tmp_path / "gus.ks").read_text())["kdf"]
    assert (kdf["time_cost"], kdf["memory_kib"]) == (3, 256 * 1024)
    assert read_public_bundle((tmp_path / "gus.ks").read_bytes()) == bundle  # same identity
    opened = run("age", "decrypt", "-i", "gus.ks", input=enc.stdout, env=strict)
    assert (opened.returncode, opened.stdout) == (0, b"for gus"), opened.stderr
