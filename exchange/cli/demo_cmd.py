"""``exchange demo``: the evidence story told with the demo identities in ``keys/``.

This version runs the client-side cryptography of one case end to end, offline:
case key epochs, envelopes, encrypted evidence, signed and sealed manifests,
a member removal with key rotation, and tamper detection. The server-backed
story (issue 6) replaces the in-memory hand-offs with real HTTP calls.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from exchange.cli import _ui
from exchange.crypto.age import (
    Decryptor,
    Encryptor,
    NoIdentityMatch,
    PayloadError,
    parse_recipient,
)
from exchange.crypto.envelope import CaseKey, unwrap_envelope, wrap_envelope
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.keystore import open_keystore
from exchange.crypto.manifest import Manifest, format_timestamp, open_manifest, seal_manifest

#: The demo keystores' passphrase; they are public test material (see keys/README.md).
DEMO_PASSPHRASE = "demo-passphrase-not-secret"  # noqa: S105 (public demo material)
DEFAULT_KEYS_DIR = Path(__file__).resolve().parents[2] / "keys"
EVIDENCE_BYTES = 3 * 1024 * 1024 + 12345  # a few MiB: several 64 KiB chunks, a short last one


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add ``exchange demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the evidence-exchange story with the demo identities",
        description=(
            "Run one case end to end with the demo identities in keys/: a prosecutor "
            "creates the case key, shares it with the members, encrypts and signs evidence; "
            "the coordination centre verifies and decrypts it; a member is removed and the "
            "key rotated; tampering is detected. Every step is printed in plain language."
        ),
        epilog=_ui.epilog("exchange demo", "exchange demo --keys ./keys"),
    )
    parser.add_argument(
        "--keys", type=Path, default=DEFAULT_KEYS_DIR,
        help="folder with the demo keystores (default: the repository's keys/)",
    )
    parser.set_defaults(func=run)


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _say(text: str) -> None:
    print(f"   {text}", flush=True)


def _load(keys: Path, participant_id: str) -> ParticipantIdentity:
    path = keys / f"{participant_id}.keystore"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _ui.CliError(
            f"cannot read demo keystore {str(path)!r}: {_ui.os_reason(err)}",
            "run the demo from a clone of the repository, or pass --keys DIR",
        ) from None
    return open_keystore(data, DEMO_PASSPHRASE)


def _encrypt_stream(src: io.BufferedIOBase, dst: io.BufferedIOBase, enc: Encryptor,
                    ) -> tuple[str, str, int, int]:
    """Encrypt ``src`` into ``dst``; return (plaintext sha256, ciphertext sha256, sizes)."""
    plain_hash, cipher_hash = hashlib.sha256(), hashlib.sha256()
    plain_size = cipher_size = 0

    def sink(chunk: bytes | bytearray | memoryview) -> None:
        nonlocal cipher_size
        cipher_hash.update(chunk)
        cipher_size += len(chunk)
        dst.write(chunk)

    while block := src.read(_ui.READ_SIZE):
        plain_hash.update(block)
        plain_size += len(block)
        enc.feed(block, sink)
    sink(enc.finalize())
    return plain_hash.hexdigest(), cipher_hash.hexdigest(), plain_size, cipher_size


def _decrypt_to_hash(path: Path, identity: CaseKey) -> str:
    dec = Decryptor([identity.identity])
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(_ui.READ_SIZE):
            digest.update(dec.update(block))
    digest.update(dec.finalize())
    return digest.hexdigest()


def run(args: argparse.Namespace) -> int:
    """Tell the story; raises CliError if any step does not behave as it must."""
    keys: Path = args.keys
    people = {pid: _load(keys, pid) for pid in (
        "prosecutor-nl-01", "prosecutor-de-01", "coordinator-01")}
    nl, de, cc = (people[p] for p in ("prosecutor-nl-01", "prosecutor-de-01", "coordinator-01"))
    lookup: Callable[[str], bytes | None] = lambda pid: (  # noqa: E731
        people[pid].public_bundle().signing_key if pid in people else None)

    _step("1. The participants (demo keys from keys/, never use them for real evidence)")
    for person in people.values():
        bundle = person.public_bundle()
        _say(f"{bundle.id:18} {bundle.display_name:40} fingerprint {bundle.fingerprint}")

    with tempfile.TemporaryDirectory(prefix="exchange-demo-") as tmp:
        work = Path(tmp)
        case_id = "case-demo-2026-001"

        _step("2. The Dutch prosecutor opens a case and shares its key with the team")
        epoch0 = CaseKey.generate(case_id, 0)
        envelopes = {p: wrap_envelope(epoch0, people[p].public_bundle().recipient())
                     for p in people}
        recipient0 = epoch0.recipient().to_string()
        _say(f"case key epoch 0 created on the prosecutor's machine: {recipient0[:24]}…")
        _say(f"wrapped into {len(envelopes)} envelopes, one per member; "
             "the server would store only these")

        _step("3. She encrypts and signs a piece of evidence before it leaves her machine")
        evidence = work / "phone-extraction.bin"
        evidence.write_bytes(os.urandom(EVIDENCE_BYTES))
        encrypted = work / "phone-extraction.bin.age"
        with evidence.open("rb") as src, encrypted.open("wb") as dst:
            p_sha, c_sha, p_size, c_size = _encrypt_stream(
                src, dst, Encryptor([epoch0.recipient()]))
        manifest = Manifest(
            file_name=evidence.name, media_type="application/octet-stream",
            plaintext_size=p_size, plaintext_sha256=p_sha,
            ciphertext_size=c_size, ciphertext_sha256=c_sha,
            case_id=case_id, epoch=0, uploader=nl.id,
            uploaded_at=format_timestamp(datetime.now(UTC)),
        )
        sealed = seal_manifest(manifest, nl.signing_key, epoch0.recipient())
        _say(f"{p_size:,} bytes encrypted to {c_size:,} bytes (standard age v1 file)")
        _say(f"plaintext SHA-256  {p_sha}")
        _say(f"ciphertext SHA-256 {c_sha}")
        _say("manifest (name, type, sizes, hashes, case, uploader, time) "
             "signed and sealed to the case")

        _step("4. The coordination centre receives and verifies it")
        cc_key = unwrap_envelope(envelopes[cc.id], cc.age_identities(), case_id=case_id, epoch=0)
        opened = open_manifest(sealed, cc_key.identity, lookup, case_id=case_id, epoch=0)
        if hashlib.sha256(encrypted.read_bytes()).hexdigest() != opened.ciphertext_sha256:
            raise _ui.CliError("demo failed: ciphertext hash does not match the manifest")
        if _decrypt_to_hash(encrypted, cc_key) != opened.plaintext_sha256:
            raise _ui.CliError("demo failed: plaintext hash does not match the manifest")
        _say(f"signature of {opened.uploader} verified; "
             f"file name {opened.file_name!r} readable only now")
        _say("ciphertext and plaintext hashes match the signed manifest: "
             "evidence received intact")

        age_cli = shutil.which("age")
        if age_cli:
            key_file = work / "case-epoch0.key"
            key_file.write_text(epoch0.identity.to_string() + "\n")
            key_file.chmod(0o600)
            out = subprocess.run([age_cli, "-d", "-i", str(key_file), str(encrypted)],
                                 capture_output=True, check=True).stdout
            if hashlib.sha256(out).hexdigest() != p_sha:
                raise _ui.CliError("demo failed: the age CLI decrypted different bytes")
            _say(f"the standard age tool ({age_cli}) decrypts the same file: "
                 "readable without exchange")

        _step("5. The German prosecutor leaves the case; the key is rotated for the others")
        epoch1 = CaseKey.generate(case_id, 1)
        envelopes1 = {p: wrap_envelope(epoch1, people[p].public_bundle().recipient())
                      for p in (nl.id, cc.id)}
        later = work / "interview.bin.age"
        with io.BytesIO(b"new evidence after the rotation\n") as src, later.open("wb") as dst:
            _encrypt_stream(src, dst, Encryptor([parse_recipient(epoch1.recipient().to_string())]))
        _say(f"epoch 1 created and wrapped for {', '.join(envelopes1)}; "
             "new evidence uses epoch 1")
        de_key = unwrap_envelope(envelopes[de.id], de.age_identities(), case_id=case_id, epoch=0)
        try:
            _decrypt_to_hash(later, de_key)
        except NoIdentityMatch:
            _say("the removed member's old key does not open evidence of the new epoch: refused")
        else:
            raise _ui.CliError("demo failed: a removed member could read new evidence")

        _step("6. Tampering is detected")
        damaged = bytearray(encrypted.read_bytes())
        damaged[len(damaged) // 2] ^= 0x01
        tampered = work / "tampered.bin.age"
        tampered.write_bytes(bytes(damaged))
        try:
            _decrypt_to_hash(tampered, cc_key)
        except PayloadError as err:
            _say(f"one flipped bit in the middle of the file: {err}")
        else:
            raise _ui.CliError("demo failed: a tampered file decrypted")

    _step("Done: evidence stayed encrypted end to end, signed by its uploader, and verifiable")
    return int(_ui.ExitCode.OK)
