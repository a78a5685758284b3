"""Helpers shared by the test suite: where the public vectors are, the
rule that turns a missing external dependency into a skip locally but a
failure in CI (where ``.ci/run`` sets ``EXCHANGE_REQUIRE_*``), and running
the CLI in process with a given environment."""

from __future__ import annotations

import contextlib
import datetime
import io
import ipaddress
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from exchange.cli.main import main as cli_main

ROOT = Path(__file__).resolve().parent.parent


def skip_or_fail(requirement: str, reason: str) -> None:
    """Skip the test with ``reason``, or fail it when ``EXCHANGE_REQUIRE_<requirement>`` is set."""
    if os.environ.get(f"EXCHANGE_REQUIRE_{requirement}"):
        pytest.fail(f"{reason} (EXCHANGE_REQUIRE_{requirement} is set, so this is a failure)")
    pytest.skip(reason)


def vectors_dir(kind: str) -> Path:
    """Return ``$EXCHANGE_VECTORS/<kind>`` (default ``../shared/vectors``), or skip/fail."""
    base = Path(os.environ.get("EXCHANGE_VECTORS", ROOT.parent / "shared" / "vectors"))
    path = base / kind
    if not path.is_dir():
        skip_or_fail("VECTORS", f"conformance vectors not found at {path}; set EXCHANGE_VECTORS")
    return path


def age_cli() -> str:
    """Return the path of the reference ``age`` CLI, or skip/fail."""
    path = shutil.which("age")
    if path is None:
        skip_or_fail("AGE_CLI", "the age CLI is not installed (Debian package 'age')")
        raise AssertionError("unreachable")
    return path


def run_cli(argv: Sequence[str], env: Mapping[str, str]) -> tuple[int, str, str]:
    """Run ``exchange ARGV`` in process with ``env`` set; return (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli_main(list(argv))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return code, out.getvalue(), err.getvalue()


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a throwaway self-signed TLS certificate for ``localhost`` and ``127.0.0.1``
    (its own CA, valid for a day) and its key into ``directory``; return both paths."""
    from cryptography import x509  # noqa: PLC0415 - only TLS tests need it
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def processes_mentioning(text: str) -> list[str]:
    """Return the command lines of live processes that mention ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if text in cmdline:
            found.append(cmdline)
    return found


def assert_demo_cleaned_up(tmp: Path) -> None:
    """Assert that no process of a finished demo mentions ``tmp`` and that ``tmp`` is empty."""
    deadline = time.monotonic() + 10
    while processes_mentioning(str(tmp)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_mentioning(str(tmp)) == []
    assert list(tmp.iterdir()) == [], "the demo left its temporary directory behind"
