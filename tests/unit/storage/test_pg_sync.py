"""PostgreSQL's synchronous connections (``exchange.storage._pgsync``) against a real server.

Their statements run on the event-loop thread so that a read or a batch costs
no turn of the loop (``tests/unit/storage/test_run_unit.py`` checks that on both
backends); what may wait for long (the log's lock held by another process, the
commit's flush) must never hold the loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from exchange.errors import StorageError
from exchange.storage._pgsync import LOCK_TIMEOUT_MS
from exchange.storage.postgres_store import LOG_LOCK_KEY, PostgresStore
from tests.unit.storage.helpers import LIMIT_S, Ticker, run
from tests.unit.storage.helpers import test_signer as signer
from tests.unit.storage.test_metadata import participant


@asynccontextmanager
async def _store(dsn: str) -> AsyncIterator[PostgresStore]:
    store = await PostgresStore.open(dsn, signer=signer)
    try:
        yield store
    finally:
        await store.close()


async def _add(store: PostgresStore, pid: str) -> None:
    async with store.transaction("add") as tx:
        await tx.add_participant(participant(pid, f"fp-{pid}"))


def test_a_batch_waits_for_another_process_s_lock_off_the_loop(pg_database: str) -> None:
    """Another process holding the log's lock delays our batch, never our event loop."""
    async def body() -> tuple[bool, int, bool]:
        async with _store(pg_database) as store:
            other = await asyncpg.connect(pg_database)  # "another process's" batch
            try:
                holding = other.transaction()
                await holding.start()
                await other.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK_KEY)
                async with Ticker() as ticker:
                    adding = asyncio.create_task(_add(store, "late"))
                    # Longer than a statement may wait for a lock on the loop: the wait for
                    # the log's lock, on the thread, has no such limit.
                    await asyncio.sleep(LOCK_TIMEOUT_MS / 1000 + 0.5)
                    waited, turns = not adding.done(), ticker.turns
                    await holding.rollback()  # the other batch ends: ours goes on
                    await asyncio.wait_for(adding, LIMIT_S)
            finally:
                await other.close()
            found = (await store.get_participant("late")).participant_id == "late"
            return waited, turns, found

    waited, turns, found = run(body())
    assert waited  # the batch could not begin while the lock was held
    assert turns > 100  # the loop went on meanwhile (thousands of turns here)
    assert found


def test_a_table_locked_from_outside_fails_a_read_in_bounded_time(pg_database: str) -> None:
    """An operator's LOCK TABLE (or a newer server's migration) must not hold the loop for
    as long as it holds the table: the read gives up after LOCK_TIMEOUT_MS (503)."""
    async def body() -> tuple[float, bool]:
        async with _store(pg_database) as store:
            await _add(store, "p")
            await store.get_participant("p")  # the reading connection is open
            other = await asyncpg.connect(pg_database)
            try:
                locking = other.transaction()
                await locking.start()
                await other.execute("LOCK TABLE participants IN ACCESS EXCLUSIVE MODE")
                started = time.monotonic()
                with pytest.raises(StorageError):
                    await store.get_participant("p")
                waited = time.monotonic() - started
                await locking.rollback()
            finally:
                await other.close()
            return waited, (await store.get_participant("p")).participant_id == "p"

    waited, read_again = run(body())
    assert LOCK_TIMEOUT_MS / 1000 * 0.9 <= waited < LOCK_TIMEOUT_MS / 1000 + 3
    assert read_again  # the lock gone, the same connection reads again


def test_a_lost_connection_fails_one_call_and_the_next_reconnects(pg_database: str) -> None:
    """PostgreSQL ending our sessions (a restart, an administrator) costs the calls in
    flight a StorageError (503), and the store reconnects for the next ones."""
    async def body() -> list[str]:
        async with _store(pg_database) as store:
            await _add(store, "before")
            await store.get_participant("before")  # both connections are open
            admin = await asyncpg.connect(pg_database)
            try:
                ended = await admin.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name IN ('exchange-writer', 'exchange-reader')")
            finally:
                await admin.close()
            assert ended == 2
            outcomes = []
            for attempt in range(2):
                try:
                    await store.get_participant("before")
                    outcomes.append(f"read {attempt} ok")
                except StorageError:
                    outcomes.append(f"read {attempt} failed")
            for attempt in range(2):
                try:
                    await _add(store, f"after-{attempt}")
                    outcomes.append(f"write {attempt} ok")
                except StorageError:
                    outcomes.append(f"write {attempt} failed")
            return outcomes

    outcomes = run(body())
    assert outcomes[1] == "read 1 ok" and outcomes[3] == "write 1 ok", outcomes


@pytest.mark.parametrize(("sql", "expected"), [("SELECT 1 WHERE 'a%' LIKE ?", [(1,)]),
                                             ("SELECT ? || '%'", [("a%%",)])])
def test_a_percent_sign_in_sql_is_a_literal(pg_database: str, sql: str,
                                            expected: list[tuple[object, ...]]) -> None:
    # psycopg's placeholders are %s: the adapter doubles a literal % in parametrised SQL.
    async def body() -> list[tuple[object, ...]]:
        async with _store(pg_database) as store, store._reader() as conn:
            return [tuple(row) for row in await conn.fetch(sql, "a%")]

    assert run(body()) == expected
