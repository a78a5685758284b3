"""The blob store interface: content-addressed ciphertext blobs and upload sessions.

Blobs are addressed by the SHA-256 hex of their bytes (DESIGN.md §8); upload
sessions are resumable partial blobs (tus 1.0 semantics live in transport, the
bytes live here). The interface is narrow so an S3-compatible store can follow.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO, NewType, Protocol, runtime_checkable

from exchange.storage.errors import (
    InvalidBlobId,
    InvalidUploadId,
    InvalidValue,
    PrefixDigestMismatch,
    ValueTooLarge,
    shown,
)

BlobId = NewType("BlobId", str)
UploadId = NewType("UploadId", str)

#: A blob id is the lowercase hex SHA-256 of the blob's bytes, nothing else:
#: anything path-like (``../``, ``/``, upper case) is refused before any I/O.
_BLOB_ID_RE = re.compile(r"[0-9a-f]{64}")
#: Upload ids name a file under ``uploads/``: a url-safe token, never a path.
_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{16,64}")

#: Chunks handed to the store: sync or async iterables of bytes.
Chunks = Iterable[bytes] | AsyncIterable[bytes]


def parse_blob_id(value: object) -> BlobId:
    """Return ``value`` as a blob id; raise :class:`InvalidBlobId` unless 64 lowercase hex."""
    if not isinstance(value, str):
        raise TypeError(f"blob id must be str, not {type(value).__name__}")
    if _BLOB_ID_RE.fullmatch(value) is None:
        raise InvalidBlobId(f"invalid blob id {shown(value)}, want 64 lowercase hex digits")
    return BlobId(value)


def parse_upload_id(value: object) -> UploadId:
    """Return ``value`` as an upload id; raise :class:`InvalidUploadId` unless a safe token."""
    if not isinstance(value, str):
        raise TypeError(f"upload id must be str, not {type(value).__name__}")
    if _UPLOAD_ID_RE.fullmatch(value) is None:
        raise InvalidUploadId(
            f"invalid upload id {shown(value)}, want 16-64 characters of [A-Za-z0-9_-]"
        )
    return UploadId(value)


def check_range(start: int, end: int, size: int) -> None:
    """Raise :class:`InvalidValue` unless ``0 <= start <= end <= size`` (end exclusive)."""
    if not (isinstance(start, int) and isinstance(end, int)):
        raise TypeError("range bounds must be int")
    if not 0 <= start <= end <= size:
        raise InvalidValue(f"byte range [{start}, {end}) is outside the blob of size {size}")


def check_within_length(end: int, length: int) -> None:
    """Raise ``ValueTooLarge`` if an append reaching ``end`` passes the declared ``length``."""
    if end > length:
        raise ValueTooLarge(f"append reaches {end} bytes, past the declared length {length}")


def check_prefix(running: hashlib._Hash | None, expected: bytes, upload_id: str,
                 end: int) -> None:
    """Raise ``PrefixDigestMismatch`` unless ``running`` (the hash of bytes ``[0, end)``
    of the upload) is ``expected``, the append's signed prefix digest."""
    if running is None or not hmac.compare_digest(running.digest(), expected):
        raise PrefixDigestMismatch(
            f"the first {end} bytes of upload {upload_id} do not hash to the signed "
            "exchange-prefix-digest")


@dataclass(frozen=True, slots=True, kw_only=True)
class BlobInfo:
    """A stored blob: its address and its size in bytes."""

    blob_id: BlobId
    size: int


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSpan:
    """Bytes ``[start, end)`` of a blob kept as a local file, opened for reading.

    Why it exists: a download of a local blob is handed to the kernel
    (``sendfile``) instead of being copied through Python, which is most of a
    pull's server CPU (issue 17). Whoever receives it closes it.
    """

    file: BinaryIO
    start: int
    end: int

    def close(self) -> None:
        """Close the file (idempotent)."""
        self.file.close()


@runtime_checkable
class LocalBlobs(Protocol):
    """A blob store whose blobs are local files (the filesystem store, not S3)."""

    async def open_local(self, blob_id: str, start: int, end: int) -> LocalSpan:
        """Open ``[start, end)`` of the blob; MUST raise ``BlobNotFound`` or ``InvalidValue``."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadState:
    """The durable state of an upload session.

    ``offset`` is the number of bytes made durable so far; ``length`` the
    declared total; ``expires_at`` a Unix time in seconds.
    """

    upload_id: UploadId
    length: int
    offset: int
    expires_at: int

    @property
    def complete(self) -> bool:
        """Whether every declared byte has been appended."""
        return self.offset == self.length


class BlobStore(Protocol):
    """Content-addressed, immutable blobs plus resumable upload sessions.

    Implementations MUST validate every id before any I/O, MUST make a blob
    visible only once all its bytes are durable, and MUST NOT serve bytes of
    a blob that fails to hash to its address without raising ``BlobCorrupt``.
    Several processes may share one store.
    """

    async def put(self, chunks: Chunks, *, expected_sha256: str | None = None) -> BlobInfo:
        """Store the concatenated ``chunks`` durably and return their address.

        MUST raise ``BlobHashMismatch`` (storing nothing) when ``expected_sha256``
        is given and differs. Storing bytes that exist already is a no-op.
        """
        ...

    async def stat(self, blob_id: str) -> BlobInfo:
        """Return the blob's size; MUST raise ``BlobNotFound`` when absent."""
        ...

    async def open_range(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Return an iterator over bytes ``[start, end)`` of the blob, in bounded chunks.

        MUST raise ``BlobNotFound`` or ``InvalidValue`` (bad range) before
        returning. Ranges are not verified; use :meth:`verify` or :meth:`read`.
        """
        ...

    async def read(self, blob_id: str) -> AsyncIterator[bytes]:
        """Return an iterator over the whole blob that hashes as it goes.

        MUST raise ``BlobCorrupt`` at the end of the iteration (before the
        final chunk is yielded) when the bytes do not match the address.
        """
        ...

    async def verify(self, blob_id: str) -> BlobInfo:
        """Hash the stored blob; MUST raise ``BlobCorrupt`` or ``BlobNotFound``."""
        ...

    async def delete(self, blob_id: str) -> None:
        """Remove the blob; MUST raise ``BlobNotFound`` when absent."""
        ...

    def list_blobs(self) -> AsyncIterator[BlobInfo]:
        """Yield every stored blob with its size, in no particular order (``server check``)."""
        ...

    async def create_upload(
        self, *, length: int, expires_at: int, upload_id: str | None = None
    ) -> UploadState:
        """Create an empty upload session of declared ``length`` bytes.

        MUST raise ``AlreadyExists`` if ``upload_id`` is taken.
        """
        ...

    async def upload_state(self, upload_id: str) -> UploadState:
        """Return the session's durable state; MUST raise ``UploadNotFound``."""
        ...

    async def append(
        self, upload_id: str, offset: int, chunks: Chunks, *,
        on_durable: Callable[[int], Awaitable[None]] | None = None,
        prefix_sha256: bytes | None = None,
    ) -> int:
        """Append ``chunks`` at ``offset`` and return the new durable offset.

        With ``prefix_sha256`` the SHA-256 of the upload's bytes ``[0, new
        offset)`` MUST equal it or the append fails with ``PrefixDigestMismatch``
        (nothing kept); a store that did not hash ``[0, offset)`` itself raises
        ``PrefixHashUnknown`` before reading ``chunks``.

        MUST raise ``UploadOffsetMismatch`` (writing nothing) if ``offset`` is
        not the durable offset, ``UploadExpired`` after expiry and
        ``ValueTooLarge`` past the declared length. The bytes are durable when
        this returns; on a failure before they are, the session is back at its
        old offset. ``on_durable(new_offset)``, when given, runs once the bytes
        are durable but before the session is unlocked (the server logs the
        append there); it MUST run to its end even if the caller is cancelled,
        and from the moment it is called the bytes stay durable whatever its
        outcome, because it may have committed before failing: the caller
        reconciles with :meth:`trim_upload` (its log decides) before the next
        append, so logged bytes are never lost and unlogged ones never count.
        """
        ...

    async def trim_upload(
        self, upload_id: str, logged_offset: Callable[[], Awaitable[int]]
    ) -> UploadState:
        """Under the session's lock, reconcile with ``await logged_offset()``.

        The log is the truth. Repairs a crash (or a failed ``on_durable``)
        between an append becoming durable and its log entry: bytes that were
        never logged are dropped. A logged offset past the durable one MUST
        raise ``UploadBytesLost``. Returns the resulting state.
        """
        ...

    async def promote(self, upload_id: str, expected_sha256: str, *,
                      keep_session: bool = False) -> BlobInfo:
        """Turn a complete session into a blob if its bytes hash to ``expected_sha256``.

        MUST raise ``UploadIncomplete`` or ``BlobHashMismatch`` (leaving the
        session intact); on success the session is gone, unless
        ``keep_session``: then it stays complete (its bytes never change again)
        and promoting it again is allowed, so a caller that records the blob
        elsewhere can delete the session only once that record is durable and
        a crash in between loses neither the session nor the blob.
        """
        ...

    async def delete_upload(self, upload_id: str) -> None:
        """Remove a session and its bytes; MUST raise ``UploadNotFound`` when absent.

        Takes the session's lock without waiting: MUST raise ``UploadBusy``
        while an append or promotion holds it (never re-created afterwards).
        """
        ...

    async def expire_uploads(self, now: int) -> list[UploadId]:
        """Delete every session with ``expires_at <= now``; return their ids.

        Busy or unreadable sessions and names that are not upload ids are skipped.
        """
        ...


async def aiter_chunks(chunks: Chunks) -> AsyncIterator[bytes]:
    """Iterate sync or async ``chunks`` uniformly, refusing non-bytes items."""
    if isinstance(chunks, AsyncIterable):
        async for chunk in chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"chunks must be bytes, not {type(chunk).__name__}")
            yield bytes(chunk)
    else:
        for chunk in chunks:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise TypeError(f"chunks must be bytes, not {type(chunk).__name__}")
            yield bytes(chunk)


__all__ = [
    "BlobId",
    "BlobInfo",
    "BlobStore",
    "Chunks",
    "UploadId",
    "UploadState",
    "aiter_chunks",
    "check_range",
    "check_within_length",
    "parse_blob_id",
    "parse_upload_id",
]
