"""Upload sessions of the filesystem blob store under damage, strays, races and cancellation.

Regression tests for the storage review: a damaged ``.state`` file, stray names
in ``uploads/``, a delete racing an append, a cancelled ``put`` and a cancelled
``append(on_durable=...)`` whose log entry already committed.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from exchange.service.uploads import tus_state
from exchange.storage.errors import (
    BlobStoreUnavailable,
    UploadBusy,
    UploadBytesLost,
    UploadNotFound,
    UploadStateCorrupt,
)
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.metadata import UploadSession
from tests.unit.storage.helpers import FakeClock, run
from tests.unit.storage.test_blobs import files_under


def _store(tmp_path: Path, now: float = 100) -> FsBlobStore:
    return FsBlobStore(tmp_path / "data", clock=FakeClock(now))


@pytest.mark.parametrize("damage", [
    b"", b"{", b"\xff\xfe", b"[]", b"null", b'{"length": 10, "offset": 0}',
    b'{"length": "10", "offset": 0, "expires_at": 1000}',
    b'{"length": 10, "offset": 0.5, "expires_at": 1000}',
    b'{"length": 10, "offset": true, "expires_at": 1000}',
    b'{"length": 10, "offset": 11, "expires_at": 1000}',
    b'{"length": 10, "offset": -1, "expires_at": 1000}',
    b"[" * 100_000,
])
def test_damaged_state_file_is_a_typed_error_naming_the_upload(
    tmp_path: Path, damage: bytes
) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=10, expires_at=1000)
        (tmp_path / "data" / "uploads" / f"{state.upload_id}.state").write_bytes(damage)
        for call in (store.upload_state(state.upload_id),
                     store.append(state.upload_id, 0, [b"x"]),
                     store.promote(state.upload_id, "0" * 64)):
            with pytest.raises(UploadStateCorrupt) as caught:
                await call
            assert caught.value.upload_id == state.upload_id
            assert state.upload_id in str(caught.value)
        # the sweep survives it (and leaves the damaged session for an operator)
        assert await store.expire_uploads(10_000) == []
        assert (tmp_path / "data" / "uploads" / state.upload_id).exists()

    run(body())


def test_expire_uploads_skips_damaged_and_stray_files(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        old = await store.create_upload(length=10, expires_at=150)
        broken = await store.create_upload(length=10, expires_at=150)
        young = await store.create_upload(length=10, expires_at=500)
        uploads = tmp_path / "data" / "uploads"
        (uploads / f"{broken.upload_id}.state").write_bytes(b"not json")
        for stray in ("notes.state", "x.state", ".hidden.state", "a b c d e f g h i j.state",
                      "backup-of-" + old.upload_id + ".state.bak"):
            (uploads / stray).write_bytes(b"{}")
        (uploads / "dir.state").mkdir()
        (uploads / ("d" * 20 + ".state")).mkdir()
        assert await store.expire_uploads(200) == [old.upload_id]
        assert (await store.upload_state(young.upload_id)).offset == 0
        assert (uploads / "notes.state").exists() and (uploads / f"{broken.upload_id}").exists()

    run(body())


class _Gate:
    """A chunk source that yields ``first``, then waits until released, then ``rest``."""

    def __init__(self, first: bytes, rest: bytes) -> None:
        self.first, self.rest = first, rest
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.first
        self.reached.set()
        await self.release.wait()
        yield self.rest


def test_delete_does_not_race_an_append_under_way(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        gate = _Gate(b"abc", b"def")
        append = asyncio.create_task(store.append(state.upload_id, 0, gate.chunks()))
        await gate.reached.wait()
        # The append holds the session: the delete is refused at once, not queued
        # (it may run inside a metadata transaction the append waits to log into).
        with pytest.raises(UploadBusy):
            await store.delete_upload(state.upload_id)
        assert await store.expire_uploads(10_000) == []  # busy: left for the next sweep
        gate.release.set()
        assert await append == 6
        # The finished append did not resurrect anything; now the delete goes through.
        await store.delete_upload(state.upload_id)
        with pytest.raises(UploadNotFound):
            await store.upload_state(state.upload_id)
        assert files_under(tmp_path / "data" / "uploads") == []

    run(body())


def test_append_waiting_for_the_lock_finds_a_deleted_session_gone(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        data = tmp_path / "data" / "uploads" / state.upload_id
        # Another process holds the lock while it deletes: an append opened the
        # file before the unlink and gets the lock only afterwards.
        holder = os.open(data, os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)
        append = asyncio.create_task(store.append(state.upload_id, 0, [b"late"]))
        await asyncio.sleep(0.05)
        (tmp_path / "data" / "uploads" / f"{state.upload_id}.state").unlink()
        data.unlink()
        os.close(holder)
        with pytest.raises(UploadNotFound):
            await append
        assert files_under(tmp_path / "data" / "uploads") == []

    run(body())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("rounds", [1, 2])
def test_cancelled_put_closes_its_file_and_removes_the_temporary(
    tmp_path: Path, rounds: int
) -> None:
    """A cancellation that lands while a write is in flight must still clean up."""
    piece = os.urandom(64 * 1024)

    async def body() -> None:
        store = FsBlobStore(tmp_path / "data", io_chunk_bytes=len(piece))
        task: asyncio.Task[object] | None = None

        async def source() -> AsyncIterator[bytes]:
            for _ in range(2 * rounds - 1):
                yield piece
            # Cancel once the store awaits the write of the previous piece
            # (it does so right after taking this one).
            asyncio.get_running_loop().call_soon(task.cancel)  # type: ignore[union-attr]
            yield piece
            await asyncio.Event().wait()  # never reached unless the cancel was lost

        before = _open_fds()
        task = asyncio.create_task(store.put(source()))
        with pytest.raises(asyncio.CancelledError):
            await task
        assert list((tmp_path / "data" / "blobs" / ".tmp").iterdir()) == []
        assert _open_fds() == before
        info = await store.put([piece])  # the store still works
        assert info.size == len(piece)

    run(body())


# -- append(on_durable=...): the log entry is the truth ---------------------------------


def _data(tmp_path: Path, upload_id: str) -> bytes:
    return (tmp_path / "data" / "uploads" / upload_id).read_bytes()


def test_cancellation_after_the_log_committed_keeps_the_bytes(tmp_path: Path) -> None:
    """The bug: the caller is cancelled once the entry is committed; the bytes must stay."""
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        logged = [0]  # stands in for the upload_sessions row written with the entry
        committed = asyncio.Event()

        async def on_durable(new_offset: int) -> None:
            logged[0] = new_offset  # the unit of work committed ...
            committed.set()
            await asyncio.sleep(0.05)  # ... and its acknowledgement is on its way

        task = asyncio.create_task(
            store.append(state.upload_id, 0, [b"logged-bytes"], on_durable=on_durable))
        await committed.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert logged[0] == 12
        assert (await store.upload_state(state.upload_id)).offset == 12
        assert _data(tmp_path, state.upload_id) == b"logged-bytes"
        # reconciling with the log changes nothing, and the upload goes on
        assert (await store.trim_upload(state.upload_id, _const(logged[0]))).offset == 12
        assert await store.append(state.upload_id, 12, [b"+more"]) == 17

    run(body())


def test_on_durable_runs_to_its_end_even_when_cancelled_before_it_commits(
    tmp_path: Path
) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        logged = [0]
        started = asyncio.Event()

        async def on_durable(new_offset: int) -> None:
            started.set()
            await asyncio.sleep(0.05)  # the unit waits for its batch ...
            logged[0] = new_offset  # ... and commits after the caller was cancelled

        task = asyncio.create_task(
            store.append(state.upload_id, 0, [b"abc"], on_durable=on_durable))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert logged[0] == 3  # not interrupted half-way
        assert (await store.upload_state(state.upload_id)).offset == 3

    run(body())


def _const(value: int) -> Callable[[], Awaitable[int]]:
    async def logged_offset() -> int:
        return value

    return logged_offset


def test_failed_log_leaves_the_bytes_for_the_log_to_decide(tmp_path: Path) -> None:
    class LogDown(Exception):
        pass

    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        await store.append(state.upload_id, 0, [b"one"])

        async def on_durable(new_offset: int) -> None:
            raise LogDown  # may have committed first (a connection lost in COMMIT)

        with pytest.raises(LogDown):
            await store.append(state.upload_id, 3, [b"two"], on_durable=on_durable)
        assert (await store.upload_state(state.upload_id)).offset == 6
        # the log says 3: the next admission cuts what it does not account for
        trimmed = await store.trim_upload(state.upload_id, _const(3))
        assert trimmed.offset == 3
        assert (await store.upload_state(state.upload_id)).offset == 3
        assert _data(tmp_path, state.upload_id) == b"one"
        # had the log said 6 (it committed after all), nothing would be cut
        await store.append(state.upload_id, 3, [b"two"])
        assert (await store.trim_upload(state.upload_id, _const(6))).offset == 6

    run(body())


def test_log_ahead_of_the_blob_store_is_a_clear_error(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        await store.append(state.upload_id, 0, [b"abc"])
        with pytest.raises(UploadBytesLost) as caught:
            await store.trim_upload(state.upload_id, _const(10))
        assert (caught.value.durable, caught.value.logged) == (3, 10)
        assert "log accounts for 10" in str(caught.value)
        assert (await store.upload_state(state.upload_id)).offset == 3  # untouched

    run(body())


def test_state_claiming_more_bytes_than_the_file_is_never_zero_filled(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        await store.append(state.upload_id, 0, [b"abcdef"])
        os.truncate(tmp_path / "data" / "uploads" / state.upload_id, 2)  # lost writes
        with pytest.raises(UploadStateCorrupt):
            await store.append(state.upload_id, 6, [b"x"])
        assert _data(tmp_path, state.upload_id) == b"ab"

    run(body())


def test_cancelled_wait_for_the_lock_does_not_keep_it(tmp_path: Path) -> None:
    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=100, expires_at=1000)
        holder = os.open(tmp_path / "data" / "uploads" / state.upload_id, os.O_RDWR)
        fcntl.flock(holder, fcntl.LOCK_EX)  # another process is appending
        waiting = asyncio.create_task(store.append(state.upload_id, 0, [b"x"]))
        await asyncio.sleep(0.05)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        os.close(holder)
        await asyncio.sleep(0.05)
        # the abandoned wait got the lock when the holder let go, and gave it back
        await store.delete_upload(state.upload_id)  # UploadBusy if it were still held

    run(body())


def test_head_reports_the_logged_offset_and_refuses_lost_bytes() -> None:
    """The service's tus state: the entry is the truth (HEAD never sees unlogged bytes)."""
    session = UploadSession(upload_id="u" * 32, participant_id="p1", case_id="c1", length=10,
                            offset=4, expires_at=1000, metadata=b"")
    assert tus_state(session, 4).offset == 4
    assert tus_state(session, 9).offset == 4  # durable but unlogged: trimmed at the next PATCH
    with pytest.raises(UploadBytesLost) as caught:
        tus_state(session, 3)
    assert (caught.value.durable, caught.value.logged) == (3, 4)


def _pieces_of(length: int) -> list[bytes]:
    """``length`` bytes as a PATCH body arrives: 256 KiB pieces and a shorter last one."""
    piece = os.urandom(256 * 1024)
    return [piece] * (length // len(piece)) + [piece[:length % len(piece)]]


def _spy_on_writebacks(monkeypatch: pytest.MonkeyPatch,
                       fail: bool = False) -> list[tuple[int, int, int]]:
    """Record each write-back an append starts: (offset, length, file size then).

    With ``fail`` the first one raises EIO, as a disk that refuses the writes would.
    """
    from exchange.storage import fs_uploads  # noqa: PLC0415 - the module whose write-back is watched

    seen: list[tuple[int, int, int]] = []
    real = fs_uploads.start_writeback

    def writeback(fd: int, offset: int, length: int) -> None:
        seen.append((offset, length, os.fstat(fd).st_size))
        if fail:
            raise OSError(5, "sync_file_range: Input/output error")
        real(fd, offset, length)

    monkeypatch.setattr(fs_uploads, "start_writeback", writeback)
    return seen


def test_a_long_append_starts_each_batchs_write_back_as_it_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.storage.fs_uploads import WRITE_BATCH_BYTES  # noqa: PLC0415

    started = _spy_on_writebacks(monkeypatch)
    length = 5 * WRITE_BATCH_BYTES + 12345

    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=length, expires_at=1000)
        assert await store.append(state.upload_id, 0, _pieces_of(length)) == length
        assert (await store.upload_state(state.upload_id)).offset == length

    run(body())
    # Every byte's write-back was started, batch by batch, in order, each range just
    # written (the file ending there), while the file still grew: not left for the fsync.
    assert [offset for offset, _, _ in started] == \
        [sum(n for _, n, _ in started[:i]) for i in range(len(started))]
    assert sum(n for _, n, _ in started) == length
    assert all(n <= WRITE_BATCH_BYTES + 256 * 1024 for _, n, _ in started), started
    assert all(size == offset + n for offset, n, size in started), started
    assert len([size for _, _, size in started if size < length]) >= 4, started


def test_a_failed_write_back_fails_the_append_and_acknowledges_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from exchange.storage.fs_uploads import WRITE_BATCH_BYTES  # noqa: PLC0415

    started = _spy_on_writebacks(monkeypatch, fail=True)
    length = 3 * WRITE_BATCH_BYTES + 4096

    async def body() -> None:
        store = _store(tmp_path)
        state = await store.create_upload(length=length, expires_at=1000)
        with pytest.raises(BlobStoreUnavailable, match="EIO"):  # answered 503, retried
            await store.append(state.upload_id, 0, _pieces_of(length))
        assert (await store.upload_state(state.upload_id)).offset == 0

    run(body())
    assert started
