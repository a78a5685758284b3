"""The pull's sink: a failed background flush fails the download instead of vanishing.

The sink fdatasyncs the plaintext on a thread of its own every ``_SYNC_EVERY``
bytes while the transfer goes on. The kernel reports a failed write-back to a
descriptor once, so an error that background flush meets must be raised by
the sink itself (the final fsync would not see it) before anything is moved
into place.
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


def test_the_sink_writes_and_hashes_the_whole_plaintext(tmp_path: Path) -> None:
    identity = X25519Identity.generate()
    plaintext = os.urandom(2 * download._SYNC_EVERY + 12345)
    sink = _pull_into(tmp_path, identity, age.encrypt(plaintext, [identity.recipient()]))
    assert sink.plain_path.read_bytes() == plaintext
    assert sink.plain_size == len(plaintext)


def test_a_failed_background_flush_fails_the_pull(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    identity = X25519Identity.generate()
    plaintext = os.urandom(3 * download._SYNC_EVERY + 12345)
    flushes: list[int] = []

    def failing_flush(fd: int) -> None:
        flushes.append(os.fstat(fd).st_size)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(download, "datasync", failing_flush)
    with pytest.raises(OSError) as caught:
        _pull_into(tmp_path, identity, age.encrypt(plaintext, [identity.recipient()]))
    assert caught.value.errno == errno.EIO
    assert flushes and flushes[0] < len(plaintext)  # it was the flush during the transfer
