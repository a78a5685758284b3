"""Interoperability with the reference ``age`` CLI (Debian age 1.1.1: X25519, armor, scrypt).

Both directions, binary and armored, at chunk-boundary sizes. The passphrase
direction drives the CLI through a pseudo-terminal, since age 1.1.1 reads
passphrases only from the terminal.
"""

from __future__ import annotations

import os
import pty
import random
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange.crypto import age
from tests.support import ROOT, age_cli, skip_or_fail

CHUNK = 64 * 1024
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * 1024 * 1024 + 123]


@pytest.fixture(scope="module")
def keygen(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Return an identity file written by age-keygen and its recipient per age-keygen -y."""
    age_cli()
    tool = shutil.which("age-keygen")
    if tool is None:
        skip_or_fail("AGE_CLI", "age-keygen is not installed (Debian package 'age')")
        raise AssertionError("unreachable")
    path = tmp_path_factory.mktemp("keys") / "key.txt"
    subprocess.run([tool, "-o", str(path)], check=True, capture_output=True)
    recipient = subprocess.run(
        [tool, "-y", str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()
    return path, recipient


def test_keygen_identity_file_is_parsed(keygen: tuple[Path, str]) -> None:
    path, recipient = keygen
    text = path.read_text()
    assert text.startswith("# created: ")
    identities = age.parse_identity_file(text)
    assert len(identities) == 1
    identity = identities[0]
    assert isinstance(identity, age.X25519Identity)
    assert identity.recipient().to_string() == recipient
    assert f"# public key: {recipient}" in text


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", SIZES)
def test_age_cli_encrypts_we_decrypt(
    keygen: tuple[Path, str], tmp_path: Path, size: int, armor: bool
) -> None:
    path, recipient = keygen
    plaintext = random.Random(size).randbytes(size)
    args = [age_cli(), "-r", recipient] + (["-a"] if armor else [])
    ciphertext = subprocess.run(args, input=plaintext, check=True, capture_output=True).stdout
    assert ciphertext.startswith(b"-----BEGIN" if armor else b"age-encryption.org/v1\n")
    identities = age.parse_identity_file(path.read_text())
    assert age.decrypt(ciphertext, identities) == plaintext
    source = tmp_path / "in.age"
    source.write_bytes(ciphertext)
    with source.open("rb") as src, (tmp_path / "out").open("wb") as dst:
        assert age.decrypt_file(src, dst, identities) == size
    assert (tmp_path / "out").read_bytes() == plaintext


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
@pytest.mark.parametrize("size", SIZES)
def test_we_encrypt_age_cli_decrypts(
    keygen: tuple[Path, str], tmp_path: Path, size: int, armor: bool
) -> None:
    path, recipient = keygen
    plaintext = random.Random(size + 1).randbytes(size)
    source = tmp_path / "in"
    source.write_bytes(plaintext)
    target = tmp_path / "out.age"
    with source.open("rb") as src, target.open("wb") as dst:
        age.encrypt_file(src, dst, [age.parse_recipient(recipient)], armor=armor)
    result = subprocess.run(
        [age_cli(), "-d", "-i", str(path), str(target)], check=True, capture_output=True
    )
    assert result.stdout == plaintext


def _run_on_tty(args: list[str], passphrase: str, timeout_s: float = 60) -> int:
    """Run ``args`` on a new pseudo-terminal, answering every passphrase prompt."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child execs immediately
        os.environ.update(PYTHONPATH=str(ROOT))  # for ``python -m exchange``
        for name in [n for n in os.environ if n.startswith("EXCHANGE_")]:
            del os.environ[name]
        os.execv(args[0], args)
    seen = b""
    answered = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                data = os.read(fd, 4096)
            except OSError:
                break  # EIO: the child closed the terminal
            if not data:
                break
            seen += data
            if seen.lower().count(b"passphrase") > answered and seen.rstrip().endswith(b":"):
                os.write(fd, passphrase.encode() + b"\n")
                answered += 1
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_passphrase_age_cli_encrypts_we_decrypt(tmp_path: Path) -> None:
    source, target = tmp_path / "in", tmp_path / "out.age"
    source.write_bytes(b"evidence" * 1000)
    code = _run_on_tty([age_cli(), "-p", "-o", str(target), str(source)], "correct horse")
    assert code == 0, "age -p failed on the pseudo-terminal"
    ciphertext = target.read_bytes()
    assert b"\n-> scrypt " in ciphertext
    identity = age.ScryptIdentity("correct horse")
    assert age.decrypt(ciphertext, [identity]) == b"evidence" * 1000
    with pytest.raises(age.NoIdentityMatch):
        age.decrypt(ciphertext, [age.ScryptIdentity("wrong horse")])
    # Our CLI, as a script written for age runs it: no -p, the passphrase typed at the prompt
    # (the header's lone scrypt stanza is what makes it ask) ...
    typed = tmp_path / "typed"
    code = _run_on_tty([sys.executable, "-m", "exchange", "age", "decrypt", "-o", str(typed),
                        str(target)], "correct horse")
    assert code == 0 and typed.read_bytes() == b"evidence" * 1000
    # ... or from a password manager's command.
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(PYTHONPATH=str(ROOT),
               EXCHANGE_AGE_PASSPHRASE_COMMAND=f"{shutil.which('echo')} correct horse")
    done = subprocess.run([sys.executable, "-m", "exchange", "age", "decrypt", str(target)],
                          env=env, capture_output=True, start_new_session=True, check=False)
    assert (done.returncode, done.stdout) == (0, b"evidence" * 1000), done.stderr


def test_decrypt_refuses_p_as_age_does(tmp_path: Path) -> None:
    """``-d -p``: age 1.1.1 refuses it (status 1, a hint that detection is automatic)."""
    target = tmp_path / "in.age"
    target.write_bytes(age.encrypt(b"x", [age.ScryptRecipient("battery staple", 10)]))
    theirs = subprocess.run([age_cli(), "-d", "-p", str(target)], capture_output=True,
                            start_new_session=True, check=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env.update(PYTHONPATH=str(ROOT), EXCHANGE_AGE_PASSPHRASE="battery staple")
    ours = subprocess.run([sys.executable, "-m", "exchange", "age", "decrypt", "-p", str(target)],
                          env=env, capture_output=True, start_new_session=True, check=False)
    assert ours.returncode == theirs.returncode == 1, (theirs.stderr, ours.stderr)
    assert ours.stdout == theirs.stdout == b""
    assert b"detected automatically" in theirs.stderr and b"detected automatically" in ours.stderr
    assert ours.stderr.startswith(b"exchange: error: -p/--passphrase can't be used with")


def test_passphrase_we_encrypt_age_cli_decrypts(tmp_path: Path) -> None:
    target, output = tmp_path / "in.age", tmp_path / "out"
    target.write_bytes(age.encrypt(b"exhibit A", [age.ScryptRecipient("battery staple", 10)]))
    code = _run_on_tty([age_cli(), "-d", "-o", str(output), str(target)], "battery staple")
    assert code == 0, "age -d failed on the pseudo-terminal"
    assert output.read_bytes() == b"exhibit A"
