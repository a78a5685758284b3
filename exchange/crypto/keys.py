"""Participant identities, public bundles and fingerprints (DESIGN.md decision 2).

A participant identity is an Ed25519 signing key (pynacl) plus an age X25519
identity and, optionally, an age hybrid post-quantum identity. Its public half
is a :class:`PublicBundle`, a small JSON document an administrator receives at
enrolment and compares, by reading the fingerprint aloud, with the owner.

Fingerprint design (``exchange-fingerprint/v1``)::

    digest = SHA-256( LABEL || 0x0a || JCS(object) )
    text   = base32(digest[:20])  grouped as XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX-XXXX

where ``LABEL`` names what is fingerprinted (``exchange-fingerprint/v1/bundle``,
``.../ed25519``, ``.../age``, ``.../age-pq``) so that a value of one kind can
never be confused with another, and ``JCS`` is RFC 8785 canonical JSON. The
bundle fingerprint covers the participant id and every public key (not the
display name, which is cosmetic and may change). 160 bits keep a targeted
second preimage out of reach; RFC 4648 base32 (A-Z, 2-7) has no 0/O or 1/I
confusion and reads well aloud in groups of four.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical, loads_json
from exchange.crypto.age import (
    AgeError,
    HybridIdentity,
    HybridRecipient,
    Recipient,
    X25519Identity,
    X25519Recipient,
)
from exchange.crypto.jcs import canonicalize
from exchange.errors import CryptoError

__all__ = [
    "BUNDLE_FORMAT",
    "BundleError",
    "ParticipantIdentity",
    "PublicBundle",
    "fingerprint",
    "parse_bundle",
    "validate_participant_id",
]

BUNDLE_FORMAT = "exchange-bundle/v1"
FINGERPRINT_LABEL = "exchange-fingerprint/v1"
FINGERPRINT_BYTES = 20  # 160 bits, 32 base32 characters
SIGNING_KEY_SIZE = 32  # Ed25519 public key / seed (RFC 8032)
MAX_BUNDLE_BYTES = 64 * 1024  # a PQ recipient is ~2 KB; anything near this is hostile
MAX_DISPLAY_NAME_CHARS = 200

# Participant ids appear in URLs, HTTP signature key ids and audit entries, so
# they are a small, case-folded ASCII alphabet.
_PARTICIPANT_ID = re.compile(r"[a-z0-9](?:[a-z0-9._@-]{0,62}[a-z0-9])?")
_BUNDLE_FIELDS = frozenset(
    {"format", "id", "display_name", "signing_key", "age_recipient", "pq_recipient",
     "fingerprints", "possession"}
)
#: Domain label of a proof of possession (the new keys' own signature on id + fingerprint).
POSSESSION_LABEL = b"exchange-key-possession/v1\n"


class BundleError(CryptoError, ValueError):
    """A public bundle (or one of its fields) is malformed or inconsistent."""


def validate_participant_id(value: object, *, what: str = "participant id") -> str:
    """Return ``value`` if it is a valid participant id, else raise :class:`BundleError`.

    Ids are 1-64 characters of ``a-z 0-9 . _ @ -``, starting and ending with a
    letter or digit.
    """
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a string, found {type(value).__name__}")
    if not _PARTICIPANT_ID.fullmatch(value):
        raise BundleError(
            f"{what} {value!r:.80} is invalid: expected 1-64 characters of a-z 0-9 . _ @ -, "
            "starting and ending with a letter or digit"
        )
    return value


def _validate_display_name(value: object) -> str:
    if not isinstance(value, str):
        raise BundleError(f"display_name must be a string, found {type(value).__name__}")
    if not value.strip():
        raise BundleError("display_name must not be empty")
    if len(value) > MAX_DISPLAY_NAME_CHARS:
        raise BundleError(
            f"display_name is {len(value)} characters, expected at most {MAX_DISPLAY_NAME_CHARS}"
        )
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Cs"):
            raise BundleError(f"display_name {value!r:.80} contains a control character")
    return value


def _group(digest: bytes) -> str:
    text = base64.b32encode(digest[:FINGERPRINT_BYTES]).decode("ascii")
    return "-".join(text[i : i + 4] for i in range(0, len(text), 4))


def fingerprint(kind: str, value: object) -> str:
    """Return the grouped base32 fingerprint of ``value`` under the label ``kind``.

    ``value`` must be JCS-encodable (see the module docstring for the layout).
    Different ``kind`` labels give unrelated fingerprints for the same value.
    """
    if not re.fullmatch(r"[a-z0-9-]+", kind):
        raise ValueError(f"fingerprint kind {kind!r:.40} must be lowercase letters, digits, -")
    label = f"{FINGERPRINT_LABEL}/{kind}\n".encode("ascii")
    return _group(hashlib.sha256(label + canonicalize(value)).digest())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _strict_b64(text: object, what: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise BundleError(f"{what} must be a base64 string, found {type(text).__name__}")
    try:
        raw = b64decode_canonical(text)
    except StrictDecodeError as err:
        raise BundleError(f"{what} {text!r:.60} is {err}") from None
    if len(raw) != size:
        raise BundleError(f"{what} decodes to {len(raw)} bytes, expected {size}")
    return raw


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicBundle:
    """The public half of a participant identity, as handed to an administrator.

    Every field is validated on construction, so an instance is always
    well-formed. ``fingerprints`` is derived from the keys, never trusted from
    input: :func:`parse_bundle` rejects a document whose stated fingerprints
    disagree with its keys.
    """

    id: str
    display_name: str
    signing_key: bytes
    age_recipient: str
    pq_recipient: str | None = None
    fingerprints: Mapping[str, str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        validate_participant_id(self.id)
        _validate_display_name(self.display_name)
        if not isinstance(self.signing_key, bytes):
            raise BundleError(
                f"signing_key must be bytes, found {type(self.signing_key).__name__}"
            )
        if len(self.signing_key) != SIGNING_KEY_SIZE:
            raise BundleError(
                f"signing_key is {len(self.signing_key)} bytes, expected {SIGNING_KEY_SIZE}"
            )
        _check_recipient(self.age_recipient, "age_recipient", X25519Recipient)
        if self.pq_recipient is not None:
            _check_recipient(self.pq_recipient, "pq_recipient", HybridRecipient)
        prints = {
            "bundle": fingerprint("bundle", self._fingerprint_object()),
            "signing_key": fingerprint("ed25519", _b64(self.signing_key)),
            "age_recipient": fingerprint("age", self.age_recipient),
        }
        if self.pq_recipient is not None:
            prints["pq_recipient"] = fingerprint("age-pq", self.pq_recipient)
        object.__setattr__(self, "fingerprints", prints)

    def _fingerprint_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "signing_key": _b64(self.signing_key),
            "age_recipient": self.age_recipient,
            "pq_recipient": self.pq_recipient,
        }

    @property
    def fingerprint(self) -> str:
        """The one overall fingerprint to read aloud (id and every public key)."""
        return self.fingerprints["bundle"]

    def verify_key(self) -> nacl.signing.VerifyKey:
        """Return the Ed25519 verification key."""
        return nacl.signing.VerifyKey(self.signing_key)

    def recipient(self) -> Recipient:
        """Return the recipient to encrypt to: the hybrid PQ one when present, else X25519."""
        if self.pq_recipient is not None:
            return HybridRecipient.parse(self.pq_recipient)
        return X25519Recipient.parse(self.age_recipient)

    def to_json_obj(self) -> dict[str, Any]:
        """Return the bundle as a JSON-ready dict (keys base64, fingerprints included)."""
        return {
            "format": BUNDLE_FORMAT,
            "id": self.id,
            "display_name": self.display_name,
            "signing_key": _b64(self.signing_key),
            "age_recipient": self.age_recipient,
            "pq_recipient": self.pq_recipient,
            "fingerprints": dict(self.fingerprints),
        }

    def encode(self) -> bytes:
        """Return the bundle as indented UTF-8 JSON with a trailing newline."""
        text = json.dumps(self.to_json_obj(), indent=2, ensure_ascii=False)
        return (text + "\n").encode("utf-8")


def _check_recipient(
    value: object, what: str, kind: type[X25519Recipient | HybridRecipient]
) -> None:
    if not isinstance(value, str):
        raise BundleError(f"{what} must be a string, found {type(value).__name__}")
    try:
        parsed = kind.parse(value)
    except AgeError as err:
        raise BundleError(f"{what} {value!r:.60} is not a valid recipient: {err}") from None
    if parsed.to_string() != value:
        raise BundleError(f"{what} {value!r:.60} is not in canonical (lowercase) form")


def loads_strict(data: bytes | str, *, what: str, max_bytes: int) -> Any:
    """Return parsed JSON, refusing oversize input, bad UTF-8, duplicate keys and NaN.

    Raises :class:`BundleError`; callers re-raise their own error type. The
    rules are :func:`exchange.crypto._strict.loads_json`'s.
    """
    try:
        return loads_json(data, what=what, max_bytes=max_bytes)
    except StrictDecodeError as err:
        raise BundleError(str(err)) from None


def bundle_from_json_obj(obj: object) -> PublicBundle:
    """Return the bundle described by a decoded JSON object, validating every field."""
    if not isinstance(obj, dict):
        raise BundleError(f"bundle must be a JSON object, found {type(obj).__name__}")
    unknown = sorted(set(obj) - _BUNDLE_FIELDS)
    if unknown:
        raise BundleError(f"bundle has unknown field {unknown[0]!r:.40}")
    for name in ("format", "id", "display_name", "signing_key", "age_recipient"):
        if name not in obj:
            raise BundleError(f"bundle is missing the field {name!r}")
    if obj["format"] != BUNDLE_FORMAT:
        raise BundleError(f"bundle format is {obj['format']!r:.60}, expected {BUNDLE_FORMAT!r}")
    bundle = PublicBundle(
        id=obj["id"],
        display_name=obj["display_name"],
        signing_key=_strict_b64(obj["signing_key"], "signing_key", SIGNING_KEY_SIZE),
        age_recipient=obj["age_recipient"],
        pq_recipient=obj.get("pq_recipient"),
    )
    if "fingerprints" in obj:
        stated = obj["fingerprints"]
        if not isinstance(stated, dict) or not all(isinstance(v, str) for v in stated.values()):
            raise BundleError("fingerprints must be an object of strings")
        if stated != dict(bundle.fingerprints):
            raise BundleError(
                "bundle fingerprints do not match its keys: the document was altered"
            )
    return bundle


def parse_bundle(data: bytes | str) -> PublicBundle:
    """Return the :class:`PublicBundle` in a JSON document, or raise :class:`BundleError`."""
    return bundle_from_json_obj(loads_strict(data, what="bundle", max_bytes=MAX_BUNDLE_BYTES))


class ParticipantIdentity:
    """A participant's private keys: Ed25519 signing, age X25519 and optional hybrid PQ.

    The repr names the participant and fingerprint only; private keys never
    appear in reprs or exceptions.
    """

    __slots__ = ("_bundle", "age_identity", "display_name", "id", "pq_identity", "signing_key")

    def __init__(
        self,
        *,
        id: str,
        display_name: str,
        signing_key: nacl.signing.SigningKey,
        age_identity: X25519Identity,
        pq_identity: HybridIdentity | None = None,
    ) -> None:
        if not isinstance(signing_key, nacl.signing.SigningKey):
            raise TypeError("signing_key must be a nacl.signing.SigningKey")
        if not isinstance(age_identity, X25519Identity):
            raise TypeError("age_identity must be an X25519Identity")
        if pq_identity is not None and not isinstance(pq_identity, HybridIdentity):
            raise TypeError("pq_identity must be a HybridIdentity or None")
        self.id = id
        self.display_name = display_name
        self.signing_key = signing_key
        self.age_identity = age_identity
        self.pq_identity = pq_identity
        self._bundle = PublicBundle(
            id=id,
            display_name=display_name,
            signing_key=bytes(signing_key.verify_key),
            age_recipient=age_identity.recipient().to_string(),
            pq_recipient=None if pq_identity is None else pq_identity.recipient().to_string(),
        )

    @classmethod
    def generate(
        cls, id: str, display_name: str | None = None, *, pq: bool = False
    ) -> ParticipantIdentity:
        """Return a fresh identity with new random keys (hybrid PQ too when ``pq``)."""
        return cls(
            id=id,
            display_name=id if display_name is None else display_name,
            signing_key=nacl.signing.SigningKey.generate(),
            age_identity=X25519Identity.generate(),
            pq_identity=HybridIdentity.generate() if pq else None,
        )

    def public_bundle(self) -> PublicBundle:
        """Return the public half of this identity."""
        return self._bundle

    def age_identities(self) -> list[X25519Identity | HybridIdentity]:
        """Return the age identities to try when decrypting (PQ first when present)."""
        if self.pq_identity is None:
            return [self.age_identity]
        return [self.pq_identity, self.age_identity]

    def possession_proof(self) -> bytes:
        """Return this identity's proof of possession: its signature on id and fingerprint."""
        return self.signing_key.sign(possession_message(self._bundle)).signature

    def bundle_document(self) -> bytes:
        """Return the bundle file handed to an administrator, with the proof of possession.

        Enrolment and key-change statements carry the proof, so an
        administrator cannot enrol keys their holder never asked to have.
        """
        obj = self._bundle.to_json_obj()
        obj["possession"] = _b64(self.possession_proof())
        return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def __repr__(self) -> str:
        return f"ParticipantIdentity(id={self.id!r}, fingerprint={self._bundle.fingerprint!r})"


def possession_message(bundle: PublicBundle) -> bytes:
    """Return the bytes a proof of possession signs (label, then JCS of id and fingerprint)."""
    return POSSESSION_LABEL + canonicalize({"id": bundle.id, "fingerprint": bundle.fingerprint})


def bundle_possession(obj: object) -> bytes | None:
    """Return the proof of possession of a bundle document (None when it has none)."""
    value = obj.get("possession") if isinstance(obj, dict) else None
    if value is None:
        return None
    return _strict_b64(value, "possession", 64)


def verify_possession(bundle: PublicBundle, proof: bytes) -> bool:
    """True when ``proof`` is the bundle's own signing key's signature on its id and keys.

    Memoised (a pure function of its bytes): chain replays check every
    enrolment's proof again, see ``parse_signed_statement``.
    """
    return _possession_verifies(bytes(bundle.signing_key), possession_message(bundle),
                                bytes(proof))


@functools.lru_cache(maxsize=4096)
def _possession_verifies(key: bytes, message: bytes, proof: bytes) -> bool:
    try:
        nacl.signing.VerifyKey(key).verify(message, proof)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
            nacl.exceptions.TypeError):
        return False
    return True


def signing_key_from_seed(seed: bytes) -> nacl.signing.SigningKey:
    """Return the Ed25519 signing key for a 32-byte seed (RFC 8032 private key)."""
    if len(seed) != SIGNING_KEY_SIZE:
        raise ValueError(f"signing seed is {len(seed)} bytes, expected {SIGNING_KEY_SIZE}")
    try:
        return nacl.signing.SigningKey(seed)
    except nacl.exceptions.CryptoError:  # pragma: no cover - any 32 bytes are a valid seed
        raise ValueError("invalid signing seed") from None
