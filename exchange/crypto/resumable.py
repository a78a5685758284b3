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

from exchange.crypto._age_errors import HeaderError
from exchange.crypto._codec import NONCE_SIZE, new_header, open_header
from exchange.crypto._format import HeaderParser
from exchange.crypto._stream import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    Sink,
    StreamDecryptor,
    StreamEncryptor,
    ciphertext_size,
    feed_scratch_size,
)
from exchange.crypto.age import Identity, Recipient, decrypt, encrypt

__all__ = ["CHUNK_SIZE", "ENCRYPTED_CHUNK_SIZE", "NONCE_SIZE", "HeadedDecryptor", "ResumableAge",
           "feed_scratch_size"]

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

    def decryptor(self, first_chunk: int = 0) -> StreamDecryptor:
        """Return a STREAM decryptor of the payload from chunk ``first_chunk`` on."""
        return StreamDecryptor(self._key, first_chunk=first_chunk)

    @classmethod
    def from_header(cls, header: bytes, identities: Sequence[Identity]) -> ResumableAge:
        """Open a kept binary age header (through its nonce): unwrap the key, check the MAC.

        Raises the age errors (``HeaderError``, ``NoIdentityMatch``, ``HeaderMacError``).
        """
        parsed = HeaderParser().feed(header)
        if parsed is None or parsed.rest:
            raise HeaderError("the kept age header is incomplete or followed by other bytes")
        return cls(header, open_header(parsed, identities))

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


class HeadedDecryptor:
    """Push decryptor of a binary age file that keeps its header, so it can be resumed.

    Why: a pull keeps only the authenticated plaintext prefix and this header
    (no ciphertext spool, which doubled a pull's disk writes and space). A later
    run reopens the header (:meth:`ResumableAge.from_header`), regenerates the
    prefix's ciphertext from the plaintext to rebuild the ciphertext hash, and
    continues with :meth:`resumed` at the next chunk. Armored input is refused:
    evidence blobs are binary age files.
    """

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._identities = list(identities)
        self._parser: HeaderParser | None = HeaderParser()
        self._head = bytearray()
        self._stream: StreamDecryptor | None = None
        #: The header and payload key, once the header has arrived and opened.
        self.age: ResumableAge | None = None

    @classmethod
    def resumed(cls, age: ResumableAge, first_chunk: int) -> HeadedDecryptor:
        """Return a decryptor of the payload of ``age`` from chunk ``first_chunk`` on."""
        resumed = cls([])
        resumed._parser, resumed.age = None, age
        resumed._stream = age.decryptor(first_chunk)
        return resumed

    def feed(self, data: bytes | bytearray | memoryview, sink: Sink, *,
             scratch: bytearray | memoryview | None = None) -> None:
        """Pass authenticated plaintext to ``sink`` (as ``Decryptor.feed``)."""
        if self._stream is not None:
            self._stream.feed(data, sink, scratch=scratch)
            return
        assert self._parser is not None
        self._head += data
        parsed = self._parser.feed(data)
        if parsed is None:
            return
        header = bytes(self._head[: parsed.header_size + NONCE_SIZE])
        self._parser, self._head = None, bytearray()
        self.age = ResumableAge(header, open_header(parsed, self._identities))
        self._stream = self.age.decryptor()
        self._stream.feed(parsed.rest, sink)

    def finalize(self) -> bytes:
        """Return the last plaintext; raise if the file is truncated or malformed."""
        if self._stream is None:
            assert self._parser is not None
            self._parser.finish()
            raise HeaderError("end of input inside the age header")
        return self._stream.finalize()
