"""The X25519 recipient type of the C2SP age spec ("X25519 recipient type").

A file key is wrapped to a Curve25519 public key with an ephemeral X25519
exchange, HKDF-SHA-256 and ChaCha20-Poly1305 under a single-use key.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from exchange.crypto._age_errors import HeaderError
from exchange.crypto._format import Stanza, b64decode, b64encode
from exchange.crypto._primitives import FILE_KEY_SIZE, aead_open, aead_seal, hkdf_sha256
from exchange.crypto.recipients._keys import decode_key, encode_identity, encode_recipient

__all__ = ["STANZA_TYPE", "X25519Identity", "X25519Recipient", "check_stanza"]

STANZA_TYPE = "X25519"
_INFO = b"age-encryption.org/v1/X25519"
IDENTITY_HRP = "age-secret-key-"
RECIPIENT_HRP = "age"
KEY_SIZE = 32
WRAPPED_SIZE = FILE_KEY_SIZE + 16


def check_stanza(stanza: Stanza) -> bytes:
    """Return the ephemeral share of a valid X25519 stanza; raise :class:`HeaderError`.

    The body length is checked before any decryption so that a crafted body
    cannot probe many keys at once (a partitioning-oracle defence).
    """
    if len(stanza.args) != 1:
        raise HeaderError(f"invalid X25519 stanza: has {len(stanza.args)} arguments, want 1")
    try:
        share = b64decode(stanza.args[0])
    except ValueError as err:
        raise HeaderError(f"invalid X25519 stanza: share: {err}") from None
    if len(share) != KEY_SIZE:
        raise HeaderError(f"invalid X25519 stanza: share is {len(share)} bytes, want {KEY_SIZE}")
    if len(stanza.body) != WRAPPED_SIZE:
        raise HeaderError(
            f"invalid X25519 stanza: body is {len(stanza.body)} bytes, want {WRAPPED_SIZE}"
        )
    return share


def _shared_secret(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:
        # pyca refuses an all-zero result: the share is a low-order point,
        # which would make the wrap key independent of the recipient.
        raise HeaderError(
            "invalid X25519 stanza: share is a low-order point (all-zero shared secret)"
        ) from None


class X25519Recipient:
    """An ``age1...`` public key; :meth:`wrap` seals a file key to it."""

    __slots__ = ("_public",)

    def __init__(self, public: bytes) -> None:
        if not isinstance(public, bytes):
            raise TypeError("public key must be bytes")
        if len(public) != KEY_SIZE:
            raise ValueError(f"X25519 public key must be {KEY_SIZE} bytes, found {len(public)}")
        self._public = public

    @classmethod
    def from_bytes(cls, public: bytes) -> X25519Recipient:
        """Return the recipient of a raw 32-byte Curve25519 public key."""
        return cls(public)

    def to_bytes(self) -> bytes:
        """Return the raw 32-byte public key."""
        return self._public

    @classmethod
    def parse(cls, text: str) -> X25519Recipient:
        """Return the recipient encoded as ``age1...``; raise ``KeyFormatError``."""
        return cls(decode_key(text, RECIPIENT_HRP, KEY_SIZE, secret=False))

    def to_string(self) -> str:
        """Return the ``age1...`` encoding."""
        return encode_recipient(RECIPIENT_HRP, self._public)

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return one X25519 stanza wrapping ``file_key`` with a fresh ephemeral key."""
        ephemeral = X25519PrivateKey.from_private_bytes(os.urandom(KEY_SIZE))
        share = ephemeral.public_key().public_bytes_raw()
        shared = _shared_secret(ephemeral, self._public)
        wrap_key = hkdf_sha256(shared, share + self._public, _INFO)
        return [Stanza(STANZA_TYPE, (b64encode(share),), aead_seal(wrap_key, file_key))]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, X25519Recipient) and other._public == self._public

    def __hash__(self) -> int:
        return hash((STANZA_TYPE, self._public))

    def __repr__(self) -> str:
        return f"X25519Recipient({self.to_string()!r})"


class X25519Identity:
    """An ``AGE-SECRET-KEY-1...`` secret key; :meth:`unwrap` opens X25519 stanzas."""

    __slots__ = ("_private", "_public")

    def __init__(self, private: bytes) -> None:
        if not isinstance(private, bytes):
            raise TypeError("secret key must be bytes")
        if len(private) != KEY_SIZE:
            raise ValueError(f"X25519 secret key must be {KEY_SIZE} bytes, found {len(private)}")
        self._private = X25519PrivateKey.from_private_bytes(private)
        self._public = self._private.public_key().public_bytes_raw()

    @classmethod
    def generate(cls) -> X25519Identity:
        """Return a new random identity."""
        return cls(os.urandom(KEY_SIZE))

    @classmethod
    def from_bytes(cls, private: bytes) -> X25519Identity:
        """Return the identity of a raw 32-byte X25519 scalar."""
        return cls(private)

    def to_bytes(self) -> bytes:
        """Return the raw 32-byte secret scalar."""
        return self._private.private_bytes_raw()

    @classmethod
    def parse(cls, text: str) -> X25519Identity:
        """Return the identity encoded as ``AGE-SECRET-KEY-1...``; raise ``KeyFormatError``."""
        return cls(decode_key(text, IDENTITY_HRP, KEY_SIZE, secret=True))

    def to_string(self) -> str:
        """Return the ``AGE-SECRET-KEY-1...`` encoding (a secret: handle with care)."""
        return encode_identity(IDENTITY_HRP, self.to_bytes())

    def recipient(self) -> X25519Recipient:
        """Return the matching public recipient."""
        return X25519Recipient(self._public)

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key from the first X25519 stanza that opens, else ``None``.

        Stanzas of other types are ignored. Raises :class:`HeaderError` for an
        invalid X25519 stanza, including a low-order share.
        """
        for stanza in stanzas:
            if stanza.type != STANZA_TYPE:
                continue
            share = check_stanza(stanza)
            shared = _shared_secret(self._private, share)
            wrap_key = hkdf_sha256(shared, share + self._public, _INFO)
            file_key = aead_open(wrap_key, stanza.body, FILE_KEY_SIZE)
            if file_key is not None:
                return file_key
        return None

    def __repr__(self) -> str:
        return f"X25519Identity(recipient={self.recipient().to_string()!r})"
