"""Keystore format ``exchange-keystore/v1``: a participant's private keys under a passphrase.

Pure encode/decode (files are written by :mod:`exchange.keyfiles`). Argon2id
(RFC 9106, argon2-cffi) stretches the passphrase; HKDF-SHA256 (RFC 5869)
derives from it a passphrase check value and an XChaCha20-Poly1305 key
(libsodium via pynacl). The document is UTF-8 JSON (written with ``format`` first)::

    {"format": "exchange-keystore/v1",
     "kdf": {"name": "argon2id", "version": 19, "time_cost": 3,
             "memory_kib": 262144, "parallelism": 4, "salt": b64(16)},
     "aead": {"name": "xchacha20poly1305", "nonce": b64(24)},
     "public": <the public bundle, readable without the passphrase>,
     "check": b64(16),       # HKDF(master, "check"): tells a wrong passphrase apart
     "ciphertext": b64(...), # AEAD(secrets JSON), AAD = JCS(format, kdf, aead, public)
     "checksum": hex(SHA-256(JCS(everything else)))}

Why each part: the header (format, parameters, salt, nonce, public bundle) is
authenticated as AAD, so no part can be swapped without detection. The
``check`` value lets us say "wrong passphrase" rather than "damaged file"; it
gives an attacker nothing new, since every guess still costs one Argon2 run.
The unkeyed ``checksum`` catches accidental damage or naive edits (altered
parameters would otherwise look like a wrong passphrase) before Argon2 runs.
Argon2 parameters are bounded before use, so a hostile file cannot make us
allocate or compute without limit.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import unicodedata
from dataclasses import dataclass
from typing import Any

import nacl.bindings
import nacl.exceptions
from argon2.exceptions import HashingError
from argon2.low_level import ARGON2_VERSION, Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.crypto.age import AgeError, HybridIdentity, X25519Identity
from exchange.crypto.jcs import CanonicalizationError, canonicalize
from exchange.crypto.keys import (
    BundleError,
    ParticipantIdentity,
    PublicBundle,
    bundle_from_json_obj,
    loads_strict,
    signing_key_from_seed,
)
from exchange.errors import CryptoError

__all__ = [
    "DEFAULT_PARAMS",
    "KEYSTORE_FORMAT",
    "Argon2Params",
    "KeystoreCorrupt",
    "KeystoreError",
    "KeystoreTooWeak",
    "WrongPassphrase",
    "change_passphrase",
    "check_strength",
    "is_keystore",
    "keystore_params",
    "open_keystore",
    "read_public_bundle",
    "reseal_keystore",
    "seal_keystore",
]

KEYSTORE_FORMAT = "exchange-keystore/v1"
SECRETS_FORMAT = "exchange-keystore-secrets/v1"
SALT_SIZE = 16  # RFC 9106 §3.1: 128-bit salt
NONCE_SIZE = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
KEY_SIZE = 32
CHECK_SIZE = 16
MAX_KEYSTORE_BYTES = 256 * 1024
# Upper bounds checked before Argon2 runs: about 4 s and 1 GiB at worst on a laptop.
MAX_TIME_COST = 8
MAX_MEMORY_KIB = 1024 * 1024
MAX_PARALLELISM = 16

_FILE_ORDER = ("format", "public", "kdf", "aead", "check", "ciphertext", "checksum")
_TOP_FIELDS = frozenset(_FILE_ORDER)
_KDF_FIELDS = frozenset({"name", "version", "time_cost", "memory_kib", "parallelism", "salt"})
_AEAD_FIELDS = frozenset({"name", "nonce"})


class KeystoreError(CryptoError):
    """The keystore cannot be opened."""

    http_status = 400
    problem_type = "keystore"


class WrongPassphrase(KeystoreError):
    """The passphrase does not open this keystore."""


class KeystoreCorrupt(KeystoreError):
    """The keystore file is malformed, damaged, altered or has unacceptable parameters."""


class KeystoreTooWeak(KeystoreError):
    """The keystore's Argon2id cost is below the minimum asked for (what ``keygen`` writes)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Argon2Params:
    """Argon2id cost parameters (RFC 9106 §3.1 names: t, m in KiB, p)."""

    time_cost: int = 3
    memory_kib: int = 256 * 1024
    parallelism: int = 4

    def __post_init__(self) -> None:
        for name in ("time_cost", "memory_kib", "parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, found {type(value).__name__}")
        if self.time_cost < 1 or self.parallelism < 1:
            raise ValueError("time_cost and parallelism must be at least 1")
        if self.memory_kib < 8 * self.parallelism:
            raise ValueError(
                f"memory_kib {self.memory_kib} is below 8 × parallelism ({8 * self.parallelism})"
            )

    def check_bounds(self) -> None:
        """Raise :class:`KeystoreCorrupt` if running Argon2 with these would be unreasonable."""
        if self.time_cost > MAX_TIME_COST:
            raise KeystoreCorrupt(
                f"argon2 time_cost {self.time_cost} exceeds the limit of {MAX_TIME_COST}"
            )
        if self.memory_kib > MAX_MEMORY_KIB:
            raise KeystoreCorrupt(
                f"argon2 memory {self.memory_kib} KiB exceeds the limit of {MAX_MEMORY_KIB} KiB"
            )
        if self.parallelism > MAX_PARALLELISM:
            raise KeystoreCorrupt(
                f"argon2 parallelism {self.parallelism} exceeds the limit of {MAX_PARALLELISM}"
            )


# RFC 9106 §4 second recommended option is t=3, p=4, m=64 MiB; we use 256 MiB
# (about 0.5 s on the reference machine) since keystores are opened rarely.
DEFAULT_PARAMS = Argon2Params()


def check_strength(data: bytes, minimum: Argon2Params = DEFAULT_PARAMS) -> Argon2Params:
    """Return the keystore's Argon2id parameters; raise :class:`KeystoreTooWeak` below ``minimum``.

    Time cost and memory are what an offline guesser pays per passphrase;
    parallelism only spreads that work, so it is not compared. Runs before
    any passphrase is asked for or Argon2 is run. A malformed document raises
    :class:`KeystoreCorrupt` as :func:`open_keystore` would.
    """
    params = _parse_document(data)[2]
    if params.time_cost < minimum.time_cost or params.memory_kib < minimum.memory_kib:
        raise KeystoreTooWeak(
            f"the keystore's Argon2id cost (t={params.time_cost}, m={params.memory_kib} KiB) "
            f"is below what keygen writes (t={minimum.time_cost}, "
            f"m={minimum.memory_kib} KiB): a stolen copy would be cheap to guess"
        )
    return params


def reseal_keystore(data: bytes, passphrase: str | bytes, *,
                    params: Argon2Params = DEFAULT_PARAMS) -> bytes:
    """Return the keystore ``data`` re-encrypted under the same passphrase with ``params``.

    Opens it first (whatever its cost), so a wrong passphrase changes nothing.
    """
    return seal_keystore(open_keystore(data, passphrase), passphrase, params=params)


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        # NFC so the same passphrase typed on different systems gives the same bytes.
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    if isinstance(passphrase, bytes):
        return passphrase
    raise TypeError(f"passphrase must be str or bytes, found {type(passphrase).__name__}")


def _derive(passphrase: bytes, salt: bytes, params: Argon2Params) -> tuple[bytes, bytes]:
    """Return (check value, AEAD key) for a passphrase; runs Argon2id once."""
    try:
        master = hash_secret_raw(
            passphrase, salt, params.time_cost, params.memory_kib, params.parallelism,
            KEY_SIZE, Type.ID, ARGON2_VERSION,
        )
    except HashingError:
        raise KeystoreCorrupt("argon2 refused the keystore parameters") from None

    def expand(info: bytes, length: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(master)

    return expand(b"exchange-keystore/v1 check", CHECK_SIZE), expand(
        b"exchange-keystore/v1 aead key", KEY_SIZE
    )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: object, what: str, size: int | None = None) -> bytes:
    if not isinstance(value, str):
        raise KeystoreCorrupt(f"keystore {what} must be a base64 string")
    try:
        raw = b64decode_canonical(value)
    except StrictDecodeError as err:
        raise KeystoreCorrupt(f"keystore {what} is {err}") from None
    if size is not None and len(raw) != size:
        raise KeystoreCorrupt(f"keystore {what} is {len(raw)} bytes, expected {size}")
    return raw


def _checksum(doc: dict[str, Any]) -> str:
    body = {k: v for k, v in doc.items() if k != "checksum"}
    return hashlib.sha256(canonicalize(body)).hexdigest()


def _aad(doc: dict[str, Any]) -> bytes:
    return canonicalize({k: doc[k] for k in ("format", "kdf", "aead", "public")})


def seal_keystore(
    identity: ParticipantIdentity, passphrase: str | bytes, *, params: Argon2Params = DEFAULT_PARAMS
) -> bytes:
    """Return the keystore document holding ``identity`` encrypted under ``passphrase``.

    ``params`` below :data:`DEFAULT_PARAMS` are for tests only. Raises
    ``ValueError`` for an empty passphrase.
    """
    if not isinstance(identity, ParticipantIdentity):
        raise TypeError("identity must be a ParticipantIdentity")
    if not isinstance(params, Argon2Params):
        raise TypeError("params must be Argon2Params")
    secret = _passphrase_bytes(passphrase)
    if not secret:
        raise ValueError("passphrase must not be empty")
    salt = os.urandom(SALT_SIZE)
    nonce = os.urandom(NONCE_SIZE)
    check, key = _derive(secret, salt, params)
    doc: dict[str, Any] = {
        "format": KEYSTORE_FORMAT,
        "kdf": {
            "name": "argon2id",
            "version": ARGON2_VERSION,
            "time_cost": params.time_cost,
            "memory_kib": params.memory_kib,
            "parallelism": params.parallelism,
            "salt": _b64(salt),
        },
        "aead": {"name": "xchacha20poly1305", "nonce": _b64(nonce)},
        "public": identity.public_bundle().to_json_obj(),
    }
    secrets = {
        "format": SECRETS_FORMAT,
        "signing_seed": _b64(bytes(identity.signing_key)),
        "age_identity": identity.age_identity.to_string(),
        "pq_identity": None if identity.pq_identity is None else identity.pq_identity.to_string(),
    }
    ciphertext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        canonicalize(secrets), _aad(doc), nonce, key
    )
    doc["check"] = _b64(check)
    doc["ciphertext"] = _b64(ciphertext)
    doc["checksum"] = _checksum(doc)
    # Written in a fixed, readable order with the format first (so a damaged
    # file is still recognised); integrity never depends on this layout, as
    # the AAD and checksum are computed over the canonical (JCS) form.
    ordered = {name: doc[name] for name in _FILE_ORDER}
    return (json.dumps(ordered, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _parse_document(data: bytes) -> tuple[dict[str, Any], PublicBundle, Argon2Params]:
    if not isinstance(data, bytes):
        raise TypeError(f"keystore data must be bytes, found {type(data).__name__}")
    try:
        doc = loads_strict(data, what="keystore", max_bytes=MAX_KEYSTORE_BYTES)
    except BundleError as err:
        raise KeystoreCorrupt(f"{err} (truncated or damaged file?)") from None
    if not isinstance(doc, dict):
        raise KeystoreCorrupt("keystore is not a JSON object")
    if doc.get("format") != KEYSTORE_FORMAT:
        raise KeystoreCorrupt(
            f"keystore format is {doc.get('format')!r:.60}, expected {KEYSTORE_FORMAT!r}"
        )
    if set(doc) != _TOP_FIELDS:
        missing = sorted(_TOP_FIELDS - set(doc))
        extra = sorted(set(doc) - _TOP_FIELDS)
        detail = f"missing {missing[0]!r}" if missing else f"unknown field {extra[0]!r:.40}"
        raise KeystoreCorrupt(f"keystore fields are wrong: {detail}")
    try:
        expected_checksum = _checksum(doc)
    except CanonicalizationError:
        raise KeystoreCorrupt("keystore contains values outside canonical JSON") from None
    if not isinstance(doc["checksum"], str) or not hmac.compare_digest(
        doc["checksum"].encode(), expected_checksum.encode()
    ):
        raise KeystoreCorrupt("keystore checksum mismatch: the file was altered or damaged")
    kdf, aead = doc["kdf"], doc["aead"]
    if not isinstance(kdf, dict) or set(kdf) != _KDF_FIELDS:
        raise KeystoreCorrupt(f"keystore kdf must be an object with fields {sorted(_KDF_FIELDS)}")
    if kdf["name"] != "argon2id" or kdf["version"] != ARGON2_VERSION:
        raise KeystoreCorrupt(
            f"keystore kdf is {kdf['name']!r:.30} version {kdf['version']!r:.10}, "
            f"expected 'argon2id' version {ARGON2_VERSION}"
        )
    if not isinstance(aead, dict) or set(aead) != _AEAD_FIELDS:
        raise KeystoreCorrupt(f"keystore aead must be an object with fields {sorted(_AEAD_FIELDS)}")
    if aead["name"] != "xchacha20poly1305":
        raise KeystoreCorrupt(
            f"keystore aead is {aead['name']!r:.30}, expected 'xchacha20poly1305'"
        )
    try:
        params = Argon2Params(
            time_cost=kdf["time_cost"], memory_kib=kdf["memory_kib"],
            parallelism=kdf["parallelism"],
        )
    except (TypeError, ValueError) as err:
        raise KeystoreCorrupt(f"keystore argon2 parameters are invalid: {err}") from None
    params.check_bounds()
    try:
        bundle = bundle_from_json_obj(doc["public"])
    except BundleError as err:
        raise KeystoreCorrupt(f"keystore public bundle is invalid: {err}") from None
    return doc, bundle, params


def is_keystore(data: bytes) -> bool:
    """Return whether ``data`` looks like a keystore document (cheap sniff, no validation)."""
    head = data[:256]
    return head.lstrip()[:1] == b"{" and f'"{KEYSTORE_FORMAT}"'.encode() in head


def read_public_bundle(data: bytes) -> PublicBundle:
    """Return the public bundle of a keystore without the passphrase (no Argon2 run).

    The bundle is only authenticated by :func:`open_keystore`; this is for
    display and enrolment, where the fingerprint is what gets compared.
    """
    return _parse_document(data)[1]


def open_keystore(data: bytes, passphrase: str | bytes) -> ParticipantIdentity:
    """Return the identity in a keystore document.

    Raises :class:`WrongPassphrase` when the passphrase is wrong and
    :class:`KeystoreCorrupt` for anything malformed, damaged, altered or
    outside the parameter bounds (checked before Argon2 runs).
    """
    doc, bundle, params = _parse_document(data)
    salt = _unb64(doc["kdf"]["salt"], "salt", SALT_SIZE)
    nonce = _unb64(doc["aead"]["nonce"], "nonce", NONCE_SIZE)
    stored_check = _unb64(doc["check"], "check value", CHECK_SIZE)
    ciphertext = _unb64(doc["ciphertext"], "ciphertext")
    check, key = _derive(_passphrase_bytes(passphrase), salt, params)
    if not hmac.compare_digest(check, stored_check):
        raise WrongPassphrase("wrong passphrase for this keystore")
    try:
        plaintext = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
            ciphertext, _aad(doc), nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise KeystoreCorrupt(
            "keystore failed authentication although the passphrase is right: "
            "the file was altered or damaged"
        ) from None
    return _identity_from_secrets(plaintext, bundle)


def keystore_params(data: bytes) -> Argon2Params:
    """Return the Argon2id parameters a keystore was sealed with (no passphrase needed)."""
    return _parse_document(data)[2]


def change_passphrase(
    data: bytes, old: str | bytes, new: str | bytes, *, params: Argon2Params = DEFAULT_PARAMS
) -> bytes:
    """Return the keystore ``data`` re-sealed under ``new`` (fresh salt and nonce, ``params``).

    Opening under ``old`` first proves the caller holds the current
    passphrase (:class:`WrongPassphrase` otherwise); re-sealing with the
    current :data:`DEFAULT_PARAMS` is how an old keystore's Argon2 cost is
    brought up to date. The identity inside is unchanged, so its public
    bundle and fingerprint stay the same.
    """
    return seal_keystore(open_keystore(data, old), new, params=params)


def _identity_from_secrets(plaintext: bytes, bundle: PublicBundle) -> ParticipantIdentity:
    # The ciphertext authenticated, so a failure here means we wrote a bad file
    # or someone holding the passphrase did; messages never include the secrets.
    try:
        secrets = loads_strict(plaintext, what="keystore secrets", max_bytes=MAX_KEYSTORE_BYTES)
        if not isinstance(secrets, dict) or secrets.get("format") != SECRETS_FORMAT:
            raise KeystoreCorrupt("keystore secrets have an unknown format")
        seed = _unb64(secrets.get("signing_seed"), "signing seed", 32)
        age_text, pq_text = secrets.get("age_identity"), secrets.get("pq_identity")
        if not isinstance(age_text, str) or not (pq_text is None or isinstance(pq_text, str)):
            raise KeystoreCorrupt("keystore secrets have malformed age identities")
        identity = ParticipantIdentity(
            id=bundle.id,
            display_name=bundle.display_name,
            signing_key=signing_key_from_seed(seed),
            age_identity=X25519Identity.parse(age_text),
            pq_identity=None if pq_text is None else HybridIdentity.parse(pq_text),
        )
    except (AgeError, BundleError, ValueError):
        raise KeystoreCorrupt("keystore secrets are malformed") from None
    if identity.public_bundle() != bundle:
        raise KeystoreCorrupt("keystore private keys do not match its public bundle")
    return identity
