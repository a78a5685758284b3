"""Resumable upload sessions under ``<data_dir>/uploads`` (DESIGN.md §8).

Theory of operation. An upload session is ``uploads/<id>`` (bytes) plus
``uploads/<id>.state`` (JSON: length, durable offset, expiry), rewritten
atomically only after the appended bytes are fsynced; bytes beyond the recorded
offset are leftovers of an interrupted append and are truncated away. A
``flock`` on the data file serialises appends across processes. A complete
session becomes a blob through the blob store's install step (``promote``).

Running hashes. While appending, the store also feeds the bytes (in the
thread that writes them, see ``_write_all``) to a SHA-256 of the whole
upload, kept in memory per upload while this process has seen every byte
from offset 0 in order. ``promote``
then compares that digest instead of reading the file again. It is only kept
for bytes that can no longer change: an append whose ``on_durable`` hook
succeeded (the log accounts for them, so no trim can cut them), or one made
without a hook; any other outcome, a trim below it, a gap or another
process's append means the next ``promote`` re-hashes the file as before.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from exchange.fsutil import fsync_directory, start_writeback, write_atomic
from exchange.storage._fsio import finish, hash_file, temp_path, wait_out
from exchange.storage.blobs import (
    BlobId,
    BlobInfo,
    Chunks,
    UploadId,
    UploadState,
    aiter_chunks,
    check_prefix,
    check_within_length,
    parse_blob_id,
    parse_upload_id,
)
from exchange.storage.errors import (
    AlreadyExists,
    BlobHashMismatch,
    InvalidUploadId,
    InvalidValue,
    PrefixHashUnknown,
    UploadBusy,
    UploadBytesLost,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadStateCorrupt,
    shown,
)

#: Running upload hashes kept at most (least recently used go first): a few hundred
#: bytes each, so memory stays flat however many uploads a process sees.
MAX_RUNNING_HASHES = 1024
#: An append writes and hashes its pieces in batches of this size, one worker-thread hop
#: each (a hop costs about 90 us of CPU on one core; 1 MiB batches were measured slower).
#: Memory per append: one batch being gathered and one being written.
WRITE_BATCH_BYTES = 2 * 1024 * 1024


class FsUploadSessions:
    """The upload-session half of :class:`~exchange.storage.fs_blobs.FsBlobStore`.

    Separate because sessions are their own concept (locks, ``.state`` files,
    running hashes); the store delegates its session methods here and lends
    its ``install`` step so that ``promote`` places blobs exactly as ``put`` does.
    """

    def __init__(
        self, directory: Path, *, temp_dir: Path, install: Callable[[Path, BlobId], None],
        io_chunk_bytes: int, clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = directory
        self._tmp = temp_dir
        self._install = install
        self._chunk = io_chunk_bytes
        self._clock = clock
        # upload id -> (offset, SHA-256 of bytes [0, offset)); see the module notes.
        self._running: collections.OrderedDict[UploadId, tuple[int, hashlib._Hash]] = \
            collections.OrderedDict()
        self._dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _paths(self, upload_id: UploadId) -> tuple[Path, Path]:
        return self._dir / upload_id, self._dir / f"{upload_id}.state"

    async def create_upload(
        self, *, length: int, expires_at: int, upload_id: str | None = None
    ) -> UploadState:
        """Create an empty session (see ``BlobStore.create_upload``)."""
        if not isinstance(length, int) or not isinstance(expires_at, int):
            raise TypeError("length and expires_at must be int")
        if length < 0:
            raise InvalidValue(f"upload length must be >= 0, found {length}")
        uid = parse_upload_id(upload_id if upload_id is not None else secrets.token_urlsafe(24))
        state = UploadState(upload_id=uid, length=length, offset=0, expires_at=expires_at)

        def create() -> None:
            data, meta = self._paths(uid)
            try:
                fd = os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                raise AlreadyExists(f"upload {uid} exists already") from None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _write_state(meta, state)

        await asyncio.to_thread(create)
        self._keep_running(uid, 0, None)
        return state

    def _running_from(self, uid: UploadId, offset: int) -> hashlib._Hash | None:
        """Return a hash of bytes ``[0, offset)`` to continue, or None if not known.

        A copy: the kept state stays valid for ``offset`` if this append fails.
        """
        if offset == 0:
            return hashlib.sha256()
        kept = self._running.get(uid)
        if kept is None or kept[0] != offset:
            return None
        return kept[1].copy()

    def _keep_running(self, uid: UploadId, offset: int, digest: hashlib._Hash | None) -> None:
        if digest is None:
            self._running.pop(uid, None)
            return
        self._running[uid] = (offset, digest)
        self._running.move_to_end(uid)
        while len(self._running) > MAX_RUNNING_HASHES:
            self._running.popitem(last=False)

    async def upload_state(self, upload_id: str) -> UploadState:
        """Return the durable state (see ``BlobStore.upload_state``)."""
        uid = parse_upload_id(upload_id)
        return await asyncio.to_thread(_read_state, self._paths(uid)[1], uid)

    async def append(
        self, upload_id: str, offset: int, chunks: Chunks, *,
        on_durable: Callable[[int], Awaitable[None]] | None = None,
        prefix_sha256: bytes | None = None,
    ) -> int:
        """Append at ``offset`` durably (see ``BlobStore.append``).

        Cancellation-safe: every file step that started is finished before the
        session is unlocked (a thread still writing must not outlive the lock
        or its descriptor), and ``on_durable`` runs to its end in its own task.
        Once ``on_durable`` has been called the bytes stay, whatever its outcome:
        it may have committed the log entry before failing or being cancelled,
        and bytes the log accounts for must never disappear. Bytes it did not
        log are cut by the next :meth:`trim_upload` (the caller's log decides).
        """
        uid = parse_upload_id(upload_id)
        if not isinstance(offset, int):
            raise TypeError("offset must be int")
        meta = self._paths(uid)[1]
        fd, state = await self._locked(uid)
        new_offset = state.offset
        recorded = False  # the .state file may say new_offset
        keep = False  # the bytes up to new_offset stay
        try:
            if self._clock() >= state.expires_at:
                raise UploadExpired(f"upload {uid} expired at {state.expires_at}")
            if offset != state.offset:
                raise UploadOffsetMismatch(
                    f"upload offset {offset} does not match durable offset {state.offset}",
                    expected=state.offset, found=offset,
                )
            running = self._running_from(uid, state.offset)
            if prefix_sha256 is not None and running is None:
                raise PrefixHashUnknown(
                    f"this server process has not hashed the first {state.offset} bytes of "
                    f"upload {uid}; send the PATCH with a Content-Digest")
            new_offset = await self._write_all(fd, state, chunks, running)
            if prefix_sha256 is not None:
                check_prefix(running, prefix_sha256, uid, new_offset)
            if new_offset != state.offset:
                await finish(asyncio.to_thread(os.fsync, fd))
                recorded = True
                await finish(asyncio.to_thread(
                    _write_state, meta,
                    UploadState(upload_id=uid, length=state.length, offset=new_offset,
                                expires_at=state.expires_at),
                ))
            if on_durable is not None:
                # Still under the lock, so no other append or trim can move the
                # session while the caller logs these bytes. Not cancelled with
                # us (the wait is shielded): its outcome must be known before
                # the lock goes, or a trim elsewhere could cut logged bytes.
                logging = asyncio.ensure_future(on_durable(new_offset))
                keep = True
                # Until the hook is known to have succeeded these bytes may still be
                # trimmed (and replaced by others): forget the running hash.
                self._keep_running(uid, new_offset, None)
                if await wait_out(logging):
                    if not logging.cancelled():
                        logging.exception()  # retrieved: the cancellation propagates
                    raise asyncio.CancelledError
                logging.result()
            keep = True
            self._keep_running(uid, new_offset, running)
        finally:
            await finish(asyncio.to_thread(
                _end_append, fd, meta, state, rollback=not keep, restore_state=recorded,
            ))
        return new_offset

    async def _write_all(self, fd: int, state: UploadState, chunks: Chunks,
                         running: hashlib._Hash | None) -> int:
        """Write ``chunks`` at ``state.offset`` (hashing them into ``running``); return the end.

        Pieces are gathered into batches of ``WRITE_BATCH_BYTES`` and each batch
        is written and hashed in one worker thread, piece by piece while it is in
        the CPU cache, as the next batch is gathered: one thread hop per batch and
        no copy to join the pieces (issue 17, the server's CPU per byte). Each
        batch's write-back to the disk starts as soon as it is written
        (:func:`~exchange.fsutil.start_writeback`), so the fsync that ends the
        append finds little left and the disk's queue stays a batch deep for the
        database's flushes. Whatever happens, no thread still uses ``fd`` when
        this returns.
        """
        end = state.offset  # bytes received so far
        written = state.offset  # where the next batch goes
        batch: list[bytes] = []
        inflight: asyncio.Future[None] | None = None
        try:
            async for chunk in aiter_chunks(chunks):
                check_within_length(end + len(chunk), state.length)
                batch.append(chunk)
                end += len(chunk)
                if end - written >= WRITE_BATCH_BYTES:
                    if inflight is not None:
                        await asyncio.shield(inflight)
                    inflight = asyncio.ensure_future(
                        asyncio.to_thread(_pwrite_and_hash, fd, batch, written, running))
                    batch, written = [], end
            if inflight is not None:
                await asyncio.shield(inflight)
            inflight = None
            if batch:
                await finish(asyncio.to_thread(_pwrite_and_hash, fd, batch, written, running))
        finally:
            if inflight is not None:
                await wait_out(inflight)
                if not inflight.cancelled():
                    inflight.exception()  # retrieved: the original error is what propagates
        return end

    async def trim_upload(
        self, upload_id: str, logged_offset: Callable[[], Awaitable[int]]
    ) -> UploadState:
        """Reconcile the session with ``await logged_offset()`` (see ``BlobStore.trim_upload``).

        The log is the truth: durable bytes past the logged offset are cut; a
        logged offset past the durable one means logged bytes were lost, which
        no trim can repair (:class:`UploadBytesLost`).
        """
        uid = parse_upload_id(upload_id)
        meta = self._paths(uid)[1]
        fd, state = await self._locked(uid)
        try:
            target = await logged_offset()
            if target > state.offset:
                raise UploadBytesLost(
                    f"upload {uid} holds {state.offset} durable bytes but the log accounts "
                    f"for {target}: bytes were lost after they were logged (a disk or "
                    "filesystem that did not keep an fsynced write); the upload must be "
                    "terminated and sent again",
                    upload_id=uid, durable=state.offset, logged=target,
                )
            if 0 <= target < state.offset:
                self._keep_running(uid, 0, None)
                state = UploadState(upload_id=uid, length=state.length, offset=target,
                                    expires_at=state.expires_at)
                await finish(asyncio.to_thread(_cut_to, fd, meta, state))
        finally:
            await finish(asyncio.to_thread(os.close, fd))
        return state

    async def _locked(self, uid: UploadId) -> tuple[int, UploadState]:
        """Take the session's lock in a thread; a cancelled wait never leaves it held.

        The thread may block for long on another process's lock, so a
        cancellation does not wait for it: the descriptor it eventually
        returns is closed (unlocked) as soon as it arrives.
        """
        taking = asyncio.ensure_future(asyncio.to_thread(self._lock_upload, uid))
        try:
            return await asyncio.shield(taking)
        except asyncio.CancelledError:
            if not taking.done():
                taking.add_done_callback(_release_abandoned)
            else:
                _release_abandoned(taking)
            raise

    def _lock_upload(self, uid: UploadId) -> tuple[int, UploadState]:
        """Open and lock the session's data file; drop bytes past the durable offset."""
        data, meta = self._paths(uid)
        try:
            fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UploadNotFound(f"no upload {uid}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            # Re-read under the lock: another process may have appended meanwhile.
            state = _read_state(meta, uid)
            size = os.fstat(fd).st_size
            if size < state.offset:
                # Never "repair" by extending: that would count zeros as data.
                raise UploadStateCorrupt(
                    f"upload {uid} holds {size} bytes but its state file records "
                    f"{state.offset} durable bytes",
                    upload_id=uid,
                )
            if size != state.offset:
                os.ftruncate(fd, state.offset)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd, state

    async def promote(self, upload_id: str, expected_sha256: str, *,
                      keep_session: bool = False) -> BlobInfo:
        """Turn a complete, verified session into a blob (see ``BlobStore.promote``).

        With ``keep_session`` the blob is a hard link to the session's data
        file, installed like any blob; the session keeps its name until
        :meth:`delete_upload`. Sharing the inode is safe: a complete session's
        bytes are never written again (appends past its length are refused and
        trims only cut bytes the log never accounted for, which a complete,
        committed upload has none of).
        """
        uid = parse_upload_id(upload_id)
        expected = parse_blob_id(expected_sha256)
        data, meta = self._paths(uid)
        fd, state = await self._locked(uid)
        try:
            if not state.complete:
                raise UploadIncomplete(
                    f"upload {uid} has {state.offset} of {state.length} bytes"
                )
            kept = self._running.get(uid)
            if kept is not None and kept[0] == state.offset:
                # Every byte was hashed as this process wrote it (module notes).
                found, size = kept[1].hexdigest(), state.offset
            else:
                found, size = await finish(asyncio.to_thread(hash_file, data, self._chunk, None))
            if found != expected:
                raise BlobHashMismatch(f"upload {uid} hashes to {found}, want {expected}")

            def install() -> None:
                if not keep_session:
                    self._install(data, expected)
                    meta.unlink()
                    fsync_directory(self._dir)
                    return
                link = temp_path(self._tmp)
                os.link(data, link)
                self._install(link, expected)
                # Renaming onto a name of the same inode (promoted before) is a no-op
                # that leaves the source behind.
                with contextlib.suppress(FileNotFoundError):
                    link.unlink()

            # Finished even if we are cancelled: the lock must outlast the rename,
            # or an append waiting for it could write into the installed blob.
            await finish(asyncio.to_thread(install))
            if not keep_session:
                self._keep_running(uid, 0, None)
        finally:
            await finish(asyncio.to_thread(os.close, fd))
        return BlobInfo(blob_id=expected, size=size)

    async def delete_upload(self, upload_id: str) -> None:
        """Remove a session (see ``BlobStore.delete_upload``)."""
        uid = parse_upload_id(upload_id)
        await asyncio.to_thread(self._remove_upload, uid)
        self._keep_running(uid, 0, None)

    def _remove_upload(self, uid: UploadId) -> None:
        """Remove the session under its lock, so no append under way can re-create it.

        Without the lock an append that already holds it would rewrite the
        ``.state`` file after the delete and resurrect the session. The lock is
        tried, not waited for: deletes run inside metadata transactions (the
        server's termination and expiry sweep) while an append holding this
        lock may be waiting to log into one, so waiting could deadlock.
        """
        data, meta = self._paths(uid)
        try:
            fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            fd = -1  # a session whose bytes file is gone: only the state is left
        try:
            if fd >= 0:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise UploadBusy(
                        f"upload {uid} is locked by an append or promotion under way"
                    ) from None
            # Checked under the lock: a promotion or delete that held it is done now.
            try:
                meta.unlink()
            except FileNotFoundError:
                raise UploadNotFound(f"no upload {uid}") from None
            with contextlib.suppress(FileNotFoundError):
                data.unlink()
            fsync_directory(self._dir)
        finally:
            if fd >= 0:
                os.close(fd)  # releases the flock

    async def expire_uploads(self, now: int) -> list[UploadId]:
        """Delete expired sessions (see ``BlobStore.expire_uploads``)."""

        def expire() -> list[UploadId]:
            gone: list[UploadId] = []
            for meta in self._dir.glob("*.state"):
                # Anything that is not one of our sessions (an operator's backup
                # copy, a stray file) is none of this sweep's business.
                try:
                    uid = parse_upload_id(meta.name.removesuffix(".state"))
                except InvalidUploadId:
                    continue
                try:
                    state = _read_state(meta, uid)
                    if state.expires_at <= now:
                        self._remove_upload(uid)
                        gone.append(uid)
                except (UploadNotFound, UploadBusy, UploadStateCorrupt):
                    # A damaged session is left for an operator to inspect (its
                    # expiry is unknown), a busy one for the next sweep; one bad
                    # file must not stop the sweep.
                    continue
            return sorted(gone)

        gone = await asyncio.to_thread(expire)
        for uid in gone:
            self._keep_running(uid, 0, None)
        return gone


def _pwrite_and_hash(fd: int, pieces: list[bytes], offset: int,
                     digest: hashlib._Hash | None) -> None:
    """Write ``pieces`` from ``offset`` on, feeding each to ``digest`` (if any) just before.

    Then start their write-back (:func:`~exchange.fsutil.start_writeback`).
    """
    start = offset
    for piece in pieces:
        if digest is not None:
            digest.update(piece)
        _pwrite_all(fd, piece, offset)
        offset += len(piece)
    start_writeback(fd, start, offset - start)


def _pwrite_all(fd: int, data: bytes, offset: int) -> None:
    """``pwrite`` all of ``data`` (a short write near a full disk is continued, not lost)."""
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _end_append(
    fd: int, meta: Path, old: UploadState, *, rollback: bool, restore_state: bool
) -> None:
    """End an append: undo it when asked (state first, then bytes), then unlock and close.

    The old state is restored before the bytes are cut; if that fails the bytes
    stay (a state file claiming bytes the data file lacks would be worse).
    """
    try:
        if rollback:
            if restore_state:
                _write_state(meta, old)
            os.ftruncate(fd, old.offset)
            os.fsync(fd)
    finally:
        os.close(fd)  # closing releases the flock


def _cut_to(fd: int, meta: Path, state: UploadState) -> None:
    """Record ``state`` (a smaller offset), then drop the bytes past it."""
    _write_state(meta, state)
    os.ftruncate(fd, state.offset)
    os.fsync(fd)


def _release_abandoned(taking: asyncio.Future[tuple[int, UploadState]]) -> None:
    """Close the descriptor of a lock whose waiter was cancelled (releasing the lock)."""
    if not taking.cancelled() and taking.exception() is None:
        os.close(taking.result()[0])


def _write_state(path: Path, state: UploadState) -> None:
    body = {"length": state.length, "offset": state.offset, "expires_at": state.expires_at}
    write_atomic(path, json.dumps(body, sort_keys=True).encode())


def _read_state(path: Path, uid: UploadId) -> UploadState:
    """Read a session's ``.state`` file; a damaged one is :class:`UploadStateCorrupt`.

    The file is ours, but a full disk, an operator's editor or a bad sector can
    still leave it unreadable: that must name the upload, not crash with a
    ``JSONDecodeError``/``KeyError`` traceback.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UploadNotFound(f"no upload {uid}") from None
    except IsADirectoryError:
        data = b""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError):  # JSONDecodeError and bad UTF-8 are ValueErrors
        raw = None
    fields = ("length", "offset", "expires_at")
    if not isinstance(raw, dict) or sorted(raw) != sorted(fields) or not all(
        type(raw[name]) is int for name in fields
    ):
        raise UploadStateCorrupt(
            f"upload {uid} has a damaged state file: expected a json object with integer "
            f"length, offset and expires_at, found {shown(data[:60])}",
            upload_id=uid,
        )
    if not 0 <= raw["offset"] <= raw["length"]:
        raise UploadStateCorrupt(
            f"upload {uid} has a damaged state file: expected 0 <= offset <= length, "
            f"found offset {raw['offset']} and length {raw['length']}",
            upload_id=uid,
        )
    return UploadState(
        upload_id=uid, length=raw["length"], offset=raw["offset"],
        expires_at=raw["expires_at"],
    )


__all__ = ["MAX_RUNNING_HASHES", "WRITE_BATCH_BYTES", "FsUploadSessions"]
