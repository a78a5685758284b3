"""The two-pass upload streaming of ``exchange.client._upstream`` against a one-pass oracle.

The age file made in one pass (``ResumableAge`` header + STREAM) is the
oracle: the hashing pass must publish, for each planned PATCH, the SHA-256 of
exactly those ciphertext bytes (and the whole-file digests), and the sending
pass, started at any offset (in the header, inside a STREAM chunk, at the
end), must hand out exactly the oracle's bytes from there.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import itertools
import os
import threading
from pathlib import Path

import pytest

from exchange.client._upstream import Hasher, Sender, Stopped, _SendBuffers, plan_patches
from exchange.crypto.age import X25519Identity, decrypt
from exchange.crypto.resumable import ResumableAge

KIB = 1024
MIB = 1024 * KIB
IDENTITY = X25519Identity.generate()


def _oracle(age: ResumableAge, plaintext: bytes) -> bytes:
    stream = age.stream()
    return age.header + stream.update(plaintext) + stream.finalize()


def _digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


@pytest.mark.parametrize(("offset", "length", "first", "most"), [
    (0, 0, 1, 1), (0, 10, 3, 100), (5, 10, 3, 4), (0, 1000, 16, 64), (7, 7, 1, 1),
])
def test_plan_covers_the_range_in_growing_pieces(offset: int, length: int, first: int,
                                                 most: int) -> None:
    plan = plan_patches(offset, length, first_bytes=first, max_bytes=most)
    if length <= offset:
        assert plan == []
        return
    assert [s for s, _ in plan] == [offset, *[e for _, e in plan][:-1]]
    assert plan[-1][1] == length
    sizes = [e - s for s, e in plan]
    assert sizes[0] == min(first, most, length - offset)
    assert all(size <= most for size in sizes)
    assert all(b >= a for a, b in itertools.pairwise(sizes[:-1]))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, ResumableAge, bytes]:
    # Several 2 MiB reads, a short final STREAM chunk.
    plaintext = os.urandom(5 * MIB + 12_345)
    path = tmp_path_factory.mktemp("upstream") / "file.bin"
    path.write_bytes(plaintext)
    age = ResumableAge.new([IDENTITY.recipient()])
    return path, plaintext, age, _oracle(age, plaintext)


@pytest.mark.parametrize("start", [0, 1, 150, 64 * KIB + 17, 3 * MIB + 1])
def test_hasher_publishes_the_prefix_digest_of_each_planned_patch(
        sample: tuple[Path, bytes, ResumableAge, bytes], start: int) -> None:
    """Each PATCH is signed with the hash of the ciphertext from 0 through its end."""
    path, plaintext, age, cipher = sample
    plan = plan_patches(start, len(cipher), first_bytes=100 * KIB, max_bytes=MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = Hasher(fd, age, plan, lead_bytes=2 * MIB)
        hasher.start()
        for s, e in plan:
            assert hasher.digest_for(s) == (e, _digest(cipher[:e]))
            hasher.acknowledge(e)
        done = hasher.finish()
    finally:
        os.close(fd)
    assert done.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
    assert done.ciphertext_sha256 == hashlib.sha256(cipher).hexdigest()
    assert (done.plaintext_size, done.produced) == (len(plaintext), len(cipher))
    with pytest.raises(KeyError):
        hasher.digest_for(start + 1)


def test_one_patch_upload_digest_is_the_whole_ciphertext_hash(
        sample: tuple[Path, bytes, ResumableAge, bytes]) -> None:
    """The PATCH from 0 shares the whole hash's state: one pass gives both."""
    path, _, age, cipher = sample
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = Hasher(fd, age, [(0, len(cipher))], lead_bytes=None)
        hasher.start()
        assert hasher.digest_for(0) == (len(cipher), _digest(cipher))
        done = hasher.finish()
    finally:
        os.close(fd)
    assert done.ciphertext_sha256 == hashlib.sha256(cipher).hexdigest()


def test_hasher_waits_for_acknowledgements_and_stops_promptly(
        sample: tuple[Path, bytes, ResumableAge, bytes]) -> None:
    path, _, age, cipher = sample
    plan = plan_patches(0, len(cipher), first_bytes=64 * KIB, max_bytes=64 * KIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        hasher = Hasher(fd, age, plan, lead_bytes=128 * KIB)
        hasher.start()
        assert hasher.digest_for(0)[1] == _digest(cipher[: 64 * KIB])
        # Nothing acknowledged: it must not run through the file (2 MiB reads past
        # the lead are the most it may take).
        last = plan[-1][0]
        done = threading.Event()

        def wait_last() -> None:
            with contextlib.suppress(Stopped):
                hasher.digest_for(last)
                done.set()

        threading.Thread(target=wait_last, daemon=True).start()
        assert not done.wait(0.3)
        stopper = threading.Thread(target=hasher.stop)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive() and not hasher.is_alive()
    finally:
        os.close(fd)


@pytest.mark.parametrize("start", [0, 7, 64 * KIB + 16, 2 * MIB + 5, -1])
def test_sender_regenerates_the_same_bytes_from_any_offset(
        sample: tuple[Path, bytes, ResumableAge, bytes], start: int) -> None:
    path, plaintext, age, cipher = sample
    start = len(cipher) if start < 0 else start

    async def collect() -> bytes:
        fd = os.open(path, os.O_RDONLY)
        sender = Sender(fd, age, start, asyncio.get_running_loop())
        sender.start()
        out = bytearray()
        try:
            while piece := await sender.next_piece(300 * KIB):
                assert len(piece) <= 300 * KIB
                out += piece
            assert await sender.next_piece(10) == b""
        finally:
            await asyncio.to_thread(sender.stop)
            os.close(fd)
        return bytes(out)

    got = asyncio.run(collect())
    assert got == cipher[start:]
    if start == 0:
        assert decrypt(got, [IDENTITY]) == plaintext


def test_sender_reuses_a_buffer_only_once_no_view_of_it_is_left(tmp_path: Path) -> None:
    """The transport may keep what it was handed (TLS; Python 3.12's plain one too): pieces
    kept alive while the sender goes on must keep their bytes, and freed buffers recycle."""
    plaintext = os.urandom(30 * MIB + 5)  # more 2 MiB reads than the buffers kept
    path = tmp_path / "file.bin"
    path.write_bytes(plaintext)
    age = ResumableAge.new([IDENTITY.recipient()])
    cipher = _oracle(age, plaintext)

    async def hold_everything() -> tuple[list[bytes | memoryview], set[int]]:
        fd = os.open(path, os.O_RDONLY)
        sender = Sender(fd, age, 0, asyncio.get_running_loop())
        sender.start()
        held: list[bytes | memoryview] = []
        try:
            while piece := await sender.next_piece(1 * MIB):
                held.append(piece)  # as a transport's queue would, without copying
        finally:
            await asyncio.to_thread(sender.stop)
            os.close(fd)
        return held, {id(memoryview(p).obj) for p in held if isinstance(p, memoryview)}

    held, buffers = asyncio.run(hold_everything())
    assert b"".join(held) == cipher  # nothing was overwritten while a view was held
    assert len(buffers) >= 15  # every 2 MiB read had its own buffer meanwhile


def test_send_buffers_hand_out_a_buffer_again_once_its_views_are_gone() -> None:
    buffers = _SendBuffers()
    first = buffers.take(100)
    view = memoryview(first)[10:20]
    second = buffers.take(100)
    assert second is not first  # a view of ``first`` is alive
    view.release()
    assert buffers.take(100) is first
    assert len(first) == 100  # the test resized nothing for good
    assert len(buffers.take(200)) == 200  # too small buffers are not handed out
