"""C2SP signed-note v1.0.0 (Ed25519, type 0x01) and tlog-cosignature v1 (type 0x04).

A note is UTF-8 text ending in a newline, an empty line, then signature lines
``— <name> <base64(key ID ‖ signature)>``. Verification is strict: lines from
unknown (name, key ID) pairs are ignored, a failing known key rejects the whole
note, at most :data:`MAX_SIGNATURES` lines are read, and at least one known key
must verify. Ed25519 comes from pynacl (libsodium); nothing here is a primitive.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import nacl.bindings
import nacl.exceptions
import nacl.signing

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.errors import AuditError

SIG_ED25519 = 0x01  # signed-note: Ed25519 over the note text
SIG_COSIGNATURE_V1 = 0x04  # tlog-cosignature: timestamped Ed25519 cosignature
ED25519_KEY_SIZE = 32
ED25519_SIG_SIZE = 64
KEY_ID_SIZE = 4
COSIGNATURE_SIZE = 8 + ED25519_SIG_SIZE  # big-endian uint64 timestamp ‖ signature
MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: timestamps fit an int64
MAX_SIGNATURES = 100  # signed-note: cap SHOULD be >= 16; Go uses 100
MAX_NOTE_BYTES = 1 << 20  # bound parsing work on untrusted input
EM_DASH_PREFIX = "\u2014 "
COSIGNATURE_LABEL = b"cosignature/v1\n"


class NoteError(AuditError, ValueError):
    """A note or key string is malformed (the spec's "malformed note" class)."""


class VerifierKeyError(NoteError):
    """A verifier or signer key string breaks a signed-note rule."""


class UnverifiedNote(NoteError):
    """No trusted key verified the note; ``unverified`` lists the signatures seen."""

    def __init__(self, message: str, unverified: tuple[Signature, ...]) -> None:
        super().__init__(message)
        self.unverified = unverified


class InvalidNoteSignature(NoteError):
    """A signature from a trusted (name, key ID) failed: the whole note is rejected."""


class AmbiguousKey(NoteError):
    """The trusted key list holds the same (name, key ID) twice and a line used it."""


def _b64decode(text: str, what: str) -> bytes:
    """Strict standard base64: alphabet, padding and canonical trailing bits."""
    try:
        return b64decode_canonical(text)
    except StrictDecodeError as err:
        raise NoteError(f"{what} is {err}: {text[:40]!r}") from None


def check_key_name(name: str) -> None:
    """Raise :class:`NoteError` unless ``name`` is a key name: non-empty, no space, no '+'.

    Lone surrogates are refused too: they are not Unicode scalar values, so the
    name could not be encoded for its key ID.
    """
    if not name or "+" in name or any(
        ch.isspace() or ch < " " or "\ud800" <= ch <= "\udfff" for ch in name
    ):
        raise NoteError(f"invalid key name {name[:60]!r}")


def key_id(name: str, key_type: int, public_key: bytes) -> int:
    """Return the key ID SHA-256(name ‖ 0x0A ‖ type ‖ public key)[:4] as a big-endian uint32."""
    digest = hashlib.sha256(name.encode("utf-8") + b"\n" + bytes([key_type]) + public_key)
    return int.from_bytes(digest.digest()[:KEY_ID_SIZE], "big")


def _ed25519_ok(public_key: bytes, message: bytes, signature: bytes) -> bool:
    if len(signature) != ED25519_SIG_SIZE:
        return False
    try:
        nacl.bindings.crypto_sign_open(signature + message, public_key)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


class Verifier(Protocol):
    """A trusted note key. ``verify`` gets the note text and the bytes after the key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


class Signer(Protocol):
    """A note signing key; ``sign`` returns the bytes that follow the key ID."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def sign(self, message: bytes) -> bytes: ...


def _ed25519_key_id(name: str, key_type: int, public_key: bytes) -> int:
    """Check an Ed25519 verifier's name and key size; return its key ID."""
    check_key_name(name)
    if len(public_key) != ED25519_KEY_SIZE:
        raise VerifierKeyError(f"ed25519 key is {len(public_key)} bytes, want 32")
    return key_id(name, key_type, public_key)


def _vkey(name: str, key_identifier: int, key_type: int, public_key: bytes) -> str:
    """Return the verifier key string ``name+hex key ID+base64(type ‖ key)``."""
    encoded = base64.b64encode(bytes([key_type]) + public_key).decode("ascii")
    return f"{name}+{key_identifier:08x}+{encoded}"


@dataclass(frozen=True, slots=True)
class Ed25519Verifier:
    """A signed-note Ed25519 (type 0x01) verifier key."""

    name: str
    public_key: bytes
    key_type: int = field(default=SIG_ED25519, init=False)
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", _ed25519_key_id(self.name, self.key_type,
                                                           self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` is a valid Ed25519 signature of ``message``."""
        return _ed25519_ok(self.public_key, message, signature)

    def vkey(self) -> str:
        """Return the verifier key string ``name+hex key ID+base64(type ‖ key)``."""
        return _vkey(self.name, self.key_id, self.key_type, self.public_key)


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    """Return the tlog-cosignature/v1 signed message for a checkpoint body."""
    return COSIGNATURE_LABEL + b"time %d\n" % timestamp + text


@dataclass(frozen=True, slots=True)
class CosignatureVerifier:
    """A tlog-cosignature Ed25519 (type 0x04) verifier; signatures are timestamp ‖ sig."""

    name: str
    public_key: bytes
    key_type: int = field(default=SIG_COSIGNATURE_V1, init=False)
    key_id: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", _ed25519_key_id(self.name, self.key_type,
                                                           self.public_key))

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Return whether ``signature`` (72 bytes) cosigns the checkpoint body ``message``."""
        if len(signature) != COSIGNATURE_SIZE:
            return False
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return False
        return _ed25519_ok(
            self.public_key, cosignature_message(message, timestamp), signature[8:]
        )

    def vkey(self) -> str:
        """Return the verifier key string ``name+hex key ID+base64(0x04 ‖ key)``."""
        return _vkey(self.name, self.key_id, self.key_type, self.public_key)


def cosignature_timestamp(signature: bytes) -> int:
    """Return the timestamp of a type-0x04 signature given as key ID ‖ payload (76 bytes)."""
    if len(signature) != KEY_ID_SIZE + COSIGNATURE_SIZE:
        raise NoteError(
            f"cosignature is {len(signature)} bytes, want {KEY_ID_SIZE + COSIGNATURE_SIZE}"
        )
    timestamp = int.from_bytes(signature[KEY_ID_SIZE : KEY_ID_SIZE + 8], "big")
    if timestamp > MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp {timestamp} exceeds 2**63 - 1")
    return timestamp


class Ed25519Signer:
    """A signed-note Ed25519 signing key (type 0x01). The seed never appears in reprs."""

    __slots__ = ("_key", "key_id", "name", "public_key")

    def __init__(self, name: str, seed: bytes) -> None:
        check_key_name(name)
        if len(seed) != ED25519_KEY_SIZE:
            raise VerifierKeyError(f"ed25519 seed is {len(seed)} bytes, want 32")
        self._key = nacl.signing.SigningKey(seed)
        self.name = name
        self.public_key = bytes(self._key.verify_key)
        self.key_id = key_id(name, SIG_ED25519, self.public_key)

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        """Return a signer with a fresh random key."""
        return cls(name, bytes(nacl.signing.SigningKey.generate()))

    def sign(self, message: bytes) -> bytes:
        """Return the 64-byte Ed25519 signature of ``message``."""
        return bytes(self._key.sign(message).signature)

    def verifier(self) -> Ed25519Verifier:
        """Return the matching verifier."""
        return Ed25519Verifier(self.name, self.public_key)

    def __repr__(self) -> str:
        return f"Ed25519Signer(name={self.name!r}, key_id={self.key_id:08x})"


class CosignatureSigner:
    """A tlog-cosignature/v1 signer (type 0x04); ``clock`` returns POSIX seconds."""

    __slots__ = ("_clock", "_key", "key_id", "name", "public_key")

    def __init__(self, name: str, seed: bytes, clock: Callable[[], int]) -> None:
        check_key_name(name)
        if len(seed) != ED25519_KEY_SIZE:
            raise VerifierKeyError(f"ed25519 seed is {len(seed)} bytes, want 32")
        self._key = nacl.signing.SigningKey(seed)
        self._clock = clock
        self.name = name
        self.public_key = bytes(self._key.verify_key)
        self.key_id = key_id(name, SIG_COSIGNATURE_V1, self.public_key)

    def sign(self, message: bytes) -> bytes:
        """Return timestamp ‖ Ed25519 signature over the cosignature/v1 message."""
        timestamp = self._clock()
        if not 0 <= timestamp <= MAX_TIMESTAMP:
            raise ValueError(f"timestamp {timestamp} is outside [0, 2**63)")
        signed = self._key.sign(cosignature_message(message, timestamp)).signature
        return timestamp.to_bytes(8, "big") + bytes(signed)

    def verifier(self) -> CosignatureVerifier:
        """Return the matching verifier."""
        return CosignatureVerifier(self.name, self.public_key)

    def __repr__(self) -> str:
        return f"CosignatureSigner(name={self.name!r}, key_id={self.key_id:08x})"


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.split("+", parts - 1)
    if len(fields) != parts:
        raise VerifierKeyError(f"{what} has {len(fields)} '+'-separated parts, want {parts}")
    return fields


def _parse_key_fields(name: str, hex_id: str, encoded: str) -> tuple[int, bytes, int]:
    check_key_name(name)
    if len(hex_id) != 8 or any(ch not in "0123456789abcdef" for ch in hex_id):
        raise VerifierKeyError(f"key id {hex_id[:16]!r} is not 8 lowercase hex digits")
    try:
        raw = _b64decode(encoded, "key")
    except NoteError as err:
        raise VerifierKeyError(str(err)) from None
    if not raw:
        raise VerifierKeyError("key material is empty")
    return int(hex_id, 16), raw[1:], raw[0]


def parse_verifier_key(vkey: str) -> Ed25519Verifier | CosignatureVerifier:
    """Return the verifier for ``name+hexid+base64(type ‖ key)``; types 0x01 and 0x04.

    Splits on the first two '+' only (the base64 may contain '+'), and rejects a
    key ID that does not match the derivation, an unknown type or a bad length.
    """
    name, hex_id, encoded = _split_key(vkey, 3, "verifier key")
    claimed, public_key, key_type = _parse_key_fields(name, hex_id, encoded)
    verifier: Ed25519Verifier | CosignatureVerifier
    if key_type == SIG_ED25519:
        verifier = Ed25519Verifier(name, public_key)
    elif key_type == SIG_COSIGNATURE_V1:
        verifier = CosignatureVerifier(name, public_key)
    else:
        raise VerifierKeyError(f"unsupported key type 0x{key_type:02x}, want 0x01 or 0x04")
    if verifier.key_id != claimed:
        raise VerifierKeyError(
            f"key id {hex_id} does not match the key, want {verifier.key_id:08x}"
        )
    return verifier


def encode_private_key(name: str, key_identifier: int, key_type: int, seed: bytes) -> str:
    """Return the private key string ``PRIVATE+KEY+name+hexid+base64(type ‖ seed)`` (Go style)."""
    return "PRIVATE+KEY+" + _vkey(name, key_identifier, key_type, seed)


def _private_key_fields(skey: str) -> tuple[str, int, bytes, int]:
    fields = _split_key(skey, 5, "signer key")
    if fields[0] != "PRIVATE" or fields[1] != "KEY":
        raise VerifierKeyError("signer key does not start with 'PRIVATE+KEY+'")
    claimed, seed, key_type = _parse_key_fields(fields[2], fields[3], fields[4])
    return fields[2], claimed, seed, key_type


def parse_cosigner_key(skey: str, clock: Callable[[], int]) -> CosignatureSigner:
    """Return the cosigner for ``PRIVATE+KEY+name+hexid+base64(0x04 ‖ seed)``.

    The same layout as :func:`parse_signer_key` with the cosignature type, so a
    witness key can never be loaded as a log key (or the reverse).
    """
    name, claimed, seed, key_type = _private_key_fields(skey)
    if key_type != SIG_COSIGNATURE_V1:
        raise VerifierKeyError(f"unsupported cosigner key type 0x{key_type:02x}, want 0x04")
    signer = CosignatureSigner(name, seed, clock)
    if signer.key_id != claimed:
        raise VerifierKeyError("cosigner key id does not match the key")
    return signer


def parse_signer_key(skey: str) -> Ed25519Signer:
    """Return the signer for a Go-style ``PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)`` string."""
    name, claimed, seed, key_type = _private_key_fields(skey)
    if key_type != SIG_ED25519:
        raise VerifierKeyError(f"unsupported signer key type 0x{key_type:02x}, want 0x01")
    signer = Ed25519Signer(name, seed)
    if signer.key_id != claimed:
        raise VerifierKeyError("signer key id does not match the key")
    return signer


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature line: key name, key ID and the bytes after the key ID."""

    name: str
    key_id: int
    data: bytes

    def line(self) -> str:
        """Return the signature line without its final newline."""
        raw = self.key_id.to_bytes(KEY_ID_SIZE, "big") + self.data
        return f"{EM_DASH_PREFIX}{self.name} {base64.b64encode(raw).decode('ascii')}"


@dataclass(frozen=True, slots=True)
class Note:
    """An opened note: its text (with final newline) and its verified/unverified signatures."""

    text: str
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text does not end in a newline")
    if any(ch < " " and ch != "\n" for ch in text):
        raise NoteError("note text contains a control character")


def _parse_line(line: str) -> Signature:
    if not line.startswith(EM_DASH_PREFIX):
        raise NoteError(f"signature line does not start with an em dash: {line[:40]!r}")
    name, sep, encoded = line[len(EM_DASH_PREFIX) :].partition(" ")
    if not sep:
        raise NoteError(f"signature line has no space after the key name: {line[:40]!r}")
    check_key_name(name)
    raw = _b64decode(encoded, "signature")
    if len(raw) < KEY_ID_SIZE + 1:
        raise NoteError(f"signature is {len(raw)} bytes, want at least {KEY_ID_SIZE + 1}")
    return Signature(name, int.from_bytes(raw[:KEY_ID_SIZE], "big"), raw[KEY_ID_SIZE:])


def parse_note(data: bytes) -> tuple[str, list[Signature]]:
    """Return (text, signature lines in order, exact duplicates dropped) without verifying."""
    if len(data) > MAX_NOTE_BYTES:
        raise NoteError(f"note is {len(data)} bytes, more than {MAX_NOTE_BYTES}")
    try:
        message = data.decode("utf-8")
    except UnicodeDecodeError:
        raise NoteError("note is not valid UTF-8") from None
    if any(ch < " " and ch != "\n" for ch in message):
        raise NoteError("note contains a control character")
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("note has no empty line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block:
        raise NoteError("note has no signature lines")
    if not block.endswith("\n"):
        raise NoteError("signature block does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    seen: set[str] = set()
    signatures: list[Signature] = []
    for line in lines:
        if line in seen:
            continue
        seen.add(line)
        signatures.append(_parse_line(line))
    return text, signatures


def open_note(data: bytes, verifiers: Sequence[Verifier]) -> Note:
    """Return the note in ``data`` after checking its signatures against ``verifiers``.

    Raises :class:`NoteError` when malformed, :class:`AmbiguousKey`,
    :class:`InvalidNoteSignature` when a trusted key's signature fails, and
    :class:`UnverifiedNote` when no trusted key signed it.
    """
    text, signatures = parse_note(data)
    known: dict[tuple[str, int], list[Verifier]] = {}
    for verifier in verifiers:
        known.setdefault((verifier.name, verifier.key_id), []).append(verifier)
    message = text.encode("utf-8")
    verified: list[Signature] = []
    unverified: list[Signature] = []
    done: set[tuple[str, int]] = set()
    for signature in signatures:
        pair = (signature.name, signature.key_id)
        candidates = known.get(pair)
        if candidates is None:
            unverified.append(signature)
            continue
        if len(candidates) > 1:
            raise AmbiguousKey(f"ambiguous key {signature.name}+{signature.key_id:08x}")
        if not candidates[0].verify(message, signature.data):
            raise InvalidNoteSignature(
                f"invalid signature for key {signature.name}+{signature.key_id:08x}"
            )
        if pair not in done:
            done.add(pair)
            verified.append(signature)
    if not verified:
        raise UnverifiedNote("note has no verifiable signatures", tuple(unverified))
    return Note(text=text, verified=tuple(verified), unverified=tuple(unverified))


def sign_note(text: str, signers: Sequence[Signer], *, keep: Sequence[Signature] = ()) -> bytes:
    """Return the signed note: ``text``, an empty line, then the signature lines.

    ``keep`` carries signatures of an existing note; any from the same
    (name, key ID) as a new signer are replaced. Kept lines come first.
    """
    _check_text(text)
    if not signers and not keep:
        raise NoteError("a note needs at least one signature")
    message = text.encode("utf-8")
    replaced = {(signer.name, signer.key_id) for signer in signers}
    lines = [sig.line() for sig in keep if (sig.name, sig.key_id) not in replaced]
    for signer in signers:
        check_key_name(signer.name)
        lines.append(Signature(signer.name, signer.key_id, signer.sign(message)).line())
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note would have {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return (text + "\n" + "".join(line + "\n" for line in lines)).encode("utf-8")
