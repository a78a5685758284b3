"""Transcripts of ``exchange age keygen|encrypt|decrypt``, including interop with age(1)."""

from __future__ import annotations

import os
import pty
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Run, only_file, stderr_lines
from tests.support import ROOT, age_cli

PASS_ENV = {"EXCHANGE_AGE_PASSPHRASE": "tr0ub4dor & 3"}


def keygen(run: Run, tmp_path: Path, name: str = "key.txt", *extra: str) -> str:
    result = run("age", "keygen", "-o", name, *extra)
    assert result.returncode == 0, result.stderr
    match = re.fullmatch(r"Public key: (age1\S+)\n", result.stderr.decode())
    assert match, result.stderr
    return match.group(1)


def test_keygen_writes_identity_file_0600(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path)
    path = tmp_path / "key.txt"
    lines = path.read_text().splitlines()
    assert re.fullmatch(r"# created: \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", lines[0])
    assert lines[1] == f"# public key: {recipient}"
    assert lines[2].startswith("AGE-SECRET-KEY-1") and len(lines) == 3
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keygen_never_overwrites(run: Run, tmp_path: Path) -> None:
    keygen(run, tmp_path)
    before = (tmp_path / "key.txt").read_bytes()
    result = run("age", "keygen", "-o", "key.txt")
    assert result.returncode == 1
    assert stderr_lines(result)[0] == "exchange: error: output file 'key.txt' already exists"
    assert (tmp_path / "key.txt").read_bytes() == before
    assert only_file(tmp_path) == ["key.txt"]


def test_keygen_to_stdout(run: Run) -> None:
    result = run("age", "keygen")
    assert result.returncode == 0
    assert result.stdout.decode().splitlines()[2].startswith("AGE-SECRET-KEY-1")
    assert result.stderr.decode().startswith("Public key: age1")


@pytest.mark.parametrize("size", [0, 1, 65536, 200_000])
def test_encrypt_decrypt_round_trip(run: Run, tmp_path: Path, size: int) -> None:
    recipient = keygen(run, tmp_path)
    data = os.urandom(size)
    (tmp_path / "in.bin").write_bytes(data)
    enc = run("age", "encrypt", "-r", recipient, "-o", "out.age", "in.bin")
    assert enc.returncode == 0 and enc.stdout == b"" and enc.stderr == b""
    dec = run("age", "decrypt", "-i", "key.txt", "-o", "back.bin", "out.age")
    assert dec.returncode == 0, dec.stderr
    assert (tmp_path / "back.bin").read_bytes() == data
    assert stat.S_IMODE((tmp_path / "back.bin").stat().st_mode) == 0o600


def test_stdin_stdout_and_armor(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path)
    enc = run("age", "encrypt", "-a", "-r", recipient, input=b"hello\n")
    assert enc.returncode == 0
    assert enc.stdout.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert enc.stdout.endswith(b"-----END AGE ENCRYPTED FILE-----\n")
    dec = run("age", "decrypt", "-i", "key.txt", input=enc.stdout)
    assert (dec.returncode, dec.stdout) == (0, b"hello\n")


def test_recipients_file_and_several_identities(run: Run, tmp_path: Path) -> None:
    first = keygen(run, tmp_path, "a.txt")
    second = keygen(run, tmp_path, "b.txt")
    (tmp_path / "team.txt").write_text(f"# team\n{first}\n\n  {second}  \n")
    enc = run("age", "encrypt", "-R", "team.txt", "-o", "x.age", input=b"data")
    assert enc.returncode == 0, enc.stderr
    for key in ("a.txt", "b.txt"):
        dec = run("age", "decrypt", "-i", key, "x.age")
        assert dec.stdout == b"data"


def test_bad_recipients_file_names_the_line(run: Run, tmp_path: Path) -> None:
    (tmp_path / "team.txt").write_text("# team\nage1notvalid\n")
    result = run("age", "encrypt", "-R", "team.txt", input=b"x")
    assert result.returncode == 1
    assert "recipients file 'team.txt' line 2" in stderr_lines(result)[0]


def test_passphrase_via_environment(run: Run, tmp_path: Path) -> None:
    enc = run("age", "encrypt", "-p", "--scrypt-work-factor", "10", "-o", "p.age",
              input=b"secret notes", env=PASS_ENV)
    assert enc.returncode == 0, enc.stderr
    assert b"scrypt" in (tmp_path / "p.age").read_bytes()[:200]
    # No -p: the header's lone scrypt stanza says a passphrase is needed (as age -d does).
    dec = run("age", "decrypt", "p.age", env=PASS_ENV)
    assert (dec.returncode, dec.stdout) == (0, b"secret notes")
    wrong = run("age", "decrypt", "-o", "out.txt", "p.age",
                env={"EXCHANGE_AGE_PASSPHRASE": "nope"})
    assert wrong.returncode == 4
    assert stderr_lines(wrong) == ["exchange: error: incorrect passphrase"]
    assert not (tmp_path / "out.txt").exists()
    # A file encrypted to keys never asks for a passphrase, and says what is missing.
    recipient = keygen(run, tmp_path)
    assert run("age", "encrypt", "-r", recipient, "-o", "k.age", input=b"x").returncode == 0
    keyed = run("age", "decrypt", "k.age")
    assert keyed.returncode == 4
    assert stderr_lines(keyed)[0] == "exchange: error: no identity matched any of the recipients"


def test_passphrase_prompt_without_terminal_fails_cleanly(run: Run) -> None:
    result = run("age", "encrypt", "-p", input=b"x")
    assert result.returncode == 2
    assert stderr_lines(result) == [
        "exchange: error: no terminal to ask for the passphrase",
        "exchange: hint: set EXCHANGE_AGE_PASSPHRASE or use a passphrase file",
    ]


def _assert_clean_failure(result: subprocess.CompletedProcess[bytes], code: int) -> None:
    assert result.returncode == code, result.stderr
    lines = stderr_lines(result)
    assert lines and lines[0].startswith("exchange: error: ")
    assert all(line.startswith(("exchange: error: ", "exchange: hint: ")) for line in lines)
    assert "Traceback" not in result.stderr.decode()
    assert result.stdout == b""


def test_failures_leave_no_output_file(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path)
    keygen(run, tmp_path, "other.txt")
    data = os.urandom(3 * 65536 + 100)  # several chunks: plaintext is released before the end
    (tmp_path / "in.bin").write_bytes(data)
    assert run("age", "encrypt", "-r", recipient, "-o", "good.age", "in.bin").returncode == 0
    good = (tmp_path / "good.age").read_bytes()
    (tmp_path / "tampered.age").write_bytes(good[:-10] + bytes([good[-10] ^ 1]) + good[-9:])
    (tmp_path / "truncated.age").write_bytes(good[:-65536])
    (tmp_path / "trailing.age").write_bytes(good + b"x")
    (tmp_path / "garbage.age").write_bytes(b"not an age file\n")
    before = only_file(tmp_path)

    cases = [
        (("-i", "other.txt", "good.age"), 4),
        (("-i", "key.txt", "tampered.age"), 3),
        (("-i", "key.txt", "truncated.age"), 3),
        (("-i", "key.txt", "trailing.age"), 3),
        (("-i", "key.txt", "garbage.age"), 1),
        (("-i", "missing.txt", "good.age"), 1),
        (("-i", "key.txt", "missing.age"), 1),
    ]
    for args, code in cases:
        result = run("age", "decrypt", "-o", "out.bin", *args)
        _assert_clean_failure(result, code)
        assert only_file(tmp_path) == before, args  # neither out.bin nor a temp file


def test_failed_decrypt_keeps_an_existing_output_file(run: Run, tmp_path: Path) -> None:
    keygen(run, tmp_path)
    (tmp_path / "out.bin").write_bytes(b"previous")
    result = run("age", "decrypt", "-i", "key.txt", "-o", "out.bin", input=b"junk")
    assert result.returncode == 1
    assert (tmp_path / "out.bin").read_bytes() == b"previous"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("age", "encrypt"), "exchange: error: missing recipients"),
        (("age", "encrypt", "-p", "-r", "age1x"), "exchange: error: invalid recipient"),
        (("age", "encrypt", "-r", "age1bogus"), "exchange: error: invalid recipient"),
        (("age", "frobnicate"), "exchange: error: argument COMMAND: invalid choice"),
        (("age", "encrypt", "--nope"), "exchange: error: unrecognized arguments: --nope"),
    ],
)
def test_usage_errors(run: Run, args: tuple[str, ...], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2, result.stderr
    assert stderr_lines(result)[0].startswith(message)


def test_identity_file_errors_are_key_problems(run: Run, tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_text("# comment\nAGE-SECRET-KEY-1NOPE\n")
    os.chmod(tmp_path / "bad.txt", 0o600)
    result = run("age", "decrypt", "-i", "bad.txt", input=b"x")
    _assert_clean_failure(result, 4)
    assert "AGE-SECRET-KEY-1NOPE" not in result.stderr.decode()


def test_world_readable_identity_file_warns(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path)
    os.chmod(tmp_path / "key.txt", 0o644)
    enc = run("age", "encrypt", "-r", recipient, input=b"x")
    dec = run("age", "decrypt", "-i", "key.txt", input=enc.stdout)
    assert dec.returncode == 0 and dec.stdout == b"x"
    assert "exchange: warning: secret key file 'key.txt' is world-readable" in dec.stderr.decode()


def test_pq_keygen_round_trip(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path, "pq.txt", "--pq")
    assert recipient.startswith("age1pq1")
    assert (tmp_path / "pq.txt").read_text().splitlines()[2].startswith("AGE-SECRET-KEY-PQ-1")
    enc = run("age", "encrypt", "-r", recipient, input=b"post-quantum")
    dec = run("age", "decrypt", "-i", "pq.txt", input=enc.stdout)
    assert (dec.returncode, dec.stdout) == (0, b"post-quantum")


def test_refuses_binary_to_terminal(tmp_path: Path, run: Run) -> None:
    recipient = keygen(run, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["PYTHONPATH"] = str(ROOT)
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "exchange", "age", "encrypt", "-r", recipient],
            input=b"x", stdout=terminal, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
            timeout=60, check=False,
        )
    finally:
        os.close(terminal)
        os.close(controller)
    assert result.returncode == 1
    assert result.stderr.decode().splitlines() == [
        "exchange: error: refusing to output binary to the terminal",
        "exchange: hint: did you mean to use -a/--armor? force with '-o -'",
    ]


def test_help_lists_exit_codes_and_ends_with_an_example(run: Run) -> None:
    for args in ([], ["age"], ["age", "keygen"], ["age", "encrypt"], ["age", "decrypt"]):
        result = run(*args, "--help")
        assert result.returncode == 0
        text = result.stdout.decode()
        assert "3    verification failed" in text and "130  interrupted" in text
        last = text.rstrip().splitlines()[-1]
        assert last.startswith("  ") and " exchange " in f" {last}"


# Interoperability with the reference age CLI (Debian's age 1.1.x).


def test_age_cli_decrypts_our_files(run: Run, tmp_path: Path) -> None:
    age = age_cli()
    recipient = keygen(run, tmp_path)
    data = os.urandom(2 * 65536 + 7)
    (tmp_path / "in.bin").write_bytes(data)
    for armor in ((), ("-a",)):
        enc = run("age", "encrypt", *armor, "-r", recipient, "-o", "x.age", "in.bin")
        assert enc.returncode == 0
        out = subprocess.run([age, "-d", "-i", "key.txt", "x.age"], cwd=tmp_path,
                             capture_output=True, check=True)
        assert out.stdout == data
        (tmp_path / "x.age").unlink()


def test_we_decrypt_age_cli_files_with_age_keygen_identity(run: Run, tmp_path: Path) -> None:
    age = age_cli()
    subprocess.run(["age-keygen", "-o", "k.txt"], cwd=tmp_path, capture_output=True, check=True)
    recipient = subprocess.run(["age-keygen", "-y", "k.txt"], cwd=tmp_path, capture_output=True,
                               check=True).stdout.decode().strip()
    for armor in ([], ["-a"]):
        enc = subprocess.run([age, *armor, "-r", recipient], input=b"from age", capture_output=True,
                             check=True)
        dec = run("age", "decrypt", "-i", "k.txt", input=enc.stdout)
        assert (dec.returncode, dec.stdout) == (0, b"from age")


def test_interrupt_exits_130_and_leaves_no_output(run: Run, tmp_path: Path) -> None:
    recipient = keygen(run, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-m", "exchange", "age", "encrypt", "-r", recipient, "-o", "out.age"],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path,
        start_new_session=True,
    )
    assert proc.stdin is not None and proc.stderr is not None
    proc.stdin.write(os.urandom(3 * 1024 * 1024))  # the temp output file now exists
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not any(p.name.startswith(".out.age.") for p in tmp_path.iterdir()):
        assert time.monotonic() < deadline, "the output temp file never appeared"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130
    assert proc.stderr.read().decode().splitlines() == ["exchange: interrupted"]
    proc.stdin.close()
    proc.stderr.close()
    assert only_file(tmp_path) == ["key.txt"]


def test_decrypt_to_a_device_writes_in_place_and_a_directory_is_refused(
    run: Run, tmp_path: Path
) -> None:
    recipient = keygen(run, tmp_path)
    assert run("age", "encrypt", "-r", recipient, "-o", "x.age", input=b"secret").returncode == 0
    if os.geteuid() == 0:
        device = tmp_path / "null"  # our own device, never the real /dev/null
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    else:
        device = Path("/dev/null")  # an ordinary user cannot rename over it
    result = run("age", "decrypt", "-i", "key.txt", "-o", str(device), "x.age")
    assert result.returncode == 0, result.stderr
    assert stat.S_ISCHR(os.lstat(device).st_mode) and os.lstat(device).st_rdev == os.makedev(1, 3)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    (tmp_path / "outdir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "x.age")
    for target in ("outdir", "link"):
        result = run("age", "decrypt", "-i", "key.txt", "-o", target, "x.age")
        _assert_clean_failure(result, 1)
        assert "cannot write output" in result.stderr.decode()
    assert (tmp_path / "link").is_symlink() and (tmp_path / "outdir").is_dir()
