"""A request's tally of database waits (``exchange.storage.waits``), as the stores fill it."""

from __future__ import annotations

import asyncio

from exchange.storage import waits
from exchange.storage.metadata import MetadataStore
from tests.unit.storage.helpers import Backend, run
from tests.unit.storage.test_metadata import participant

HOLD_S = 0.2


def test_add_counts_only_inside_a_tally() -> None:
    waits.add("queued", 1.0)  # outside any request: dropped
    with waits.tally() as outer:
        waits.add("queued", 0.5)
        waits.add("queued", 0.25)
        with waits.tally() as inner:
            waits.add("commit", 2.0)
        waits.add("commit", 1.0)
    waits.add("commit", 4.0)
    assert outer == {"queued": 0.75, "commit": 1.0}
    assert inner == {"commit": 2.0}


async def _hold_then_ask(holding: MetadataStore, asking: MetadataStore
                         ) -> tuple[dict[str, float], dict[str, float]]:
    """Hold a unit of ``holding`` for ``HOLD_S``; meanwhile ask ``asking`` for one.

    Returns the two requests' tallies (holder's, asker's).
    """
    inside = asyncio.Event()

    async def holder() -> dict[str, float]:
        with waits.tally() as tallied:
            async with holding.transaction("holder") as tx:
                inside.set()
                await asyncio.sleep(HOLD_S)
                await tx.add_participant(participant("p-holder", "fp-holder"))
        return tallied

    async def asker() -> dict[str, float]:
        await inside.wait()
        with waits.tally() as tallied:
            async with asking.transaction("asker") as tx:
                await tx.add_participant(participant("p-asker", "fp-asker"))
        return tallied

    first, second = await asyncio.gather(holder(), asker())
    return first, second


def test_a_unit_waiting_behind_another_tallies_its_queue_and_commit(backend: Backend) -> None:
    """A unit queued while another holds the batch waits ``queued``; every unit waits ``commit``."""
    async def body() -> tuple[dict[str, float], dict[str, float]]:
        async with backend.open() as store:
            return await _hold_then_ask(store, store)

    first, second = run(body())
    assert set(first) == {"queued", "lock", "commit"} and first["queued"] < HOLD_S / 2
    assert first["commit"] > 0 and first["lock"] < HOLD_S / 2
    # The second unit asked while the first held the batch: it waited for that batch.
    assert second["queued"] >= HOLD_S * 0.8
    assert second["commit"] > 0 and second["lock"] < HOLD_S / 2


def test_a_batch_waiting_for_another_process_tallies_the_lock(backend: Backend) -> None:
    """Two stores on one database (two server processes): the log's lock is one for both."""
    async def body() -> dict[str, float]:
        async with backend.open() as first, backend.open() as second:
            _, asked = await _hold_then_ask(first, second)
            return asked

    tallied = run(body())
    assert tallied["lock"] >= HOLD_S * 0.8  # its batch waited for the other store's lock
    assert tallied["queued"] < HOLD_S / 2  # not for a batch of its own store


def test_a_nonce_spent_outside_a_unit_is_tallied(backend: Backend) -> None:
    """PostgreSQL spends it in its own insert ("nonce"); SQLite in a unit of work."""
    async def body() -> dict[str, float]:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await tx.add_participant(participant("p-nonce", "fp-nonce"))
            with waits.tally() as tallied:
                await store.record_nonce("p-nonce", "nonce-1", 2_000_000_000)
            return tallied

    tallied = run(body())
    expected = {"nonce"} if backend.name == "postgres" else {"queued", "lock", "commit"}
    assert set(tallied) == expected
    assert all(seconds >= 0 for seconds in tallied.values())
