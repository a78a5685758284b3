"""Public API of the age v1 file format (C2SP age spec, https://age-encryption.org/v1).

Recipes for callers: one-shot :func:`encrypt`/:func:`decrypt`, file-object and
async-iterator streaming, push objects (:class:`Encryptor`, :class:`Decryptor`)
and random access. Key types: X25519, hybrid post-quantum mlkem768x25519 and
scrypt passphrases. Everything streams in 64 KiB chunks with flat memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from typing import BinaryIO

from exchange.crypto import _pipeline
from exchange.crypto._age_errors import (
    AgeError,
    ArmorError,
    HeaderError,
    HeaderMacError,
    KeyFormatError,
    NoIdentityMatch,
    PayloadError,
)
from exchange.crypto._codec import Decryptor, Encryptor
from exchange.crypto._format import Stanza
from exchange.crypto._pipeline import ReadInto
from exchange.crypto._random_access import RandomAccessDecryptor
from exchange.crypto._stream import CHUNK_SIZE, ENCRYPTED_CHUNK_SIZE, Buffer
from exchange.crypto.recipients import Identity, Recipient
from exchange.crypto.recipients.mlkem768x25519 import HybridIdentity, HybridRecipient
from exchange.crypto.recipients.scrypt import ScryptIdentity, ScryptRecipient
from exchange.crypto.recipients.x25519 import X25519Identity, X25519Recipient

__all__ = [
    "AgeError",
    "ArmorError",
    "Decryptor",
    "Encryptor",
    "HeaderError",
    "HeaderMacError",
    "HybridIdentity",
    "HybridRecipient",
    "Identity",
    "KeyFormatError",
    "NoIdentityMatch",
    "PayloadError",
    "RandomAccessDecryptor",
    "Recipient",
    "ScryptIdentity",
    "ScryptRecipient",
    "Stanza",
    "X25519Identity",
    "X25519Recipient",
    "decrypt",
    "decrypt_file",
    "decrypt_stream",
    "encrypt",
    "encrypt_file",
    "encrypt_stream",
    "parse_identity",
    "parse_identity_file",
    "parse_recipient",
    "pump",
]

# Pipeline batches of 32 chunks (2 MiB): large enough to amortise per-batch
# hand-offs and feed the chunk thread pool (tmpfs writes cost no less CPU per
# byte at 4 or 8 MiB here), small enough that the input and output buffers in
# flight (_PIPELINE_DEPTH of each, about 16 MiB in all) keep memory flat.
_READ_SIZE = 32 * CHUNK_SIZE
_DECRYPT_READ_SIZE = 32 * ENCRYPTED_CHUNK_SIZE
_PIPELINE_DEPTH = 4
# Identity files are small; a cap stops a wrong path (a disk image) early.
_MAX_IDENTITY_FILE_CHARS = 16 * 1024 * 1024


def parse_recipient(s: str) -> Recipient:
    """Return the recipient encoded as ``age1...`` (X25519) or ``age1pq1...`` (hybrid)."""
    if not isinstance(s, str):
        raise TypeError("recipient must be str")
    if s.startswith("age1pq1"):
        return HybridRecipient.parse(s)
    if s.startswith("age1"):
        return X25519Recipient.parse(s)
    raise KeyFormatError(f"unknown recipient type {s[:12]!r}: want 'age1...' or 'age1pq1...'")


def parse_identity(s: str) -> Identity:
    """Return the identity encoded as ``AGE-SECRET-KEY-1...`` or ``AGE-SECRET-KEY-PQ-1...``.

    Errors never include the key text.
    """
    if not isinstance(s, str):
        raise TypeError("identity must be str")
    if s.startswith("AGE-SECRET-KEY-PQ-1"):
        return HybridIdentity.parse(s)
    if s.startswith("AGE-SECRET-KEY-1"):
        return X25519Identity.parse(s)
    raise KeyFormatError("unknown identity type: want 'AGE-SECRET-KEY-1...' or '...-PQ-1...'")


def parse_identity_file(text: str) -> list[Identity]:
    """Return the identities of an age identity file, in order.

    One identity per line; blank lines and lines starting with ``#`` are
    ignored. Raises :class:`KeyFormatError` naming the 1-based line number of
    the first bad line (never its content), or if there is no identity.
    """
    if not isinstance(text, str):
        raise TypeError("identity file text must be str")
    if len(text) > _MAX_IDENTITY_FILE_CHARS:
        raise KeyFormatError(f"identity file is larger than {_MAX_IDENTITY_FILE_CHARS} characters")
    identities: list[Identity] = []
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            identities.append(parse_identity(line))
        except KeyFormatError as err:
            raise KeyFormatError(f"identity file line {number}: {err}") from None
    if not identities:
        raise KeyFormatError("identity file contains no identities")
    return identities


def encrypt(plaintext: Buffer, recipients: Sequence[Recipient], *, armor: bool = False) -> bytes:
    """Return the age file encrypting ``plaintext`` to ``recipients``."""
    encryptor = Encryptor(recipients, armor=armor)
    out = bytearray()
    encryptor.feed(plaintext, out.extend)
    out += encryptor.finalize()
    return bytes(out)


def decrypt(ciphertext: Buffer, identities: Sequence[Identity]) -> bytes:
    """Return the plaintext of a whole age file (armor detected); all or nothing."""
    decryptor = Decryptor(identities)
    out = bytearray()
    decryptor.feed(ciphertext, out.extend)
    out += decryptor.finalize()
    return bytes(out)


def _readinto(src: BinaryIO) -> ReadInto:
    """Return the fastest ``readinto``-like reader of ``src``.

    ``readinto1`` does at most one raw read, so a pipe hands over what it has
    instead of blocking until a whole batch arrives.
    """
    for name in ("readinto1", "readinto"):
        method = getattr(src, name, None)
        if method is not None:
            return method  # type: ignore[no-any-return]

    def copy_read(view: memoryview) -> int:
        data = src.read(len(view))
        view[: len(data)] = data
        return len(data)

    return copy_read


def _writer(dst: BinaryIO) -> Callable[[Buffer], None]:
    def write(data: Buffer) -> None:
        view = memoryview(data)
        while view:
            n = dst.write(view)
            if n is None:  # a non-blocking raw stream that would block
                raise OSError("destination would block")
            view = view[n:]

    return write


def pump(codec: Encryptor | Decryptor, src: BinaryIO, sink: Callable[[Buffer], object]) -> int:
    """Stream everything readable from ``src`` through ``codec`` into ``sink``; return bytes sunk.

    Finalizes ``codec``. Reading, the AEAD (on every core) and ``sink``
    overlap in a bounded pipeline of a few 2 MiB buffers, so memory stays flat
    and throughput is that of the slowest stage. ``sink`` is called in order
    from a worker thread, each buffer valid only until it returns; it must
    write everything it is given. A decryptor sinks only authenticated
    plaintext; on failure whatever authenticated before the bad chunk has been
    sunk. Every thread has stopped when this returns or raises.
    """
    read_size = _DECRYPT_READ_SIZE if isinstance(codec, Decryptor) else _READ_SIZE
    return _pipeline.pump(codec, _readinto(src), sink, read_size=read_size, depth=_PIPELINE_DEPTH)


def encrypt_file(
    src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient], *, armor: bool = False
) -> int:
    """Encrypt everything readable from ``src`` into ``dst``; return the bytes written.

    Streams through :func:`pump`; ``dst.write`` is called from a worker thread.
    """
    return pump(Encryptor(recipients, armor=armor), src, _writer(dst))


def decrypt_file(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> int:
    """Decrypt ``src`` into ``dst``; return the plaintext bytes written.

    Plaintext is written as each chunk authenticates, so on an error ``dst``
    holds an authenticated but incomplete prefix: callers writing to a file
    should write to a temporary file and rename it only on success. Streams
    through :func:`pump`; ``dst.write`` is called from a worker thread.
    """
    return pump(Decryptor(identities), src, _writer(dst))


async def encrypt_stream(
    chunks: AsyncIterable[Buffer], recipients: Sequence[Recipient], *, armor: bool = False
) -> AsyncIterator[bytes]:
    """Yield the age file encrypting the concatenation of ``chunks``."""
    encryptor = Encryptor(recipients, armor=armor)
    async for chunk in chunks:
        out = encryptor.update(chunk)
        if out:
            yield out
    yield encryptor.finalize()


async def decrypt_stream(
    chunks: AsyncIterable[Buffer], identities: Sequence[Identity]
) -> AsyncIterator[bytes]:
    """Yield authenticated plaintext as it becomes available; raise on any failure."""
    decryptor = Decryptor(identities)
    async for chunk in chunks:
        out = decryptor.update(chunk)
        if out:
            yield out
    out = decryptor.finalize()
    if out:
        yield out
