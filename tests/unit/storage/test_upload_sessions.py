"""Upload sessions of the filesystem blob store under damage, strays, races and cancellation.

Regression tests for the storage review: a damaged ``.state`` file, stray names
in ``uploads/``, a delete racing an append, a cancelled ``put`` and a cancelled
``append(on_durable=...)`` whose log entry already committed.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exchange.storage.errors import UploadBusy, UploadNotFound, UploadStateCorrupt
from exchange.storage.fs_blobs import FsBlobStore
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
