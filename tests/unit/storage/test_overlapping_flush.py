"""SQLite's flushes overlap the next batch, and nothing is acknowledged or read out early.

The embedded store commits without waiting for the disk and flushes the
write-ahead log on flusher threads (``exchange.storage.sqlite_store``). These
tests hold a real SQLite store's flushes back with a gate and check what that
design promises: a unit returns only after a flush that began after its COMMIT;
the next batch commits while that flush runs; batches committed while a flush is
queued share it; a read outside a unit notes what it saw and waiting for it
blocks until that is flushed; a failed flush fails its units and the store.
"""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path

import pytest

from exchange.errors import StorageError
from exchange.storage import durability
from exchange.storage.errors import StoreClosed
from exchange.storage.sqlite_store import FLUSHERS, SqliteStore
from tests.unit.storage.helpers import LIMIT_S, GatedFlush, run


async def _committed(store: SqliteStore, batches: int) -> None:
    """Wait until ``batches`` batches have committed (not necessarily been flushed)."""
    async with asyncio.timeout(LIMIT_S):
        while store.batches < batches:
            await asyncio.sleep(0.005)


def test_wal_mode_normal_sync_and_foreign_keys(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SqliteStore.open(tmp_path)
        try:
            db = store._writer()
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert db.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL: we flush
            assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        finally:
            await store.close()

    run(body())


def test_a_unit_waits_for_its_own_flush_while_the_next_batch_commits(tmp_path: Path) -> None:
    async def body() -> None:
        gate = GatedFlush()
        store = await SqliteStore.open(tmp_path, flush=gate)
        try:
            first = asyncio.create_task(store.record_nonce("k", "nonce-1", 2**40))
            await gate.reached()
            await asyncio.sleep(0.05)
            assert not first.done()  # committed, not yet durable: not acknowledged
            second = asyncio.create_task(store.record_nonce("k", "nonce-2", 2**40))
            await _committed(store, 2)  # the next batch committed while the flush waits
            await gate.reached()  # and has a flush of its own, already running
            assert not first.done() and not second.done()
            gate.open()
            async with asyncio.timeout(LIMIT_S):
                await asyncio.gather(first, second)
            assert gate.calls == 2
        finally:
            gate.open()
            await store.close()

    run(body())


def test_batches_committed_while_a_flush_is_queued_share_it(tmp_path: Path) -> None:
    async def body() -> None:
        gate = GatedFlush()
        store = await SqliteStore.open(tmp_path, flush=gate)
        try:
            units = []
            for n in range(FLUSHERS):  # every flusher thread held at the gate
                units.append(asyncio.create_task(store.record_nonce("k", f"held-{n}", 2**40)))
                await gate.reached()
            for n in range(3):  # these queue behind them: one flush covers all three
                units.append(asyncio.create_task(store.record_nonce("k", f"queued-{n}", 2**40)))
                await _committed(store, FLUSHERS + n + 1)
            assert not any(unit.done() for unit in units)
            gate.open()
            async with asyncio.timeout(LIMIT_S):
                await asyncio.gather(*units)
            assert gate.calls == FLUSHERS + 1
        finally:
            gate.open()
            await store.close()

    run(body())


def test_a_read_outside_units_waits_until_what_it_saw_is_flushed(tmp_path: Path) -> None:
    async def body() -> None:
        gate = GatedFlush()
        store = await SqliteStore.open(tmp_path, flush=gate)
        try:
            with durability.tracking() as before:
                size = await store.tree_size()
            await store.wait_durable(before.commit)  # nothing unflushed yet: no wait
            unit = asyncio.create_task(store.record_nonce("k", "nonce-1", 2**40))
            await gate.reached()
            with durability.tracking() as seen:
                assert await store.tree_size() == size
            assert seen.commit == before.commit + 1  # it may have seen the unflushed batch
            waiting = asyncio.create_task(store.wait_durable(seen.commit))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            gate.open()
            async with asyncio.timeout(LIMIT_S):
                await asyncio.gather(unit, waiting)
        finally:
            gate.open()
            await store.close()

    run(body())


def test_a_failed_flush_fails_its_units_and_the_store(tmp_path: Path) -> None:
    async def body() -> None:
        gate = GatedFlush()
        gate.failure = OSError(errno.EIO, "Input/output error")
        store = await SqliteStore.open(tmp_path, flush=gate)
        try:
            unit = asyncio.create_task(store.record_nonce("k", "nonce-1", 2**40))
            await gate.reached()
            with durability.tracking() as seen:
                await store.tree_size()
            waiting = asyncio.create_task(store.wait_durable(seen.commit))
            gate.open()
            with pytest.raises(StorageError, match="could not flush its write-ahead log"):
                await unit
            with pytest.raises(StorageError, match="refuses all work"):
                await waiting
            with pytest.raises(StorageError, match="refuses all work"):
                await store.record_nonce("k", "nonce-2", 2**40)
        finally:
            await store.close()

    run(body())


def test_closing_releases_whoever_waits_for_a_flush_that_will_not_come(tmp_path: Path) -> None:
    async def body() -> None:
        store = await SqliteStore.open(tmp_path)
        store._commits += 1  # a batch whose COMMIT was sent, then cut short (cancellation)
        waiting = asyncio.create_task(store.wait_durable(store._commits))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        await store.close()
        with pytest.raises(StoreClosed):
            async with asyncio.timeout(LIMIT_S):
                await waiting

    run(body())
