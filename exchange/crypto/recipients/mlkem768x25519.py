"""The mlkem768x25519 hybrid post-quantum recipient type of the C2SP age spec.

The file key is sealed with HPKE (RFC 9180) base mode using the MLKEM768-X25519
KEM (X-Wing, draft-ietf-hpke-pq; KEM id 0x647A), HKDF-SHA-256 and
ChaCha20-Poly1305, with info "age-encryption.org/mlkem768x25519". The HPKE
key schedule is built here from pyca primitives because pyca has no HPKE for
this KEM; it is a fixed composition, not a new primitive.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from exchange.crypto._age_errors import HeaderError
from exchange.crypto._format import Stanza, b64decode, b64encode
from exchange.crypto._primitives import FILE_KEY_SIZE
from exchange.crypto.recipients._keys import decode_key, encode_identity, encode_recipient

__all__ = ["STANZA_TYPE", "HybridIdentity", "HybridRecipient", "check_stanza"]

STANZA_TYPE = "mlkem768x25519"
IDENTITY_HRP = "age-secret-key-pq-"
RECIPIENT_HRP = "age1pq"
SEED_SIZE = 32
MLKEM_PUBLIC_SIZE = 1184
MLKEM_CIPHERTEXT_SIZE = 1088
X25519_SIZE = 32
PUBLIC_SIZE = MLKEM_PUBLIC_SIZE + X25519_SIZE  # 1216
ENC_SIZE = MLKEM_CIPHERTEXT_SIZE + X25519_SIZE  # 1120
WRAPPED_SIZE = FILE_KEY_SIZE + 16
_HPKE_INFO = b"age-encryption.org/mlkem768x25519"
_XWING_LABEL = b"\\.//^\\"  # bytes 5c 2e 2f 2f 5e 5c
# suite_id = "HPKE" || KEM 0x647A || KDF 0x0001 (HKDF-SHA256) || AEAD 0x0003 (ChaCha20Poly1305)
_SUITE = b"HPKE\x64\x7a\x00\x01\x00\x03"


def check_stanza(stanza: Stanza) -> bytes:
    """Return the 1120-byte enc of a valid mlkem768x25519 stanza; raise :class:`HeaderError`."""
    if len(stanza.args) != 1:
        raise HeaderError(
            f"invalid mlkem768x25519 stanza: has {len(stanza.args)} arguments, want 1"
        )
    try:
        enc = b64decode(stanza.args[0])
    except ValueError as err:
        raise HeaderError(f"invalid mlkem768x25519 stanza: enc: {err}") from None
    if len(enc) != ENC_SIZE:
        raise HeaderError(
            f"invalid mlkem768x25519 stanza: enc is {len(enc)} bytes, want {ENC_SIZE}"
        )
    if len(stanza.body) != WRAPPED_SIZE:
        raise HeaderError(
            f"invalid mlkem768x25519 stanza: body is {len(stanza.body)} bytes, want {WRAPPED_SIZE}"
        )
    return enc


def _x25519(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        raise HeaderError(
            "invalid mlkem768x25519 stanza: X25519 share is a low-order point"
        ) from None


def _labeled_extract(salt: bytes, label: bytes, ikm: bytes) -> bytes:
    return HKDF.extract(hashes.SHA256(), salt, b"HPKE-v1" + _SUITE + label + ikm)


def _labeled_expand(prk: bytes, label: bytes, info: bytes, length: int) -> bytes:
    labeled = length.to_bytes(2, "big") + b"HPKE-v1" + _SUITE + label + info
    return HKDFExpand(hashes.SHA256(), length, labeled).derive(prk)


def _combine(ss_pq: bytes, ss_x: bytes, ct_x: bytes, pk_x: bytes) -> bytes:
    """Return the X-Wing shared secret SHA3-256(ss_M || ss_X || ct_X || pk_X || label)."""
    digest = hashes.Hash(hashes.SHA3_256())
    for part in (ss_pq, ss_x, ct_x, pk_x, _XWING_LABEL):
        digest.update(part)
    return digest.finalize()


def _aead(shared_secret: bytes) -> tuple[ChaCha20Poly1305, bytes]:
    """Return the HPKE base-mode AEAD and its first nonce (RFC 9180 §5.1)."""
    context = (
        b"\x00"
        + _labeled_extract(b"", b"psk_id_hash", b"")
        + _labeled_extract(b"", b"info_hash", _HPKE_INFO)
    )
    secret = _labeled_extract(shared_secret, b"secret", b"")
    key = _labeled_expand(secret, b"key", context, 32)
    nonce = _labeled_expand(secret, b"base_nonce", context, 12)
    return ChaCha20Poly1305(key), nonce


class HybridRecipient:
    """An ``age1pq1...`` ML-KEM-768 + X25519 public key (1216 bytes)."""

    __slots__ = ("_mlkem", "_public", "_x25519")

    def __init__(self, public: bytes) -> None:
        if not isinstance(public, bytes):
            raise TypeError("public key must be bytes")
        if len(public) != PUBLIC_SIZE:
            raise ValueError(f"hybrid public key must be {PUBLIC_SIZE} bytes, found {len(public)}")
        try:
            self._mlkem = MLKEM768PublicKey.from_public_bytes(public[:MLKEM_PUBLIC_SIZE])
        except ValueError:
            raise ValueError("hybrid public key has an invalid ML-KEM-768 part") from None
        self._x25519 = public[MLKEM_PUBLIC_SIZE:]
        self._public = public

    @classmethod
    def from_bytes(cls, public: bytes) -> HybridRecipient:
        """Return the recipient of a raw 1216-byte MLKEM768-X25519 public key."""
        return cls(public)

    def to_bytes(self) -> bytes:
        """Return the raw public key: ML-KEM-768 encapsulation key, then X25519 key."""
        return self._public

    @classmethod
    def parse(cls, text: str) -> HybridRecipient:
        """Return the recipient encoded as ``age1pq1...``; raise ``KeyFormatError``."""
        return cls(decode_key(text, RECIPIENT_HRP, PUBLIC_SIZE, secret=False))

    def to_string(self) -> str:
        """Return the ``age1pq1...`` encoding (about 1,960 characters)."""
        return encode_recipient(RECIPIENT_HRP, self._public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return one mlkem768x25519 stanza sealing ``file_key`` with HPKE."""
        ss_pq, ct_pq = self._mlkem.encapsulate()
        ephemeral = X25519PrivateKey.from_private_bytes(os.urandom(X25519_SIZE))
        ct_x = ephemeral.public_key().public_bytes_raw()
        ss_x = _x25519(ephemeral, self._x25519)
        aead, nonce = _aead(_combine(ss_pq, ss_x, ct_x, self._x25519))
        body = aead.encrypt(nonce, file_key, b"")
        return [Stanza(STANZA_TYPE, (b64encode(ct_pq + ct_x),), body)]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HybridRecipient) and other._public == self._public

    def __hash__(self) -> int:
        return hash((STANZA_TYPE, self._public))

    def __repr__(self) -> str:
        return f"HybridRecipient({self.to_string()[:24]!r}...)"


class HybridIdentity:
    """An ``AGE-SECRET-KEY-PQ-1...`` 32-byte seed; opens mlkem768x25519 stanzas."""

    __slots__ = ("_mlkem", "_public_x", "_seed", "_x25519")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes):
            raise TypeError("seed must be bytes")
        if len(seed) != SEED_SIZE:
            raise ValueError(f"hybrid seed must be {SEED_SIZE} bytes, found {len(seed)}")
        # X-Wing key derivation: SHAKE256(seed) gives the ML-KEM (d || z) seed
        # and the X25519 scalar.
        shake = hashes.Hash(hashes.SHAKE256(digest_size=96))
        shake.update(seed)
        expanded = shake.finalize()
        self._seed = seed
        self._mlkem = MLKEM768PrivateKey.from_seed_bytes(expanded[:64])
        self._x25519 = X25519PrivateKey.from_private_bytes(expanded[64:96])
        self._public_x = self._x25519.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> HybridIdentity:
        """Return a new random identity."""
        return cls(os.urandom(SEED_SIZE))

    @classmethod
    def from_bytes(cls, seed: bytes) -> HybridIdentity:
        """Return the identity of a raw 32-byte seed."""
        return cls(seed)

    def to_bytes(self) -> bytes:
        """Return the raw 32-byte seed."""
        return self._seed

    @classmethod
    def parse(cls, text: str) -> HybridIdentity:
        """Return the identity encoded as ``AGE-SECRET-KEY-PQ-1...``; raise ``KeyFormatError``."""
        return cls(decode_key(text, IDENTITY_HRP, SEED_SIZE, secret=True))

    def to_string(self) -> str:
        """Return the ``AGE-SECRET-KEY-PQ-1...`` encoding (a secret: handle with care)."""
        return encode_identity(IDENTITY_HRP, self._seed)

    def recipient(self) -> HybridRecipient:
        """Return the matching public recipient."""
        return HybridRecipient(self._mlkem.public_key().public_bytes_raw() + self._public_x)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first mlkem768x25519 stanza that opens, else ``None``.

        ML-KEM decapsulation never fails (implicit rejection): a corrupted
        ciphertext yields a different key, so the AEAD fails and the stanza is
        simply not ours. Raises :class:`HeaderError` for an invalid stanza or a
        low-order X25519 share.
        """
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            enc = check_stanza(stanza)
            ct_pq, ct_x = enc[:MLKEM_CIPHERTEXT_SIZE], enc[MLKEM_CIPHERTEXT_SIZE:]
            ss_x = _x25519(self._x25519, ct_x)
            ss_pq = self._mlkem.decapsulate(ct_pq)
            aead, nonce = _aead(_combine(ss_pq, ss_x, ct_x, self._public_x))
            try:
                return aead.decrypt(nonce, stanza.body, b"")
            except InvalidTag:
                continue
        return None

    def __repr__(self) -> str:
        return f"HybridIdentity(recipient={self.recipient().to_string()[:24]!r}...)"
