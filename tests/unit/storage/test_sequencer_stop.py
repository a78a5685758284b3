"""A metadata store whose sequencer task is cancelled fails its units; nobody waits forever.

Event-loop teardown (``asyncio.run`` ending, a task group unwinding) cancels the
sequencer while other tasks may still hold or want a unit of work. Before the
fix, queued and later transactions waited forever on a future nobody served.
"""

from __future__ import annotations

import asyncio

import pytest

from exchange.storage.errors import StoreClosed
from exchange.storage.metadata import MetadataStore
from tests.unit.storage.helpers import Backend, run
from tests.unit.storage.test_metadata import participant

#: Generous for a test that would otherwise hang: every wait here is milliseconds.
LIMIT_S = 10


def _sequencer(store: MetadataStore) -> asyncio.Task[None]:
    task = store._task  # type: ignore[attr-defined]
    assert isinstance(task, asyncio.Task)
    return task


def test_cancelled_sequencer_fails_running_queued_and_future_units(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:  # the store works
                await tx.add_participant(participant("p-before", "fp-before"))
            inside, release = asyncio.Event(), asyncio.Event()

            async def running() -> None:
                async with store.transaction("running") as tx:
                    inside.set()
                    await release.wait()
                    await tx.add_participant(participant("p-running", "fp-running"))

            async def queued() -> None:
                async with store.transaction("queued") as tx:
                    await tx.add_participant(participant("p-queued", "fp-queued"))

            first = asyncio.create_task(running())
            await inside.wait()
            second = asyncio.create_task(queued())
            await asyncio.sleep(0.01)  # second is queued behind the running unit
            _sequencer(store).cancel()
            await asyncio.sleep(0.01)
            release.set()
            for task in (first, second):
                with pytest.raises(StoreClosed):
                    await asyncio.wait_for(task, LIMIT_S)

            async def later() -> None:
                async with store.transaction("later"):
                    pass

            with pytest.raises(StoreClosed):
                await asyncio.wait_for(later(), LIMIT_S)
        # closing did not hang or raise; nothing of the cancelled units was committed
        async with backend.open() as store, store.transaction() as tx:
            ids = [p.participant_id for p in await tx.list_participants()]
            assert ids == ["p-before"]

    run(body())


def test_sequencer_cancelled_while_idle(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            _sequencer(store).cancel()
            await asyncio.sleep(0.01)
            with pytest.raises(StoreClosed):
                async with asyncio.timeout(LIMIT_S), store.transaction():
                    pass

    run(body())
