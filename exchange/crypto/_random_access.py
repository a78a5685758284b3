"""Random-access decryption of a binary age v1 file (C2SP age spec, "Payload": seeking).

STREAM chunks are independently authenticated, so any byte range can be read
by decrypting only the chunks it touches. Because a seek relative to the end
is only sound once the end is known to be genuine, the last chunk is
authenticated as the final chunk before anything else is returned: a
truncated or extended file is rejected up front.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import BinaryIO

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from exchange.crypto._age_errors import ArmorError, PayloadError
from exchange.crypto._codec import open_header
from exchange.crypto._format import PAYLOAD_NONCE_SIZE, HeaderParser, ParsedHeader
from exchange.crypto._stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, TAG_SIZE, open_chunk
from exchange.crypto.recipients import Identity

__all__ = ["RandomAccessDecryptor"]

_HEADER_READ = 4096


class RandomAccessDecryptor:
    """Reads plaintext ranges from a seekable binary (not armored) age file.

    The file starts at the object's current position. Construction parses the
    header, unwraps the file key, checks the MAC and authenticates the final
    chunk; it raises the same errors as :class:`Decryptor`. Not thread-safe:
    it seeks the shared file object.
    """

    def __init__(self, fileobj: BinaryIO, identities: Sequence[Identity]) -> None:
        identities = list(identities)
        if not identities:
            raise ValueError("at least one identity is required")
        self._file = fileobj
        base = fileobj.tell()
        parsed = self._read_header()
        self._aead = ChaCha20Poly1305(open_header(parsed, identities))
        self._payload_start = base + parsed.header_size + PAYLOAD_NONCE_SIZE
        payload_size = fileobj.seek(0, 2) - self._payload_start
        if payload_size <= 0:
            raise PayloadError("payload has no chunks: want at least the final chunk")
        self._chunk_count = -(-payload_size // ENCRYPTED_CHUNK_SIZE)
        last_index = self._chunk_count - 1
        last_size = payload_size - last_index * ENCRYPTED_CHUNK_SIZE
        if last_size < TAG_SIZE:
            raise PayloadError(f"final chunk is {last_size} bytes, shorter than the 16-byte tag")
        last = open_chunk(self._aead, last_index, self._read_chunks(last_index, 1), True)
        if last is None:
            raise PayloadError("payload chunk failed to authenticate")
        if not last and last_index:
            raise PayloadError("final chunk is empty after data (only an empty payload may be)")
        self._last = last
        self.plaintext_size: int = last_index * CHUNK_SIZE + len(last)

    def _read_header(self) -> ParsedHeader:
        parser = HeaderParser()
        first = True
        while True:
            data = self._file.read(_HEADER_READ)
            if first and data.lstrip(b" \t\r\n").startswith(b"-----BEGIN"):
                raise ArmorError("random access needs a binary age file, found ASCII armor")
            first = False
            if not data:
                parser.finish()
            parsed = parser.feed(data)
            if parsed is not None:
                return parsed

    def _read_chunks(self, index: int, count: int) -> bytes:
        self._file.seek(self._payload_start + index * ENCRYPTED_CHUNK_SIZE)
        want = count * ENCRYPTED_CHUNK_SIZE
        data = self._file.read(want)
        if index + count < self._chunk_count and len(data) != want:
            raise PayloadError("payload changed size while reading")
        return data

    def read_range(self, offset: int, length: int) -> bytes:
        """Return up to ``length`` plaintext bytes from ``offset`` (clipped at the end).

        Requires ``offset >= 0`` and ``length >= 0``. Decrypts only the chunks
        the range touches; raises :class:`PayloadError` if one fails to verify.
        """
        for name, value in (("offset", offset), ("length", length)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be int")
            if value < 0:
                raise ValueError(f"{name} must be >= 0, found {value}")
        end = min(offset + length, self.plaintext_size)
        if offset >= end:
            return b""
        first, last = offset // CHUNK_SIZE, (end - 1) // CHUNK_SIZE
        final_index = self._chunk_count - 1
        full_last = min(last, final_index - 1)
        parts: list[bytes] = []
        if first <= full_last:
            data = self._read_chunks(first, full_last - first + 1)
            for i in range(first, full_last + 1):
                at = (i - first) * ENCRYPTED_CHUNK_SIZE
                chunk = data[at : at + ENCRYPTED_CHUNK_SIZE]
                plaintext = open_chunk(self._aead, i, chunk, False)
                if plaintext is None or len(plaintext) != CHUNK_SIZE:
                    raise PayloadError("payload chunk failed to authenticate")
                parts.append(plaintext)
        if last == final_index:
            parts.append(self._last)
        joined = b"".join(parts)
        skip = offset - first * CHUNK_SIZE
        return joined[skip : skip + (end - offset)]
