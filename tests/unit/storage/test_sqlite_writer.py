"""SQLite writer: batches wait for another process's write lock without blocking the loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from exchange.storage.errors import ReplayedNonce
from exchange.storage.sqlite_store import DATABASE_NAME, SqliteStore
from tests.unit.storage.helpers import run


async def _loop_lag_s(duration_s: float) -> float:
    """Return the worst lateness of 10 ms sleeps over ``duration_s`` (event-loop stalls)."""
    worst = 0.0
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        started = time.monotonic()
        await asyncio.sleep(0.01)
        worst = max(worst, time.monotonic() - started - 0.01)
    return worst


def test_batch_waits_for_a_foreign_write_lock_off_the_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path)
        other = sqlite3.connect(tmp_path / DATABASE_NAME, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")  # another process's writer holds the lock

            async def write() -> None:
                async with store.transaction("nonce") as tx:
                    await tx.record_nonce("p-1", "n-1", 2_000_000_000)

            writer = asyncio.create_task(write())
            # The batch waits on the writer thread: the loop keeps running meanwhile.
            lag = await _loop_lag_s(0.3)
            assert not writer.done()
            assert lag < 0.2
            other.execute("ROLLBACK")
            await asyncio.wait_for(writer, 10)
            with pytest.raises(ReplayedNonce):  # committed: the nonce is spent
                async with store.transaction("again") as tx:
                    await tx.record_nonce("p-1", "n-1", 2_000_000_000)
        finally:
            other.close()
            await store.close()

    run(scenario())


def test_batches_commit_without_a_foreign_writer(tmp_path: Path) -> None:
    async def scenario() -> None:
        store = await SqliteStore.open(tmp_path)
        try:
            async def write(n: int) -> None:
                async with store.transaction("nonce") as tx:
                    await tx.record_nonce("p-1", f"n-{n}", 2_000_000_000)

            await asyncio.gather(*(write(n) for n in range(20)))
            assert store.batches >= 1
        finally:
            await store.close()
        # Durable: a fresh connection sees every nonce.
        db = sqlite3.connect(tmp_path / DATABASE_NAME)
        try:
            assert db.execute("SELECT count(*) FROM seen_nonces").fetchone()[0] == 20
        finally:
            db.close()

    run(scenario())
