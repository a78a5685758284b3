"""The pull's sink: the plaintext goes to the disk as it is written, and a refusal fails the pull.

The sink's writer starts each write's write-back at once
(:func:`exchange.fsutil.start_writeback`), so the final fsync finds little
left and the disk's queue stays shallow for other flushes. An error that
start meets fails the download before anything is moved into place.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import os
from pathlib import Path

import pytest

from exchange.client import download
from exchange.crypto import age
from exchange.crypto.recipients.x25519 import X25519Identity

MIB = 1024 * 1024


def _pull_into(partial: Path, identity: X25519Identity, ciphertext: bytes) -> download._Sink:
    """Feed ``ciphertext`` to a fresh sink in 2 MiB pieces as ``_fetch`` does; finish it."""
    sink = download._Sink(partial, identity, keep=False)

    async def main() -> None:
        pending: collections.deque[list[object]] = collections.deque()
        try:
            for at in range(0, len(ciphertext), 2 * MIB):
                pending.append(sink.feed([ciphertext[at:at + 2 * MIB]]))  # type: ignore[arg-type]
                if len(pending) >= 4:
                    await download._settle(pending.popleft())  # type: ignore[arg-type]
            while pending:
                await download._settle(pending.popleft())  # type: ignore[arg-type]
            await sink.finish()
        finally:
            await download._drain(pending)  # type: ignore[arg-type]

    try:
        asyncio.run(main())
    finally:
        sink.close()
    return sink


def _spy_on_writebacks(monkeypatch: pytest.MonkeyPatch,
                       fail: bool = False) -> list[tuple[int, int, int]]:
    """Record each write-back the sink starts: (offset, length, file size then)."""
    seen: list[tuple[int, int, int]] = []
    real = download.start_writeback

    def writeback(fd: int, offset: int, length: int) -> None:
        seen.append((offset, length, os.fstat(fd).st_size))
        if fail:
            raise OSError(errno.EIO, "sync_file_range: Input/output error")
        real(fd, offset, length)

    monkeypatch.setattr(download, "start_writeback", writeback)
    return seen


def test_the_sink_writes_and_hashes_the_whole_plaintext_sending_it_to_disk_as_it_goes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    identity = X25519Identity.generate()
    plaintext = os.urandom(20 * MIB + 12345)
    started = _spy_on_writebacks(monkeypatch)
    sink = _pull_into(tmp_path, identity, age.encrypt(plaintext, [identity.recipient()]))
    assert sink.plain_path.read_bytes() == plaintext
    assert sink.plain_size == len(plaintext)
    # Every byte's write-back was started, in order, each range just written, while
    # the file still grew: none of it was left for the final fsync.
    assert [offset for offset, _, _ in started] == \
        [sum(n for _, n, _ in started[:i]) for i in range(len(started))]
    assert sum(n for _, n, _ in started) == len(plaintext)
    assert all(size == offset + n for offset, n, size in started), started
    assert len([size for _, _, size in started if size < len(plaintext)]) >= 4, started


def test_a_failed_write_back_fails_the_pull(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    identity = X25519Identity.generate()
    plaintext = os.urandom(6 * MIB + 12345)
    started = _spy_on_writebacks(monkeypatch, fail=True)
    with pytest.raises(OSError) as caught:
        _pull_into(tmp_path, identity, age.encrypt(plaintext, [identity.recipient()]))
    assert caught.value.errno == errno.EIO
    assert started and started[0][2] < len(plaintext)  # met during the transfer
