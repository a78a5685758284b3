"""``run_unit``: a unit of work whose body the store's sequencer runs itself.

Each test holds the store's current batch open with an ``async with`` unit that
waits on an event, queues the units under test behind it, then lets go: the
queued units then make the next batch together, in the order they were queued.
"""

from __future__ import annotations

import asyncio
import contextvars
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from exchange.errors import StorageError
from exchange.storage._sqlstore import SqlStore
from exchange.storage._sqltx import DatabaseError
from exchange.storage.errors import NotFound, StoreClosed
from exchange.storage.metadata import MetadataStore, Transaction
from exchange.storage.sqlite_store import SqliteStore, _Conn
from tests.unit.storage.helpers import LIMIT_S, Backend, GatedFlush, Ticker, run
from tests.unit.storage.test_metadata import participant

_caller: contextvars.ContextVar[str] = contextvars.ContextVar("_caller", default="")


@asynccontextmanager
async def _batch_held(store: MetadataStore) -> AsyncIterator[None]:
    """Hold a batch open (an ``async with`` unit waiting) while the block queues units."""
    inside, release = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with store.transaction("holder"):
            inside.set()
            await release.wait()

    holding = asyncio.create_task(holder())
    await asyncio.wait_for(inside.wait(), LIMIT_S)
    try:
        yield
    finally:
        release.set()
        await asyncio.wait_for(holding, LIMIT_S)


async def _queued(store: MetadataStore,
                  bodies: list[Callable[[Transaction], Coroutine[Any, Any, Any]]]
                  ) -> list[Any]:
    """Run ``bodies`` as units queued behind a held batch; return each one's value or error."""
    async with _batch_held(store):
        calls = [asyncio.create_task(store.run_unit(f"unit-{n}", body))
                 for n, body in enumerate(bodies)]
        await asyncio.sleep(0.05)  # every call is queued behind the held batch
    return await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), LIMIT_S)


def _adds(pid: str, value: str = "", seen: list[str] | None = None
          ) -> Callable[[Transaction], Coroutine[Any, Any, str]]:
    async def body(tx: Transaction) -> str:
        if seen is not None:
            seen.append(f"{pid} began")
        await tx.add_participant(participant(pid, f"fp-{pid}"))
        if seen is not None:
            seen.append(f"{pid} ended")
        return value or pid

    return body


async def _exists(store: MetadataStore, pid: str) -> bool:
    try:
        await store.get_participant(pid)
    except NotFound:
        return False
    return True


def test_queued_bodies_run_in_one_turn_of_the_event_loop(backend: Backend) -> None:
    # A body's statements run on the loop thread (SQLite's, and PostgreSQL's write
    # connection: exchange.storage._pgsync), so nothing in a batch of run_unit bodies
    # waits for the loop: a ticker that counts its turns sees none pass between the
    # first body and the last. Through asyncpg every statement cost a turn, which under
    # load is milliseconds (issue 17). (An ``async with`` unit costs two turns.)
    async def body() -> tuple[list[int], list[Any], list[bool]]:
        def counting(pid: str) -> Callable[[Transaction], Coroutine[Any, Any, str]]:
            async def unit(tx: Transaction) -> str:
                seen_at.append(ticker.turns)
                await tx.add_participant(participant(pid, f"fp-{pid}"))
                return pid

            return unit

        seen_at: list[int] = []
        async with backend.open() as store, Ticker() as ticker:
            values = await _queued(store, [counting(f"p{n}") for n in range(20)])
            found = [await _exists(store, f"p{n}") for n in range(20)]
        return seen_at, values, found

    seen_at, values, found = run(body())
    assert values == [f"p{n}" for n in range(20)]
    assert all(found)
    assert len(seen_at) == 20 and len(set(seen_at)) == 1, seen_at


def test_reads_outside_units_take_no_turn_of_the_loop(backend: Backend) -> None:
    # SQLite's reads used a thread (a turn each), PostgreSQL's asyncpg (a turn or more per
    # statement); under load a turn is milliseconds, most of the slowest reads' time.
    async def body() -> tuple[int, list[str]]:
        async with backend.open() as store:
            for n in range(5):
                await store.run_unit("add", _adds(f"p{n}"))
            await store.tree_size()  # a reading connection is opened (that may take turns)
            async with Ticker() as ticker:
                before = ticker.turns
                found = [(await store.get_participant(f"p{n}")).participant_id
                         for n in range(5)]
                await store.audit_entries(0, await store.tree_size())
                return ticker.turns - before, found

    turns, found = run(body())
    assert found == [f"p{n}" for n in range(5)]
    assert turns == 0


def test_a_sqlite_read_refused_for_a_lock_runs_again_where_it_may_wait() -> None:
    # The loop thread's reading connection never waits for a lock: SQLITE_BUSY (an
    # extended code too) sends the read to a reader thread; any other error is the read's.
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY | (1 << 8)  # SQLITE_BUSY_RECOVERY
    seen: list[str] = []

    def read(db: Any) -> str:
        seen.append(db)
        if db == "loop":
            raise busy
        return "rows"

    conn = _Conn(None, lambda: "loop", when_busy=_Conn(None, lambda: "thread"))
    assert run(conn._call(read)) == "rows"
    assert seen == ["loop", "thread"] and not conn.failed

    def broken(db: Any) -> str:
        raise sqlite3.OperationalError("no such table: nowhere")

    with pytest.raises(DatabaseError):
        run(conn._call(broken))
    assert conn.failed


def test_a_body_that_raises_is_undone_and_raised_to_its_caller_alone(
        backend: Backend) -> None:
    async def failing(tx: Transaction) -> str:
        await tx.add_participant(participant("p-failed", "fp-failed"))
        raise ValueError("refused by the body")

    async def body() -> tuple[list[Any], list[bool]]:
        async with backend.open() as store:
            values = await _queued(store, [_adds("p-first"), failing, _adds("p-last")])
            return values, [await _exists(store, p) for p in ("p-first", "p-failed", "p-last")]

    values, found = run(body())
    assert values[0] == "p-first" and values[2] == "p-last"
    assert isinstance(values[1], ValueError) and str(values[1]) == "refused by the body"
    assert found == [True, False, True]


def test_the_body_runs_in_its_callers_context_and_cannot_open_another_unit(
        backend: Backend) -> None:
    async def body() -> tuple[str, BaseException | None, str]:
        async with backend.open() as store:
            async def reads_context(tx: Transaction) -> str:
                return _caller.get()

            async def nests(tx: Transaction) -> None:
                async with store.transaction("nested"):
                    pass

            _caller.set("request-17")
            value = await store.run_unit("reads", reads_context)
            try:
                await store.run_unit("nests", nests)
                nested: BaseException | None = None
            except RuntimeError as err:
                nested = err
            # The store still serves units afterwards.
            after = await store.run_unit("after", _adds("p-after"))
            return value, nested, after

    value, nested, after = run(body())
    assert value == "request-17"
    assert nested is not None and "opened another transaction" in str(nested)
    assert after == "p-after"


def test_a_body_that_awaits_keeps_the_batch_until_it_ends(backend: Backend) -> None:
    # A body may await real work (a thread, a timer): the next unit begins only after
    # it has ended, so units never interleave on the batch's connection.
    order: list[str] = []

    async def slow(tx: Transaction) -> str:
        order.append("slow began")
        await asyncio.sleep(0.05)
        await asyncio.to_thread(order.append, "slow in a thread")
        await tx.add_participant(participant("p-slow", "fp-slow"))
        order.append("slow ended")
        return "slow"

    async def body() -> list[Any]:
        async with backend.open() as store:
            return await _queued(store, [slow, _adds("p-next", seen=order)])

    assert run(body()) == ["slow", "p-next"]
    assert order == ["slow began", "slow in a thread", "slow ended",
                     "p-next began", "p-next ended"]


def test_a_caller_cancelled_before_its_turn_never_runs_its_body(backend: Backend) -> None:
    ran: list[str] = []

    async def recorded(tx: Transaction) -> None:
        ran.append("body")
        await tx.add_participant(participant("p-gone", "fp-gone"))

    async def body() -> tuple[bool, str]:
        async with backend.open() as store:
            async with _batch_held(store):
                call = asyncio.create_task(store.run_unit("gone", recorded))
                await asyncio.sleep(0.05)
                call.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await call
            after = await store.run_unit("after", _adds("p-after"))
            return await _exists(store, "p-gone"), after

    assert run(body()) == (False, "p-after")
    assert ran == []


def test_run_unit_returns_only_once_its_batch_is_flushed(tmp_path: Path) -> None:
    async def body() -> None:
        gate = GatedFlush()
        store = await SqliteStore.open(tmp_path, flush=gate)
        try:
            call = asyncio.create_task(store.run_unit("held", _adds("p-held")))
            await gate.reached()
            await asyncio.sleep(0.1)
            assert not call.done()  # committed, not yet durable: not acknowledged
            gate.open()
            assert await asyncio.wait_for(call, LIMIT_S) == "p-held"
        finally:
            gate.open()
            await store.close()

    run(body())


def test_a_batch_that_cannot_begin_fails_its_callers_and_the_store_goes_on(
        backend: Backend) -> None:
    # The database is unreachable (a PostgreSQL restart): the batch's callers learn it at
    # once instead of waiting for a commit that will never come, and the next batch runs.
    ran: list[str] = []

    async def recorded(tx: Transaction) -> str:
        ran.append("body")
        await tx.add_participant(participant("p-down", "fp-down"))
        return "ran"

    async def body() -> tuple[BaseException | None, str, bool]:
        async with backend.open() as store:
            assert isinstance(store, SqlStore)
            working = store._begin

            async def unreachable() -> Any:
                raise DatabaseError("the database is unreachable")

            store._begin = unreachable  # type: ignore[method-assign]
            try:
                await asyncio.wait_for(store.run_unit("down", recorded), LIMIT_S)
                refused: BaseException | None = None
            except StorageError as err:
                refused = err
            store._begin = working  # type: ignore[method-assign]
            after = await asyncio.wait_for(store.run_unit("after", _adds("p-after")), LIMIT_S)
            return refused, after, await _exists(store, "p-down")

    refused, after, down_exists = run(body())
    assert refused is not None and "unreachable" in str(refused)
    assert ran == [] and not down_exists
    assert after == "p-after"


def test_a_stopped_sequencer_fails_the_callers_still_queued(backend: Backend) -> None:
    async def body() -> BaseException | None:
        async with backend.open() as store:
            assert isinstance(store, SqlStore)
            error: BaseException | None = None
            with pytest.raises(StoreClosed):  # the held unit is undone with its batch
                async with _batch_held(store):
                    queued = asyncio.create_task(store.run_unit("queued", _adds("p-queued")))
                    await asyncio.sleep(0.05)
                    assert store._task is not None
                    store._task.cancel()  # the event loop's teardown, say
                    try:
                        await asyncio.wait_for(queued, LIMIT_S)
                    except StoreClosed as err:
                        error = err
            return error

    assert run(body()) is not None
