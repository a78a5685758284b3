"""A resumable age v1 encryption: the same ciphertext again, from the same header and key.

C2SP age spec, "Header" and "Payload". An age file is its header (stanzas,
MAC, 16-byte nonce) followed by the STREAM payload under
``HKDF(file_key, nonce, "payload")``; chunk *i* depends only on that key, *i*
and the plaintext. Keeping the header bytes and the payload key therefore
lets an interrupted upload regenerate byte-identical ciphertext from the
plaintext and continue at the server's offset, with no ciphertext spool on
disk. The payload key is kept only age-encrypted to the uploader's own
recipient (:meth:`ResumableAge.seal_key`), never in clear.

The header is built by the age encoder's own ``_codec.new_header`` (with its
recipient rules), the payload by ``_stream``; nothing here is a primitive.
The output is a standard age file that any age decoder opens.
"""

from __future__ import annotations

from collections.abc import Sequence

from exchange.crypto._codec import NONCE_SIZE, new_header
from exchange.crypto._stream import StreamEncryptor, ciphertext_size, feed_scratch_size
from exchange.crypto.age import Identity, Recipient, decrypt, encrypt

__all__ = ["NONCE_SIZE", "ResumableAge", "feed_scratch_size"]

PAYLOAD_KEY_SIZE = 32


class ResumableAge:
    """The public header and the secret payload key of one age file (repr shows no secret)."""

    __slots__ = ("_key", "header")

    def __init__(self, header: bytes, key: bytes) -> None:
        if not isinstance(header, bytes) or len(header) <= NONCE_SIZE:
            raise ValueError("header must be the age header bytes followed by the nonce")
        if not isinstance(key, bytes) or len(key) != PAYLOAD_KEY_SIZE:
            raise ValueError(f"payload key must be {PAYLOAD_KEY_SIZE} bytes")
        self.header = header
        self._key = key

    def __repr__(self) -> str:
        return f"ResumableAge(header_bytes={len(self.header)})"

    @classmethod
    def new(cls, recipients: Sequence[Recipient]) -> ResumableAge:
        """Return a fresh random file key wrapped for ``recipients``.

        The header comes from the age encoder's own builder, so the same rules
        hold (at least one recipient; an scrypt recipient only alone).
        """
        head, key = new_header(recipients)
        return cls(head, key)

    def stream(self) -> StreamEncryptor:
        """Return a new STREAM encryptor of the payload (from chunk 0)."""
        return StreamEncryptor(self._key)

    def size(self, plaintext_size: int) -> int:
        """Return the size of the whole age file for ``plaintext_size`` bytes of plaintext."""
        return len(self.header) + ciphertext_size(plaintext_size)

    def seal_key(self, recipient: Recipient) -> bytes:
        """Return the payload key age-encrypted to ``recipient`` (for a resume record)."""
        return encrypt(self._key, [recipient])

    @classmethod
    def open(cls, header: bytes, sealed_key: bytes,
             identities: Sequence[Identity]) -> ResumableAge:
        """Return the encryption described by a resume record (raises the age errors)."""
        return cls(header, decrypt(sealed_key, identities))
