"""Filesystem blob store under ``<data_dir>/blobs`` and ``<data_dir>/uploads`` (DESIGN.md §8).

Theory of operation. A blob is written to ``blobs/.tmp/``, fsynced, renamed to
``blobs/ab/cd/abcd…`` and the directory fsynced, so a visible blob is always
complete. Upload sessions (``uploads/``: resumable appends, locks, ``.state``
files, running hashes) live in :mod:`exchange.storage.fs_uploads`; the store
delegates its session methods there and lends it the install step above.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from exchange.fsutil import fsync_directory
from exchange.storage._fsio import finish, hash_file, storage_errors, temp_path, wait_out
from exchange.storage.blobs import (
    BlobId,
    BlobInfo,
    Chunks,
    LocalSpan,
    UploadId,
    UploadState,
    aiter_chunks,
    check_range,
    parse_blob_id,
)
from exchange.storage.errors import BlobCorrupt, BlobHashMismatch, BlobNotFound, InvalidBlobId
from exchange.storage.fs_uploads import FsUploadSessions

#: Read and write granularity: large enough for disk throughput, small enough for flat
#: memory (a download holds about three of them).
IO_CHUNK_BYTES = 1024 * 1024

#: Temporary files older than this are leftovers of crashed writers (see :meth:`sweep`).
STALE_TEMP_S = 24 * 3600


class FsBlobStore:
    """A :class:`~exchange.storage.blobs.BlobStore` on a local (or shared POSIX) filesystem."""

    def __init__(
        self, data_dir: Path, *, io_chunk_bytes: int = IO_CHUNK_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._root = Path(data_dir) / "blobs"
        self._tmp = self._root / ".tmp"
        self._chunk = io_chunk_bytes
        self._clock = clock
        for directory in (self._root, self._tmp):
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._sessions = FsUploadSessions(
            Path(data_dir) / "uploads", temp_dir=self._tmp, install=self._install,
            io_chunk_bytes=io_chunk_bytes, clock=clock,
        )

    # -- blobs ---------------------------------------------------------------

    def _path(self, blob_id: BlobId) -> Path:
        return self._root / blob_id[:2] / blob_id[2:4] / blob_id

    @storage_errors
    async def put(self, chunks: Chunks, *, expected_sha256: str | None = None) -> BlobInfo:
        """Store ``chunks`` as a blob (see ``BlobStore.put``)."""
        expected = parse_blob_id(expected_sha256) if expected_sha256 is not None else None
        creating = asyncio.ensure_future(asyncio.to_thread(self._new_temp))
        if await wait_out(creating):  # cancelled: the file may exist already
            if not creating.cancelled() and creating.exception() is None:
                _discard(*creating.result())
            raise asyncio.CancelledError
        fd, tmp = creating.result()
        # Pipeline: while one buffer is written (one thread) and hashed (another;
        # hashlib releases the GIL), the next one is gathered from ``chunks``.
        inflight: asyncio.Future[None] | None = None
        try:
            digest = hashlib.sha256()
            size = 0
            pending: list[bytes] = []
            pending_len = 0

            def launch(buf: bytes) -> asyncio.Future[None]:
                return asyncio.ensure_future(_write_and_hash(fd, buf, digest))

            async for chunk in aiter_chunks(chunks):
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= self._chunk:
                    buf = pending[0] if len(pending) == 1 else b"".join(pending)
                    pending, pending_len = [], 0
                    if inflight is not None:
                        # Shielded: a cancellation must not abandon threads still
                        # using ``fd`` (the cleanup below waits for them).
                        await asyncio.shield(inflight)
                    inflight = launch(buf)
                    size += len(buf)
            if inflight is not None:
                await asyncio.shield(inflight)
                inflight = None
            if pending:
                buf = b"".join(pending)
                inflight = launch(buf)
                await asyncio.shield(inflight)
                inflight = None
                size += len(buf)
            blob_id = BlobId(digest.hexdigest())
            if expected is not None and expected != blob_id:
                raise BlobHashMismatch(
                    f"content hashes to {blob_id}, want {expected}"
                )
            committing, fd = fd, -1  # _commit_temp closes it (and removes tmp on failure)
            await finish(asyncio.to_thread(self._commit_temp, committing, tmp, blob_id))
        finally:
            # Runs on cancellation too (CancelledError is a BaseException): the
            # writes under way finish first, then the handle and the temporary
            # file go, even if the caller is cancelled again meanwhile.
            if inflight is not None:
                await wait_out(inflight)
                if not inflight.cancelled():
                    inflight.exception()  # retrieved: the original error is what propagates
            if fd >= 0:
                await finish(asyncio.to_thread(_discard, fd, tmp))
        return BlobInfo(blob_id=blob_id, size=size)

    def _new_temp(self) -> tuple[int, Path]:
        tmp = temp_path(self._tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        return fd, tmp

    def _commit_temp(self, fd: int, tmp: Path, blob_id: BlobId) -> None:
        """fsync, close and install the temporary file; on failure it is removed."""
        try:
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._install(tmp, blob_id)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def _install(self, source: Path, blob_id: BlobId) -> None:
        """Rename a fully fsynced file to the blob's address and make the rename durable."""
        target = self._path(blob_id)
        created: list[Path] = []
        for directory in (target.parent.parent, target.parent):
            if not directory.is_dir():
                with contextlib.suppress(FileExistsError):
                    directory.mkdir(mode=0o700)
                    created.append(directory)
        # Replacing an existing blob with identical bytes is harmless and repairs a corrupt one.
        os.replace(source, target)
        fsync_directory(target.parent)
        for directory in reversed(created):
            fsync_directory(directory.parent)
        if source.parent != target.parent:
            fsync_directory(source.parent)

    async def stat(self, blob_id: str) -> BlobInfo:
        """Return the blob's address and size (see ``BlobStore.stat``)."""
        bid = parse_blob_id(blob_id)
        size = await asyncio.to_thread(self._size, bid)
        return BlobInfo(blob_id=bid, size=size)

    def _size(self, blob_id: BlobId) -> int:
        try:
            return self._path(blob_id).stat().st_size
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {blob_id}") from None

    def blob_path(self, blob_id: str) -> Path:
        """Return the file of ``blob_id`` (for backups, which copy files as they are)."""
        return self._path(parse_blob_id(blob_id))

    def blob_ids(self) -> Iterator[BlobId]:
        """Yield the address of every blob file, in sorted order (for ``server check``).

        Files whose name is not a blob address are skipped; the checker hashes
        what it gets, so a misplaced or corrupt file still shows up there.
        """
        for first in sorted(self._root.iterdir()):
            if first.name == self._tmp.name or not first.is_dir():
                continue
            for second in sorted(first.iterdir()):
                for item in sorted(second.iterdir()):
                    with contextlib.suppress(ValueError):
                        yield parse_blob_id(item.name)

    async def ready(self) -> None:
        """Raise ``OSError`` unless a blob could be written now (readiness probe).

        Creates and removes one empty temporary file, the first step of every
        blob write, so a full, read-only or unmounted disk shows up.
        """
        def probe() -> None:
            fd, tmp = self._new_temp()
            os.close(fd)
            tmp.unlink()

        await asyncio.to_thread(probe)

    async def open_range(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Return an iterator over ``[start, end)`` (see ``BlobStore.open_range``)."""
        info = await self.stat(blob_id)
        check_range(start, end, info.size)
        return self._iter_file(info.blob_id, start, end, None)

    async def open_local(self, blob_id: str, start: int, end: int) -> LocalSpan:
        """Open ``[start, end)`` for ``sendfile`` (see ``LocalBlobs``); the size is checked."""
        info = await self.stat(blob_id)
        check_range(start, end, info.size)

        def open_blob() -> BinaryIO:
            try:
                return open(self._path(info.blob_id), "rb", buffering=0)
            except FileNotFoundError:
                raise BlobNotFound(f"no blob {blob_id}") from None

        return LocalSpan(file=await asyncio.to_thread(open_blob), start=start, end=end)

    async def read(self, blob_id: str) -> AsyncIterator[bytes]:
        """Return a verifying iterator over the whole blob (see ``BlobStore.read``)."""
        info = await self.stat(blob_id)
        return self._iter_file(info.blob_id, 0, info.size, hashlib.sha256())

    async def _iter_file(
        self, blob_id: BlobId, start: int, end: int, digest: hashlib._Hash | None
    ) -> AsyncIterator[bytes]:
        """Yield ``[start, end)``; with ``digest``, hash it and hold the last chunk back.

        Each chunk is read and hashed in one worker thread while the caller
        sends the previous one (one read ahead), so disk, hash and socket
        overlap and the event loop never hashes.
        """
        try:
            fd = await asyncio.to_thread(os.open, self._path(blob_id), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {blob_id}") from None

        def read_at(position: int) -> bytes:
            data = os.pread(fd, min(self._chunk, end - position), position)
            if digest is not None:
                digest.update(data)
            return data

        ahead: asyncio.Future[bytes] | None = None
        try:
            position = start
            held: bytes | None = None
            if position < end:
                ahead = asyncio.ensure_future(asyncio.to_thread(read_at, position))
            while ahead is not None:
                data = await ahead
                ahead = None
                if not data:
                    break
                position += len(data)
                if position < end:
                    ahead = asyncio.ensure_future(asyncio.to_thread(read_at, position))
                if digest is None:
                    yield data
                    continue
                # Hold one chunk back so the last bytes go out only after the hash matched.
                if held is not None:
                    yield held
                held = data
            if digest is not None:
                extra = await asyncio.to_thread(os.pread, fd, 1, position)
                found = digest.hexdigest()
                if found != blob_id or position != end or extra:
                    raise BlobCorrupt(
                        f"blob {blob_id} is corrupt: content hashes to {found}",
                        blob_id=blob_id, found_sha256=found,
                    )
                if held is not None:
                    yield held
            elif position != end:
                raise BlobCorrupt(
                    f"blob {blob_id} is corrupt: {position} bytes, want at least {end}",
                    blob_id=blob_id, found_sha256="",
                )
        finally:
            interrupted = False
            if ahead is not None:
                # The read under way still uses ``fd``: let it finish before closing.
                interrupted = await wait_out(ahead)
                if not ahead.cancelled():
                    ahead.exception()
            await finish(asyncio.to_thread(os.close, fd))
            if interrupted:
                raise asyncio.CancelledError

    @storage_errors
    async def verify(self, blob_id: str) -> BlobInfo:
        """Hash the whole blob (see ``BlobStore.verify``)."""
        bid = parse_blob_id(blob_id)
        found, size = await asyncio.to_thread(hash_file, self._path(bid), self._chunk, bid)
        if found != bid:
            raise BlobCorrupt(
                f"blob {bid} is corrupt: content hashes to {found}",
                blob_id=bid, found_sha256=found,
            )
        return BlobInfo(blob_id=bid, size=size)

    @storage_errors
    async def delete(self, blob_id: str) -> None:
        """Remove a blob (see ``BlobStore.delete``)."""
        bid = parse_blob_id(blob_id)

        def remove() -> None:
            path = self._path(bid)
            try:
                path.unlink()
            except FileNotFoundError:
                raise BlobNotFound(f"no blob {bid}") from None
            fsync_directory(path.parent)

        await asyncio.to_thread(remove)

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        """Yield every stored blob (for ``server check``); other files are skipped."""

        def scan(directory: Path) -> list[BlobInfo]:
            found = []
            for entry in directory.iterdir():
                with contextlib.suppress(InvalidBlobId, FileNotFoundError):
                    found.append(BlobInfo(blob_id=parse_blob_id(entry.name),
                                          size=entry.stat().st_size))
            return found

        fans = await asyncio.to_thread(
            lambda: sorted(p for p in self._root.glob("??/??") if p.is_dir()))
        for directory in fans:
            for info in await asyncio.to_thread(scan, directory):
                yield info

    def sweep(self, *, older_than_s: float = STALE_TEMP_S) -> int:
        """Remove temporary files left by crashed writers; return how many.

        Only files older than ``older_than_s`` go, because another process may
        be writing a younger one right now.
        """
        limit = self._clock() - older_than_s
        removed = 0
        for entry in self._tmp.iterdir():
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < limit:
                    entry.unlink()
                    removed += 1
        return removed

    # -- upload sessions (delegated to fs_uploads) ---------------------------

    @storage_errors
    async def create_upload(
        self, *, length: int, expires_at: int, upload_id: str | None = None
    ) -> UploadState:
        """Create an empty session (see ``BlobStore.create_upload``)."""
        return await self._sessions.create_upload(
            length=length, expires_at=expires_at, upload_id=upload_id
        )

    async def upload_state(self, upload_id: str) -> UploadState:
        """Return the durable state (see ``BlobStore.upload_state``)."""
        return await self._sessions.upload_state(upload_id)

    @storage_errors
    async def append(
        self, upload_id: str, offset: int, chunks: Chunks, *,
        on_durable: Callable[[int], Awaitable[None]] | None = None,
        prefix_sha256: bytes | None = None,
    ) -> int:
        """Append at ``offset`` durably (see ``BlobStore.append`` and ``FsUploadSessions``)."""
        return await self._sessions.append(upload_id, offset, chunks, on_durable=on_durable,
                                           prefix_sha256=prefix_sha256)

    @storage_errors
    async def trim_upload(
        self, upload_id: str, logged_offset: Callable[[], Awaitable[int]]
    ) -> UploadState:
        """Reconcile the session with the log (see ``BlobStore.trim_upload``)."""
        return await self._sessions.trim_upload(upload_id, logged_offset)

    @storage_errors
    async def promote(self, upload_id: str, expected_sha256: str, *,
                      keep_session: bool = False) -> BlobInfo:
        """Turn a complete, verified session into a blob (see ``BlobStore.promote``)."""
        return await self._sessions.promote(
            upload_id, expected_sha256, keep_session=keep_session
        )

    @storage_errors
    async def delete_upload(self, upload_id: str) -> None:
        """Remove a session (see ``BlobStore.delete_upload``)."""
        await self._sessions.delete_upload(upload_id)

    @storage_errors
    async def expire_uploads(self, now: int) -> list[UploadId]:
        """Delete expired sessions (see ``BlobStore.expire_uploads``)."""
        return await self._sessions.expire_uploads(now)


async def _write_and_hash(fd: int, buf: bytes, digest: hashlib._Hash) -> None:
    """Write ``buf`` and feed it to ``digest`` in two threads at once; both finish."""
    results = await asyncio.gather(
        asyncio.to_thread(_write_all, fd, buf), asyncio.to_thread(digest.update, buf),
        return_exceptions=True,
    )
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _discard(fd: int, tmp: Path) -> None:
    os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()


__all__ = ["IO_CHUNK_BYTES", "FsBlobStore"]
