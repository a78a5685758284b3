"""Signed, sealed evidence manifests (DESIGN.md decision 4).

A manifest describes one evidence file. The uploader signs it with Ed25519
(RFC 8032) over ``SIGNATURE_CONTEXT || JCS(manifest)`` (RFC 8785), and the
pair is sealed as a standard age v1 file to the case epoch recipient. The
sealed plaintext is the canonical JSON object::

    {"format": "exchange-signed-manifest/v1", "manifest": {...}, "signature": b64(64)}

The context prefix keeps a manifest signature from ever being valid as any
other signed message of ours (request signatures, checkpoints).
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import re
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
import nacl.signing

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.crypto.age import Identity, Recipient, decrypt, encrypt
from exchange.crypto.envelope import validate_case_id, validate_epoch
from exchange.crypto.jcs import canonicalize
from exchange.crypto.keys import BundleError, loads_strict, validate_participant_id
from exchange.errors import CryptoError

__all__ = [
    "HANDLING_CODES",
    "MANIFEST_FORMAT",
    "Manifest",
    "ManifestError",
    "ManifestMismatch",
    "ManifestSignatureError",
    "UnsafeFileName",
    "check_handling",
    "format_timestamp",
    "open_manifest",
    "safe_file_name",
    "safe_folder",
    "seal_manifest",
    "sign_manifest",
    "verify_against",
]

MANIFEST_FORMAT = "exchange-manifest/v1"
SIGNED_FORMAT = "exchange-signed-manifest/v1"
SIGNATURE_CONTEXT = b"exchange-manifest-signature/v1\x00"
SIGNATURE_SIZE = 64
MAX_FILE_NAME_BYTES = 255  # the usual file-system name limit
MAX_FOLDER_BYTES = 1024  # well under PATH_MAX (4096) once a destination is prefixed
MAX_FOLDER_DEPTH = 32
MAX_MEDIA_TYPE_CHARS = 255  # RFC 6838 §4.2: type and subtype at most 127 each
MAX_SIZE = 2**53 - 1  # JCS safe integers; 8 PiB
MAX_SEALED_BYTES = 64 * 1024

_HEX64 = re.compile(r"[0-9a-f]{64}")
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_RESTRICTED_NAME}/{_RESTRICTED_NAME}")
_RFC3339_UTC = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z")
# Bidirectional controls make "evil\u202etxt.exe" display as "evilexe.txt".
_BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_FIELDS = (
    "format", "file_name", "media_type", "plaintext_size", "plaintext_sha256",
    "ciphertext_size", "ciphertext_sha256", "case_id", "epoch", "uploader", "uploaded_at",
)
#: Fields a manifest may leave out; absent means the default (so older manifests,
#: signed before the field existed, keep their exact signed bytes).
_OPTIONAL_FIELDS = ("folder", "handling", "handling_note")
#: Handling codes (as Europol SIENA uses them) an uploader may attach to a file.
HANDLING_CODES: dict[str, str] = {
    "H0": "law-enforcement use only",
    "H1": "not for use in court without the provider's permission",
    "H2": "no dissemination without the provider's permission",
    "H3": "other restrictions (see the note)",
}
MAX_HANDLING_NOTE_CHARS = 2000


class ManifestError(CryptoError):
    """A manifest is malformed, unsigned by its uploader, or does not match the evidence."""

    problem_type = "manifest"


class ManifestSignatureError(ManifestError):
    """The manifest signature does not verify under the uploader's key (or it is unknown)."""


class ManifestMismatch(ManifestError):
    """The evidence does not match the manifest; ``field``, ``expected``, ``found`` say how."""

    def __init__(self, message: str, *, field: str, expected: object, found: object) -> None:
        super().__init__(message)
        self.field = field
        self.expected = expected
        self.found = found


class UnsafeFileName(ManifestError, ValueError):
    """A file name cannot be used as given (empty, NUL, control or path characters)."""


def _check_name_text(name: str) -> None:
    if not name:
        raise UnsafeFileName("file name is empty")
    if "\x00" in name:
        raise UnsafeFileName(f"file name {name!r:.80} contains NUL")
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cs") or ch in _BIDI_CONTROLS:
            raise UnsafeFileName(f"file name {name!r:.80} contains control character {ch!r}")
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        raise UnsafeFileName(
            f"file name is {len(name.encode('utf-8'))} bytes, expected at most "
            f"{MAX_FILE_NAME_BYTES}"
        )


def safe_file_name(name: str) -> str:
    """Return ``name`` if it is safe as a single path component on any OS we support.

    Refuses empty names, NUL and control characters, bidirectional controls,
    ``/`` and ``\\``, ``.`` and ``..``, and names over 255 UTF-8 bytes, by
    raising :class:`UnsafeFileName`. Never rewrites: the caller decides what
    to do with an unsafe name sent by someone else.
    """
    if not isinstance(name, str):
        raise TypeError(f"file name must be a str, found {type(name).__name__}")
    _check_name_text(name)
    if "/" in name or "\\" in name:
        raise UnsafeFileName(f"file name {name!r:.80} contains a path separator")
    if name in (".", ".."):
        raise UnsafeFileName(f"file name {name!r} refers to a directory")
    return name


def safe_folder(folder: str) -> str:
    """Return ``folder`` if it is a safe relative folder path, the empty string meaning none.

    A folder is ``/``-separated components, each a :func:`safe_file_name`
    (so no ``..``, ``.``, backslash or control characters), without a leading
    or trailing ``/`` or empty components: already normalised, relative, and
    unable to leave the directory it is recreated under. At most
    ``MAX_FOLDER_DEPTH`` components and ``MAX_FOLDER_BYTES`` bytes. Raises
    :class:`UnsafeFileName`; never rewrites.
    """
    if not isinstance(folder, str):
        raise TypeError(f"folder must be a str, found {type(folder).__name__}")
    if folder == "":
        return folder
    if len(folder.encode("utf-8", "surrogatepass")) > MAX_FOLDER_BYTES:
        raise UnsafeFileName(f"folder is longer than {MAX_FOLDER_BYTES} bytes")
    parts = folder.split("/")
    if len(parts) > MAX_FOLDER_DEPTH:
        raise UnsafeFileName(f"folder has {len(parts)} levels, expected at most "
                             f"{MAX_FOLDER_DEPTH}")
    for part in parts:
        if part == "":
            raise UnsafeFileName(f"folder {folder!r:.80} is absolute or not normalised "
                                 "(empty component)")
        safe_file_name(part)
    return folder


def format_timestamp(moment: dt.datetime) -> str:
    """Return ``moment`` as an RFC 3339 UTC timestamp (``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``)."""
    if moment.tzinfo is None:
        raise ValueError("timestamp must be timezone-aware")
    text = moment.astimezone(dt.UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


def _check_timestamp(value: object) -> None:
    if not isinstance(value, str) or not _RFC3339_UTC.fullmatch(value):
        raise ManifestError(
            f"uploaded_at {value!r:.40} is not an RFC 3339 UTC timestamp like "
            "'2025-01-31T12:00:00Z'"
        )
    try:
        dt.datetime.fromisoformat(value[:-1])
    except ValueError:
        raise ManifestError(f"uploaded_at {value!r:.40} is not a valid date and time") from None


def _check_size(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ManifestError(f"{name} must be an integer, found {type(value).__name__}")
    if not 0 <= value <= MAX_SIZE:
        raise ManifestError(f"{name} {value} is outside 0..2**53-1")


def check_handling(code: object, note: object) -> None:
    """Raise :class:`ManifestError` unless ``code`` is "" or known and ``note`` is safe text."""
    if not isinstance(code, str) or (code and code not in HANDLING_CODES):
        raise ManifestError(f"handling code {code!r:.20} is not one of "
                            f"{', '.join(HANDLING_CODES)}")
    if not isinstance(note, str) or len(note) > MAX_HANDLING_NOTE_CHARS:
        raise ManifestError(f"handling note must be text of at most "
                            f"{MAX_HANDLING_NOTE_CHARS} characters")
    for ch in note:
        if ch not in "\n\t" and (unicodedata.category(ch) in ("Cc", "Cs")
                                  or ch in _BIDI_CONTROLS):
            raise ManifestError(f"handling note contains control character {ch!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Manifest:
    """What an uploader asserts about one evidence file; always valid once built."""

    file_name: str
    media_type: str
    plaintext_size: int
    plaintext_sha256: str
    ciphertext_size: int
    ciphertext_sha256: str
    case_id: str
    epoch: int
    uploader: str
    uploaded_at: str
    format: str = MANIFEST_FORMAT
    #: Relative folder the file was in when uploaded ("" = none); see :func:`safe_folder`.
    folder: str = ""
    #: Handling code chosen by the uploader (one of :data:`HANDLING_CODES`; "" = none).
    handling: str = ""
    #: Free-text handling note from the uploader ("" = none); signed and sealed like the rest.
    handling_note: str = ""

    def __post_init__(self) -> None:
        if self.format != MANIFEST_FORMAT:
            raise ManifestError(
                f"manifest format is {self.format!r:.60}, expected {MANIFEST_FORMAT!r}"
            )
        if not isinstance(self.file_name, str):
            raise ManifestError("file_name must be a string")
        try:
            # Any name the uploader had is kept (even with '/'), but never NUL or controls.
            _check_name_text(self.file_name)
        except UnsafeFileName as err:
            raise ManifestError(str(err)) from None
        try:
            safe_folder(self.folder)
        except (TypeError, UnsafeFileName) as err:
            raise ManifestError(f"folder: {err}") from None
        check_handling(self.handling, self.handling_note)
        if not isinstance(self.media_type, str) or len(self.media_type) > MAX_MEDIA_TYPE_CHARS or (
            not _MEDIA_TYPE.fullmatch(self.media_type)
        ):
            raise ManifestError(
                f"media_type {self.media_type!r:.60} is not a type/subtype media type (RFC 6838)"
            )
        for name in ("plaintext_size", "ciphertext_size"):
            _check_size(name, getattr(self, name))
        for name in ("plaintext_sha256", "ciphertext_sha256"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX64.fullmatch(value):
                raise ManifestError(f"{name} {value!r:.70} is not 64 lowercase hex digits")
        try:
            validate_case_id(self.case_id)
            validate_epoch(self.epoch)
            validate_participant_id(self.uploader, what="uploader")
        except (TypeError, ValueError) as err:
            raise ManifestError(str(err)) from None
        _check_timestamp(self.uploaded_at)

    def to_json_obj(self) -> dict[str, Any]:
        """Return the manifest as a JSON-ready dict (the object that is signed).

        Optional fields at their default are left out, so a manifest without
        a folder signs the same bytes as before the field existed.
        """
        obj = asdict(self)
        for name in _OPTIONAL_FIELDS:
            if not obj[name]:
                del obj[name]
        return obj

    @classmethod
    def from_json_obj(cls, obj: object) -> Manifest:
        """Return the manifest described by a decoded JSON object, validating every field."""
        if not isinstance(obj, dict):
            raise ManifestError(f"manifest must be a JSON object, found {type(obj).__name__}")
        missing = [name for name in _FIELDS if name not in obj]
        if missing:
            raise ManifestError(f"manifest is missing the field {missing[0]!r}")
        extra = sorted(set(obj) - set(_FIELDS) - set(_OPTIONAL_FIELDS))
        if extra:
            raise ManifestError(f"manifest has unknown field {extra[0]!r:.40}")
        for name in _OPTIONAL_FIELDS:
            if name in obj and obj[name] == "":
                # Absent is the encoding of "none"; an explicit "" would sign other bytes.
                raise ManifestError(f"manifest {name} is present but empty")
        return cls(**obj)

    def signed_bytes(self) -> bytes:
        """Return the exact bytes the uploader's Ed25519 signature covers."""
        return SIGNATURE_CONTEXT + canonicalize(self.to_json_obj())


def sign_manifest(manifest: Manifest, signing_key: nacl.signing.SigningKey) -> bytes:
    """Return the 64-byte Ed25519 signature of ``manifest``."""
    if not isinstance(signing_key, nacl.signing.SigningKey):
        raise TypeError("signing_key must be a nacl.signing.SigningKey")
    return signing_key.sign(manifest.signed_bytes()).signature


def seal_manifest(
    manifest: Manifest, signing_key: nacl.signing.SigningKey, case_recipient: Recipient
) -> bytes:
    """Return an age file (to ``case_recipient``) holding ``manifest`` and its signature."""
    if not isinstance(manifest, Manifest):
        raise TypeError("manifest must be a Manifest")
    signature = sign_manifest(manifest, signing_key)
    payload = canonicalize(
        {
            "format": SIGNED_FORMAT,
            "manifest": manifest.to_json_obj(),
            "signature": base64.b64encode(signature).decode("ascii"),
        }
    )
    return encrypt(payload, [case_recipient])


VerifyKeyLookup = Callable[[str], "nacl.signing.VerifyKey | bytes | None"]


def open_manifest(
    sealed: bytes,
    case_identity: Identity,
    uploader_verify_key_lookup: VerifyKeyLookup,
    *,
    case_id: str | None = None,
    epoch: int | None = None,
) -> Manifest:
    """Return the manifest in ``sealed`` after verifying its uploader's signature.

    ``uploader_verify_key_lookup(participant_id)`` returns that participant's
    Ed25519 key (``VerifyKey`` or 32 raw bytes), or ``None`` when unknown.
    When ``case_id``/``epoch`` are given they must match the manifest.
    Raises the age errors for decryption failures, :class:`ManifestError` for
    a malformed manifest, :class:`ManifestSignatureError` for a bad signature
    or unknown uploader and :class:`ManifestMismatch` for a case/epoch mismatch.
    """
    if not isinstance(sealed, bytes):
        raise TypeError(f"sealed must be bytes, found {type(sealed).__name__}")
    if len(sealed) > MAX_SEALED_BYTES:
        raise ManifestError(
            f"sealed manifest is {len(sealed)} bytes, expected at most {MAX_SEALED_BYTES}"
        )
    payload = decrypt(sealed, [case_identity])
    try:
        doc = loads_strict(payload, what="sealed manifest", max_bytes=MAX_SEALED_BYTES)
    except BundleError as err:
        raise ManifestError(str(err)) from None
    if not isinstance(doc, dict) or set(doc) != {"format", "manifest", "signature"}:
        raise ManifestError("sealed manifest must be an object with format, manifest, signature")
    if doc["format"] != SIGNED_FORMAT:
        raise ManifestError(
            f"sealed manifest format is {doc['format']!r:.60}, expected {SIGNED_FORMAT!r}"
        )
    manifest = Manifest.from_json_obj(doc["manifest"])
    signature = _decode_signature(doc["signature"])
    key = uploader_verify_key_lookup(manifest.uploader)
    if key is None:
        raise ManifestSignatureError(f"uploader {manifest.uploader!r} is not a known participant")
    if isinstance(key, nacl.signing.VerifyKey):
        verify_key = key
    elif isinstance(key, bytes):
        # The lookup reads a key store the server may have damaged or forged:
        # a key of the wrong size is a signature failure, not a pynacl traceback.
        if len(key) != nacl.bindings.crypto_sign_PUBLICKEYBYTES:
            raise ManifestSignatureError(
                f"the key on record for uploader {manifest.uploader!r} is {len(key)} bytes, "
                f"expected a {nacl.bindings.crypto_sign_PUBLICKEYBYTES}-byte Ed25519 key"
            )
        verify_key = nacl.signing.VerifyKey(key)
    else:
        raise TypeError(
            f"uploader_verify_key_lookup must return VerifyKey, bytes or None, "
            f"found {type(key).__name__}"
        )
    try:
        verify_key.verify(manifest.signed_bytes(), signature)
    except nacl.exceptions.BadSignatureError:
        raise ManifestSignatureError(
            f"manifest signature does not verify under the key of uploader {manifest.uploader!r}"
        ) from None
    if case_id is not None and manifest.case_id != case_id:
        raise ManifestMismatch(
            f"manifest is for case {manifest.case_id!r:.60}, expected {case_id!r:.60}",
            field="case_id", expected=case_id, found=manifest.case_id,
        )
    if epoch is not None and manifest.epoch != epoch:
        raise ManifestMismatch(
            f"manifest is for epoch {manifest.epoch}, expected {epoch}",
            field="epoch", expected=epoch, found=manifest.epoch,
        )
    return manifest


def _decode_signature(value: object) -> bytes:
    if isinstance(value, str):
        try:
            raw = b64decode_canonical(value)
        except StrictDecodeError:
            raw = b""
        if len(raw) == SIGNATURE_SIZE:
            return raw
    raise ManifestError("manifest signature is not 64 bytes of canonical base64")


def _hex(value: str | bytes) -> str:
    return value.hex() if isinstance(value, bytes) else value.lower()


def verify_against(
    manifest: Manifest,
    *,
    ciphertext_sha256: str | bytes | None = None,
    plaintext_sha256: str | bytes | None = None,
    ciphertext_size: int | None = None,
    plaintext_size: int | None = None,
) -> None:
    """Return ``None`` if every given measurement matches ``manifest``, else raise.

    Hashes are hex strings or raw digests. Raises :class:`ManifestMismatch`
    naming the first field that differs, with the expected and found values.
    """
    checks: list[tuple[str, object, object]] = []
    if ciphertext_size is not None:
        checks.append(("ciphertext_size", manifest.ciphertext_size, ciphertext_size))
    if ciphertext_sha256 is not None:
        checks.append(("ciphertext_sha256", manifest.ciphertext_sha256, _hex(ciphertext_sha256)))
    if plaintext_size is not None:
        checks.append(("plaintext_size", manifest.plaintext_size, plaintext_size))
    if plaintext_sha256 is not None:
        checks.append(("plaintext_sha256", manifest.plaintext_sha256, _hex(plaintext_sha256)))
    if not checks:
        raise ValueError("verify_against needs at least one measurement")
    for name, expected, found in checks:
        same = (
            hmac.compare_digest(str(expected).encode(), str(found).encode())
            if name.endswith("sha256")
            else expected == found
        )
        if not same:
            raise ManifestMismatch(
                f"{name} mismatch: manifest says {expected!r}, found {found!r:.80}",
                field=name, expected=expected, found=found,
            )
