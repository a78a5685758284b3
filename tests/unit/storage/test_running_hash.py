"""Running upload hashes of the filesystem blob store (``promote`` without a re-read).

The store hashes appended bytes while writing them and lets ``promote`` use
that digest only while this process saw every byte from offset 0 in order and
those bytes can no longer change. The property below drives random sequences
of appends (some failing half-way, some with a failing log hook), trims and a
second store instance (another process) over the same directory, and checks
that ``promote`` always judges the bytes actually in the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from exchange.storage import fs_uploads
from exchange.storage.errors import BlobHashMismatch
from exchange.storage.fs_blobs import FsBlobStore
from tests.unit.storage.helpers import FakeClock, run

LENGTH = 64


class _Boom(Exception):
    pass


def _stores(root: Path) -> tuple[FsBlobStore, FsBlobStore]:
    """Two store instances over one data dir: like two server processes."""
    return (FsBlobStore(root, clock=FakeClock(100)), FsBlobStore(root, clock=FakeClock(100)))


async def _pieces(data: bytes, fail_after: int | None) -> AsyncIterator[bytes]:
    for i in range(0, len(data), 7):
        if fail_after is not None and i >= fail_after:
            raise _Boom
        yield data[i:i + 7]


def _file(root: Path, upload_id: str) -> bytes:
    return (root / "uploads" / upload_id).read_bytes()


def test_promote_uses_the_hash_computed_while_writing(tmp_path: Path) -> None:
    """Proof that no re-read happens: bytes changed behind the store's back go unseen by
    the process that wrote them, while another process (no running hash) re-hashes."""
    data = bytes(range(LENGTH))
    expected = hashlib.sha256(data).hexdigest()

    async def body() -> None:
        writer, other = _stores(tmp_path / "data")
        state = await writer.create_upload(length=LENGTH, expires_at=1000)
        uid = state.upload_id
        for start in range(0, LENGTH, 20):
            await writer.append(uid, start, [data[start:start + 20]])
        path = tmp_path / "data" / "uploads" / uid
        path.write_bytes(b"\xff" + data[1:])
        with pytest.raises(BlobHashMismatch):
            await other.promote(uid, expected, keep_session=True)
        info = await writer.promote(uid, expected, keep_session=True)
        assert info.size == LENGTH

    run(body())


def test_a_failed_log_hook_forgets_the_running_hash(tmp_path: Path) -> None:
    data = bytes(range(LENGTH))

    async def failing_hook(offset: int) -> None:
        raise _Boom

    async def body() -> None:
        store, _ = _stores(tmp_path / "data")
        uid = (await store.create_upload(length=LENGTH, expires_at=1000)).upload_id
        with pytest.raises(_Boom):
            await store.append(uid, 0, [data], on_durable=failing_hook)
        # The bytes stay (the log may have committed), but they could still be
        # trimmed and replaced: promote must read the file.
        (tmp_path / "data" / "uploads" / uid).write_bytes(b"\x01" * LENGTH)
        with pytest.raises(BlobHashMismatch):
            await store.promote(uid, hashlib.sha256(data).hexdigest())
        await store.promote(uid, hashlib.sha256(b"\x01" * LENGTH).hexdigest())

    run(body())


@pytest.mark.parametrize("cut_to", [0, 1, 30, LENGTH - 1])
def test_bytes_cut_and_written_again_elsewhere_are_rehashed(tmp_path: Path, cut_to: int) -> None:
    """This process wrote everything, a trim cut it back, another process wrote the
    rest differently: the digest computed while writing is stale and must not be used."""
    data = bytes(range(LENGTH))
    again = data[:cut_to] + bytes(LENGTH - cut_to)

    async def cut() -> int:
        return cut_to

    async def body() -> None:
        mine, other = _stores(tmp_path / "data")
        uid = (await mine.create_upload(length=LENGTH, expires_at=1000)).upload_id
        await mine.append(uid, 0, [data])
        await mine.trim_upload(uid, cut)
        await other.append(uid, cut_to, [again[cut_to:]])
        with pytest.raises(BlobHashMismatch):
            await mine.promote(uid, hashlib.sha256(data).hexdigest(), keep_session=True)
        await mine.promote(uid, hashlib.sha256(again).hexdigest())

    run(body())


Step = tuple[str, int, int]  # (kind, size, fail_after)
steps = st.lists(st.tuples(
    st.sampled_from(["append", "append-fail", "hook-fail", "other-append", "trim"]),
    st.integers(0, LENGTH), st.integers(0, 40)), max_size=8)


@settings(deadline=None, max_examples=60)
@given(plan=steps, content=st.binary(min_size=LENGTH, max_size=LENGTH),
       batch=st.sampled_from([10, fs_uploads.WRITE_BATCH_BYTES]))
def test_promote_always_judges_the_bytes_in_the_file(plan: list[Step], content: bytes,
                                                      batch: int,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    """``batch``: with 10-byte write batches an append has several, one written while
    the next is gathered, so failures land between and during batches."""
    root = tmp_path_factory.mktemp("running") / "data"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(fs_uploads, "WRITE_BATCH_BYTES", batch)
        _judge(plan, content, root)


def _judge(plan: list[Step], content: bytes, root: Path) -> None:

    async def body() -> None:
        mine, other = _stores(root)
        uid = (await mine.create_upload(length=LENGTH, expires_at=1000)).upload_id
        flip = 0
        for kind, wanted, fail_after in plan:
            offset = (await mine.upload_state(uid)).offset
            size = min(wanted, LENGTH - offset)
            # Later writes of the same offsets may carry other bytes (a client that
            # changed its mind after a failure): the hash must follow the file.
            flip ^= 0x55
            data = bytes(b ^ flip for b in content[offset:offset + size])

            async def hook(new_offset: int, kind: str = kind) -> None:
                if kind == "hook-fail":
                    raise _Boom

            async def logged(target: int = max(0, offset - fail_after)) -> int:
                return target

            store = other if kind == "other-append" else mine
            try:
                if kind == "trim":
                    await mine.trim_upload(uid, logged)
                else:
                    await store.append(uid, offset, _pieces(data, fail_after if kind ==
                                                            "append-fail" else None),
                                       on_durable=hook)
            except _Boom:
                pass
        state = await mine.upload_state(uid)
        if state.offset < LENGTH:
            rest = bytes(LENGTH - state.offset)
            await mine.append(uid, state.offset, _chunks(rest))
        actual = _file(root, uid)
        assert len(actual) == LENGTH
        wrong = hashlib.sha256(actual + b"x").hexdigest()
        with pytest.raises(BlobHashMismatch):
            await mine.promote(uid, wrong, keep_session=True)
        info = await mine.promote(uid, hashlib.sha256(actual).hexdigest())
        assert info.size == LENGTH

    run(body())


def _chunks(data: bytes) -> Iterable[bytes]:
    return [data[:5], data[5:]]
