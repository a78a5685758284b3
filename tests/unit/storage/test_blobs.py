"""The filesystem blob store: content addressing, durability rules, ranges, upload sessions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.storage.blobs import aiter_chunks, parse_blob_id
from exchange.storage.errors import (
    AlreadyExists,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    InvalidBlobId,
    InvalidUploadId,
    InvalidValue,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadOffsetMismatch,
    ValueTooLarge,
)
from exchange.storage.fs_blobs import FsBlobStore
from tests.unit.storage.helpers import FakeClock, run, sha

PATH_LIKE = ["../" + "a" * 61, "/etc/passwd", "A" * 64, "a" * 63, "a" * 65, "", "..",
             "ab/cd/" + "a" * 58, "a" * 63 + "\n"]


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


async def collect(iterator: object) -> bytes:
    return b"".join([chunk async for chunk in iterator])  # type: ignore[attr-defined]


def test_put_addresses_by_sha256_and_fans_out(blobs: FsBlobStore, tmp_path: Path) -> None:
    data = os.urandom(300_000)

    async def body() -> None:
        info = await blobs.put([data[:1000], data[1000:]])
        assert info.blob_id == sha(data) and info.size == len(data)
        path = tmp_path / "data" / "blobs" / info.blob_id[:2] / info.blob_id[2:4] / info.blob_id
        assert path.read_bytes() == data
        assert await blobs.stat(info.blob_id) == info
        assert await collect(await blobs.read(info.blob_id)) == data
        assert await blobs.verify(info.blob_id) == info
        again = await blobs.put([data], expected_sha256=info.blob_id)  # idempotent
        assert again == info
        assert not list((tmp_path / "data" / "blobs" / ".tmp").iterdir())

    run(body())


def test_put_streams_async_chunks_and_empty_blob(blobs: FsBlobStore) -> None:
    async def gen() -> object:
        for i in range(40):
            yield bytes([i]) * 100_000

    async def body() -> None:
        info = await blobs.put(gen())  # type: ignore[arg-type]
        assert info.size == 4_000_000
        empty = await blobs.put([])
        assert empty.blob_id == sha(b"") and empty.size == 0
        assert await collect(await blobs.read(empty.blob_id)) == b""

    run(body())


def test_put_with_wrong_expected_hash_stores_nothing(blobs: FsBlobStore, tmp_path: Path) -> None:
    async def body() -> None:
        with pytest.raises(BlobHashMismatch):
            await blobs.put([b"data"], expected_sha256=sha(b"other"))
        assert files_under(tmp_path / "data" / "blobs") == []

    run(body())


@pytest.mark.parametrize("bad", PATH_LIKE)
def test_rejects_path_like_blob_ids(blobs: FsBlobStore, tmp_path: Path, bad: str) -> None:
    async def body() -> None:
        for call in (blobs.stat(bad), blobs.read(bad), blobs.verify(bad), blobs.delete(bad),
                     blobs.open_range(bad, 0, 0), blobs.put([b"x"], expected_sha256=bad)):
            with pytest.raises(InvalidBlobId):
                await call
        assert files_under(tmp_path / "data") == []

    run(body())


def test_blob_id_type_is_checked() -> None:
    with pytest.raises(TypeError):
        parse_blob_id(b"a" * 64)


def test_unknown_blob_is_not_found(blobs: FsBlobStore) -> None:
    async def body() -> None:
        missing = sha(b"missing")
        for call in (blobs.stat(missing), blobs.read(missing), blobs.verify(missing),
                     blobs.delete(missing), blobs.open_range(missing, 0, 0)):
            with pytest.raises(BlobNotFound):
                await call

    run(body())


@given(data=st.binary(max_size=5000), a=st.integers(0, 5000), b=st.integers(0, 5000))
def test_open_range_returns_exactly_the_slice(tmp_path_factory: pytest.TempPathFactory,
                                              data: bytes, a: int, b: int) -> None:
    store = FsBlobStore(tmp_path_factory.mktemp("r"), io_chunk_bytes=1000)
    start, end = min(a, b), max(a, b)

    async def body() -> None:
        info = await store.put([data])
        if end > len(data):
            with pytest.raises(InvalidValue):
                await store.open_range(info.blob_id, start, end)
        else:
            assert await collect(await store.open_range(info.blob_id, start, end)) == data[
                start:end]

    run(body())


def test_corrupt_blob_is_never_served_silently(blobs: FsBlobStore, tmp_path: Path) -> None:
    data = os.urandom(50_000)

    async def body() -> None:
        small = FsBlobStore(tmp_path / "data", io_chunk_bytes=8192)
        info = await small.put([data])
        path = next(p for p in files_under(tmp_path / "data" / "blobs"))
        damaged = bytearray(data)
        damaged[-1] ^= 1
        path.write_bytes(bytes(damaged))
        served = bytearray()
        with pytest.raises(BlobCorrupt) as caught:
            async for chunk in await small.read(info.blob_id):
                served += chunk
        assert caught.value.blob_id == info.blob_id
        assert len(served) < len(data)  # the final chunk was held back
        with pytest.raises(BlobCorrupt):
            await small.verify(info.blob_id)
        path.write_bytes(data + b"extra")  # appended bytes are corruption too
        with pytest.raises(BlobCorrupt):
            await collect(await small.read(info.blob_id))
        await small.put([data])  # re-uploading the right bytes repairs the blob
        assert await small.verify(info.blob_id) == info

    run(body())


def test_upload_session_appends_resumes_and_promotes(tmp_path: Path) -> None:
    content = os.urandom(200_000)

    async def body() -> None:
        store = FsBlobStore(tmp_path / "data", clock=FakeClock(100))
        state = await store.create_upload(length=len(content), expires_at=1000)
        assert state.offset == 0 and not state.complete
        offset = await store.append(state.upload_id, 0, [content[:70_000]])
        assert offset == 70_000
        # a restart: a new store object on the same directory sees the durable offset
        store = FsBlobStore(tmp_path / "data", clock=FakeClock(100))
        assert (await store.upload_state(state.upload_id)).offset == 70_000
        with pytest.raises(UploadIncomplete):
            await store.promote(state.upload_id, sha(content))
        offset = await store.append(state.upload_id, offset, [content[70_000:]])
        assert (await store.upload_state(state.upload_id)).complete
        with pytest.raises(BlobHashMismatch):
            await store.promote(state.upload_id, sha(b"other"))
        assert (await store.upload_state(state.upload_id)).complete  # left intact
        info = await store.promote(state.upload_id, sha(content))
        assert info.size == len(content)
        assert await collect(await store.read(info.blob_id)) == content
        with pytest.raises(UploadNotFound):
            await store.upload_state(state.upload_id)
        assert files_under(tmp_path / "data" / "uploads") == []

    run(body())


def test_append_at_wrong_offset_writes_nothing(tmp_path: Path) -> None:
    async def body() -> None:
        store = FsBlobStore(tmp_path / "data", clock=FakeClock(100))
        state = await store.create_upload(length=10, expires_at=1000, upload_id="u" * 20)
        await store.append(state.upload_id, 0, [b"abc"])
        for wrong in (0, 2, 4, 100):
            with pytest.raises(UploadOffsetMismatch) as caught:
                await store.append(state.upload_id, wrong, [b"zz"])
            assert (caught.value.expected, caught.value.found) == (3, wrong)
        with pytest.raises(ValueTooLarge):
            await store.append(state.upload_id, 3, [b"defg", b"hijklmn"])  # past length 10
        assert (await store.upload_state(state.upload_id)).offset == 3
        assert (tmp_path / "data" / "uploads" / state.upload_id).read_bytes() == b"abc"
        with pytest.raises(AlreadyExists):
            await store.create_upload(length=1, expires_at=1, upload_id="u" * 20)

    run(body())


def test_failed_chunk_source_truncates_back(tmp_path: Path) -> None:
    async def failing() -> object:
        yield b"good"
        raise ConnectionResetError("client went away")

    async def body() -> None:
        store = FsBlobStore(tmp_path / "data", clock=FakeClock(100))
        state = await store.create_upload(length=100, expires_at=1000)
        with pytest.raises(ConnectionResetError):
            await store.append(state.upload_id, 0, failing())  # type: ignore[arg-type]
        assert (await store.upload_state(state.upload_id)).offset == 0
        assert (tmp_path / "data" / "uploads" / state.upload_id).read_bytes() == b""
        assert await store.append(state.upload_id, 0, [b"again"]) == 5

    run(body())


def test_leftover_bytes_past_the_durable_offset_are_dropped(tmp_path: Path) -> None:
    """A crash between writing bytes and recording the offset leaves junk; it never counts."""
    async def body() -> None:
        store = FsBlobStore(tmp_path / "data", clock=FakeClock(100))
        state = await store.create_upload(length=100, expires_at=1000)
        await store.append(state.upload_id, 0, [b"durable"])
        with (tmp_path / "data" / "uploads" / state.upload_id).open("ab") as handle:
            handle.write(b"torn-write")
        assert (await store.upload_state(state.upload_id)).offset == 7
        assert await store.append(state.upload_id, 7, [b"-more"]) == 12
        assert (tmp_path / "data" / "uploads" / state.upload_id).read_bytes() == b"durable-more"

    run(body())


def test_upload_expiry(tmp_path: Path) -> None:
    async def body() -> None:
        clock = FakeClock(100)
        store = FsBlobStore(tmp_path / "data", clock=clock)
        old = await store.create_upload(length=10, expires_at=150)
        young = await store.create_upload(length=10, expires_at=500)
        clock.now = 200
        with pytest.raises(UploadExpired):
            await store.append(old.upload_id, 0, [b"x"])
        assert await store.expire_uploads(200) == [old.upload_id]
        with pytest.raises(UploadNotFound):
            await store.append(old.upload_id, 0, [b"x"])
        assert (await store.upload_state(young.upload_id)).offset == 0
        await store.delete_upload(young.upload_id)
        with pytest.raises(UploadNotFound):
            await store.delete_upload(young.upload_id)

    run(body())


@pytest.mark.parametrize("bad", ["../../etc/passwd", "short", "x" * 65, "a/b" * 8, "é" * 20])
def test_rejects_path_like_upload_ids(blobs: FsBlobStore, tmp_path: Path, bad: str) -> None:
    async def body() -> None:
        for call in (blobs.upload_state(bad), blobs.append(bad, 0, [b"x"]),
                     blobs.promote(bad, sha(b"")), blobs.delete_upload(bad),
                     blobs.create_upload(length=1, expires_at=1, upload_id=bad)):
            with pytest.raises(InvalidUploadId):
                await call
        assert files_under(tmp_path / "data") == []

    run(body())


def test_sweep_removes_only_stale_temporaries(tmp_path: Path) -> None:
    clock = FakeClock(10_000_000_000)
    store = FsBlobStore(tmp_path / "data", clock=clock)
    stale = tmp_path / "data" / "blobs" / ".tmp" / "1-dead.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (1, 1))
    fresh = tmp_path / "data" / "blobs" / ".tmp" / "2-live.tmp"
    fresh.write_bytes(b"partial")
    os.utime(fresh, (clock.now, clock.now))
    assert store.sweep() == 1
    assert not stale.exists() and fresh.exists()


def test_chunks_must_be_bytes() -> None:
    async def body() -> None:
        with pytest.raises(TypeError):
            async for _ in aiter_chunks(["text"]):  # type: ignore[list-item]
                pass

    run(body())
