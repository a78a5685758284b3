"""One conformance suite for blob stores: every behaviour of the interface, on fs and on S3.

The S3 store runs against a real Ceph RGW (tests/s3.py) with 5 MiB parts, so
multipart paths (part boundaries, tails, resumption by a second store object
without this process's running hash) are exercised with a few MiB of data.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from exchange.storage._s3io import MIN_PART_BYTES
from exchange.storage.blobs import BlobStore
from exchange.storage.errors import (
    AlreadyExists,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    InvalidBlobId,
    InvalidValue,
    PrefixDigestMismatch,
    PrefixHashUnknown,
    UploadBytesLost,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadOffsetMismatch,
    ValueTooLarge,
)
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.s3_blobs import S3BlobStore
from tests import s3
from tests.unit.storage.helpers import FakeClock, run, sha

#: A few parts' worth of data: crosses S3 part boundaries and leaves a tail.
BIG = 2 * MIN_PART_BYTES + 12_345

Opener = Callable[[FakeClock], contextlib.AbstractAsyncContextManager[Any]]


async def overwrite(store: Any, blob_id: str, data: bytes) -> None:
    """Replace a stored blob's bytes behind the store's back (a bad disk, a bad copy)."""
    if isinstance(store, FsBlobStore):
        path = next(p for p in store._root.rglob(blob_id))
        path.write_bytes(data)
        return
    await store._bucket.put_bytes(f"blobs/{blob_id}", data, "test")


@pytest.fixture(scope="module")
def _big() -> bytes:
    return os.urandom(BIG)


@pytest.fixture(params=["fs", "s3"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens the store under test; opening twice gives two views of the same store."""
    if request.param == "fs":
        @contextlib.asynccontextmanager
        async def fs(clock: FakeClock) -> AsyncIterator[FsBlobStore]:
            yield FsBlobStore(tmp_path / "data", clock=clock)
        return fs
    location = s3.location()
    credentials = s3.credentials()

    @contextlib.asynccontextmanager
    async def in_s3(clock: FakeClock) -> AsyncIterator[S3BlobStore]:
        store = await S3BlobStore.open(location, credentials, part_bytes=MIN_PART_BYTES,
                                       clock=clock, logging_lease_s=2.0)
        try:
            yield store
        finally:
            await store.close()
    return in_s3


def check(opener: Opener, body: Callable[[Any, FakeClock], Awaitable[None]]) -> None:
    clock = FakeClock(100)

    async def main() -> None:
        async with opener(clock) as store:
            await body(store, clock)

    run(main())


async def collect(iterator: AsyncIterator[bytes]) -> bytes:
    return b"".join([chunk async for chunk in iterator])


async def listed(store: Any) -> list[str]:
    return sorted([info.blob_id async for info in store.list_blobs()])


def test_put_addresses_by_sha256_lists_and_deletes(opener: Opener, _big: bytes) -> None:
    async def body(store: BlobStore, _: FakeClock) -> None:
        for data in (b"hello", _big):
            info = await store.put([data[:1000], data[1000:]])
            assert info.blob_id == sha(data) and info.size == len(data)
            assert await store.stat(info.blob_id) == info
            assert await collect(await store.read(info.blob_id)) == data
            assert await store.verify(info.blob_id) == info
            assert await store.put([data], expected_sha256=info.blob_id) == info  # idempotent
        assert await listed(store) == sorted([sha(b"hello"), sha(_big)])
        await store.delete(sha(b"hello"))
        with pytest.raises(BlobNotFound):
            await store.stat(sha(b"hello"))
        assert await listed(store) == [sha(_big)]

    check(opener, body)


def test_async_chunks_empty_blob_and_wrong_hash(opener: Opener) -> None:
    async def gen() -> AsyncIterator[bytes]:
        for piece in (b"a" * 10, b"b" * 20):
            yield piece

    async def body(store: BlobStore, _: FakeClock) -> None:
        info = await store.put(gen())
        assert info.blob_id == sha(b"a" * 10 + b"b" * 20)
        empty = await store.put([])
        assert empty.size == 0 and await collect(await store.read(empty.blob_id)) == b""
        with pytest.raises(BlobHashMismatch):
            await store.put([b"data"], expected_sha256=sha(b"other"))
        assert await listed(store) == sorted([info.blob_id, empty.blob_id])

    check(opener, body)


def test_ids_are_checked_and_unknown_blobs_are_not_found(opener: Opener) -> None:
    async def body(store: BlobStore, _: FakeClock) -> None:
        for bad in ("../" + "a" * 61, "A" * 64, "a" * 63):
            with pytest.raises(InvalidBlobId):
                await store.stat(bad)
            with pytest.raises(InvalidBlobId):
                await store.put([b"x"], expected_sha256=bad)
        missing = sha(b"missing")
        for call in (store.stat(missing), store.read(missing), store.verify(missing),
                     store.delete(missing), store.open_range(missing, 0, 0)):
            with pytest.raises(BlobNotFound):
                await call

    check(opener, body)


def test_open_range_returns_exactly_the_slice(opener: Opener, _big: bytes) -> None:
    async def body(store: BlobStore, _: FakeClock) -> None:
        info = await store.put([_big])
        for start, end in ((0, 0), (0, 1), (5, MIN_PART_BYTES + 7), (BIG - 3, BIG), (0, BIG)):
            got = await collect(await store.open_range(info.blob_id, start, end))
            assert got == _big[start:end]
        for start, end in ((-1, 2), (3, 2), (0, BIG + 1)):
            with pytest.raises(InvalidValue):
                await store.open_range(info.blob_id, start, end)

    check(opener, body)


def test_upload_resumes_in_another_store_and_promotes(opener: Opener, _big: bytes) -> None:
    """Small PATCHes, then large ones crossing parts; a second store object resumes."""
    async def body(store: BlobStore, clock: FakeClock) -> None:
        state = await store.create_upload(length=BIG, expires_at=1000)
        offset = 0
        for size in (1, 100, 70_000):
            offset = await store.append(state.upload_id, offset, [_big[offset:offset + size]])
        assert offset == 70_101
        async with opener(clock) as other:  # another process (no running hash)
            assert (await other.upload_state(state.upload_id)).offset == offset
            cut = MIN_PART_BYTES + 3
            pieces = [_big[i:min(i + 65_536, cut)] for i in range(offset, cut, 65_536)]
            offset = await other.append(state.upload_id, offset, pieces)
            assert offset == cut
        with pytest.raises(UploadIncomplete):
            await store.promote(state.upload_id, sha(_big))
        offset = await store.append(state.upload_id, offset, [_big[offset:]])
        assert (await store.upload_state(state.upload_id)).complete
        with pytest.raises(BlobHashMismatch):
            await store.promote(state.upload_id, sha(b"other"))
        assert (await store.upload_state(state.upload_id)).complete  # left intact
        info = await store.promote(state.upload_id, sha(_big), keep_session=True)
        assert await store.promote(state.upload_id, sha(_big)) == info  # again: allowed
        assert info.size == BIG and await collect(await store.read(info.blob_id)) == _big
        with pytest.raises(UploadNotFound):
            await store.upload_state(state.upload_id)

    check(opener, body)


def test_a_prefix_digest_is_checked_against_the_running_hash(opener: Opener,
                                                              _big: bytes) -> None:
    """``prefix_sha256`` (issue 17): the hash of the upload through the append's end must
    match or nothing is kept; a store object that did not hash the earlier bytes (another
    process) refuses before reading; the running hash goes on across parts and tails."""
    def digest(end: int) -> bytes:
        return hashlib.sha256(_big[:end]).digest()

    async def body(store: BlobStore, clock: FakeClock) -> None:
        state = await store.create_upload(length=BIG, expires_at=1000)
        uid, cut = state.upload_id, MIN_PART_BYTES + 7
        assert await store.append(uid, 0, [_big[:cut]], prefix_sha256=digest(cut)) == cut
        tampered = bytearray(_big[cut:2 * cut])
        tampered[9] ^= 1
        with pytest.raises(PrefixDigestMismatch):
            await store.append(uid, cut, [bytes(tampered)], prefix_sha256=digest(2 * cut))
        with pytest.raises(PrefixDigestMismatch):  # right bytes, a digest of other bytes
            await store.append(uid, cut, [_big[cut:2 * cut]], prefix_sha256=digest(cut))
        assert (await store.upload_state(uid)).offset == cut
        async with opener(clock) as other:  # another process: no running hash
            consumed: list[int] = []

            async def pieces() -> AsyncIterator[bytes]:
                consumed.append(1)
                yield _big[cut:2 * cut]

            with pytest.raises(PrefixHashUnknown):
                await other.append(uid, cut, pieces(), prefix_sha256=digest(2 * cut))
            assert not consumed and (await other.upload_state(uid)).offset == cut
        assert await store.append(uid, cut, [_big[cut:2 * cut]],
                                  prefix_sha256=digest(2 * cut)) == 2 * cut
        assert await store.append(uid, 2 * cut, [_big[2 * cut:]],
                                  prefix_sha256=digest(BIG)) == BIG
        assert (await store.promote(uid, sha(_big))).size == BIG

    check(opener, body)


def test_small_upload_and_empty_upload(opener: Opener) -> None:
    async def body(store: BlobStore, _: FakeClock) -> None:
        state = await store.create_upload(length=5, expires_at=1000, upload_id="s" * 20)
        with pytest.raises(AlreadyExists):
            await store.create_upload(length=1, expires_at=1000, upload_id="s" * 20)
        assert await store.append(state.upload_id, 0, [b"ab", b"c"]) == 3
        assert await store.append(state.upload_id, 3, [b"de"]) == 5
        assert (await store.promote(state.upload_id, sha(b"abcde"))).size == 5
        empty = await store.create_upload(length=0, expires_at=1000)
        assert (await store.upload_state(empty.upload_id)).complete
        assert (await store.promote(empty.upload_id, sha(b""))).size == 0
        assert await listed(store) == sorted([sha(b"abcde"), sha(b"")])

    check(opener, body)


def test_wrong_offset_past_length_and_failed_source_write_nothing(opener: Opener) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"good"
        raise ConnectionResetError("client went away")

    async def body(store: BlobStore, _: FakeClock) -> None:
        state = await store.create_upload(length=10, expires_at=1000)
        await store.append(state.upload_id, 0, [b"abc"])
        for wrong in (0, 2, 4):
            with pytest.raises(UploadOffsetMismatch) as caught:
                await store.append(state.upload_id, wrong, [b"zz"])
            assert (caught.value.expected, caught.value.found) == (3, wrong)
        with pytest.raises(ValueTooLarge):
            await store.append(state.upload_id, 3, [b"defg", b"hijklmn"])
        with pytest.raises(ConnectionResetError):
            await store.append(state.upload_id, 3, failing())
        assert (await store.upload_state(state.upload_id)).offset == 3
        assert await store.append(state.upload_id, 3, [b"defghij"]) == 10
        assert (await store.promote(state.upload_id, sha(b"abcdefghij"))).size == 10

    check(opener, body)


def test_failed_log_is_trimmed_back_and_lost_bytes_are_named(opener: Opener,
                                                             _big: bytes) -> None:
    """``on_durable`` failed: the bytes stay until the log (the truth) trims them."""
    async def body(store: BlobStore, _: FakeClock) -> None:
        state = await store.create_upload(length=BIG, expires_at=1000)
        logged = 0

        async def log_ok(new_offset: int) -> None:
            nonlocal logged
            logged = new_offset

        async def log_fails(new_offset: int) -> None:
            raise RuntimeError("database away")

        async def logged_offset() -> int:
            return logged

        offset = await store.append(state.upload_id, 0, [_big[:1000]], on_durable=log_ok)
        with pytest.raises(RuntimeError):
            await store.append(state.upload_id, offset, [_big[1000:MIN_PART_BYTES + 10]],
                               on_durable=log_fails)
        assert (await store.upload_state(state.upload_id)).offset == MIN_PART_BYTES + 10
        trimmed = await store.trim_upload(state.upload_id, logged_offset)
        assert trimmed.offset == 1000
        assert await store.append(state.upload_id, 1000, [_big[1000:]], on_durable=log_ok) == BIG
        assert (await store.promote(state.upload_id, sha(_big))).size == BIG

        other = await store.create_upload(length=10, expires_at=1000)
        await store.append(other.upload_id, 0, [b"abc"])

        async def too_far() -> int:
            return 5

        with pytest.raises(UploadBytesLost):
            await store.trim_upload(other.upload_id, too_far)

    check(opener, body)


def test_expiry_and_deletion(opener: Opener) -> None:
    async def body(store: BlobStore, clock: FakeClock) -> None:
        old = await store.create_upload(length=10, expires_at=150)
        young = await store.create_upload(length=10, expires_at=500)
        await store.append(old.upload_id, 0, [b"abc"])
        clock.now = 200
        with pytest.raises(UploadExpired):
            await store.append(old.upload_id, 3, [b"d"])
        assert await store.expire_uploads(200) == [old.upload_id]
        with pytest.raises(UploadNotFound):
            await store.upload_state(old.upload_id)
        await store.delete_upload(young.upload_id)
        for call in (store.upload_state(young.upload_id), store.delete_upload(young.upload_id),
                     store.append(young.upload_id, 0, [b"x"])):
            with pytest.raises(UploadNotFound):
                await call

    check(opener, body)


def test_racing_appends_from_two_processes_one_wins(opener: Opener) -> None:
    """Two store objects (two processes) append at the same offset: one commits, one is refused."""
    async def body(store: BlobStore, clock: FakeClock) -> None:
        state = await store.create_upload(length=8, expires_at=1000)
        await store.append(state.upload_id, 0, [b"ab"])
        async with opener(clock) as other:
            results = await asyncio.gather(
                store.append(state.upload_id, 2, [b"cdef"]),
                other.append(state.upload_id, 2, [b"CDEF"]),
                return_exceptions=True,
            )
        wins = [r for r in results if r == 6]
        losses = [r for r in results if isinstance(r, UploadOffsetMismatch)]
        assert len(wins) == 1 and len(losses) == 1, results
        winner = b"abcdef" if results[0] == 6 else b"abCDEF"
        assert await store.append(state.upload_id, 6, [b"gh"]) == 8
        info = await store.promote(state.upload_id, sha(winner + b"gh"))
        assert await collect(await store.read(info.blob_id)) == winner + b"gh"

    check(opener, body)


def test_corrupt_blob_is_never_served_silently(opener: Opener) -> None:
    async def body(store: Any, _: FakeClock) -> None:
        data = os.urandom(3 * 1024 * 1024 + 5)
        info = await store.put([data])
        await overwrite(store, info.blob_id, data[:-1] + bytes([data[-1] ^ 1]))
        with pytest.raises(BlobCorrupt):
            await store.verify(info.blob_id)
        served = bytearray()
        with pytest.raises(BlobCorrupt):
            async for chunk in await store.read(info.blob_id):
                served += chunk
        assert len(served) < len(data)  # the last chunk is held back until the hash matched
        # Storing the right bytes again repairs the fs store; S3 blobs are create-only, so
        # there the object store's own integrity (scrub, versioning) is the remedy.
        await store.put([data])
        if isinstance(store, FsBlobStore):
            assert await store.verify(info.blob_id) == info

    check(opener, body)


def test_s3_sweep_removes_only_stale_staging(tmp_path: Path) -> None:
    """A large put whose writer died leaves a multipart upload under tmp/; sweep ends it."""
    location, credentials = s3.location(), s3.credentials()

    async def body() -> None:
        clock = FakeClock(time.time())
        store = await S3BlobStore.open(location, credentials, clock=clock)
        try:
            bucket = store._bucket
            await bucket.call("test", bucket.client.create_multipart_upload(
                Bucket=bucket.location.bucket, Key=bucket.key("tmp/crashed")))
            await bucket.put_bytes("tmp/half-installed", b"x", "test")
            assert await store.sweep() == 0  # young: maybe a writer at work
            clock.now += 25 * 3600
            assert await store.sweep() == 2
            left = await bucket.call("test", bucket.client.list_multipart_uploads(
                Bucket=bucket.location.bucket, Prefix=bucket.key("tmp/")))
            assert not left.get("Uploads")
            assert [name async for name in bucket.names("tmp/")] == []
        finally:
            await store.close()

    run(body())
