"""The stall guard of streamed bodies: only a wait that lasts the allowance is a stall."""

from __future__ import annotations

import asyncio

import pytest

from exchange.transport.stall import Stalled, StallGuard

ALLOWANCE_S = 0.2


async def _pieces(queue: asyncio.Queue[bytes], guard: StallGuard) -> list[bytes]:
    """Read pieces until b"" the way a body reader does, each wait inside ``waiting()``."""
    got: list[bytes] = []
    while True:
        with guard.waiting():
            piece = await queue.get()
        if not piece:
            return got
        got.append(piece)


def test_a_wait_longer_than_the_allowance_is_a_stall() -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queue.put_nowait(b"first")
        started = loop.time()
        with StallGuard(ALLOWANCE_S) as guard, pytest.raises(Stalled):
            await _pieces(queue, guard)
        return loop.time() - started

    waited = asyncio.run(main())
    assert ALLOWANCE_S <= waited < ALLOWANCE_S + 0.5


def test_time_outside_the_waits_never_counts() -> None:
    """The consumer may take longer than the allowance between pieces (a slow disk)."""
    async def main() -> list[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        got: list[bytes] = []
        with StallGuard(ALLOWANCE_S) as guard:
            for n in range(3):
                queue.put_nowait(b"%d" % n)
                with guard.waiting():
                    got.append(await queue.get())
                await asyncio.sleep(ALLOWANCE_S * 1.5)  # busy with the piece, not waiting
        return got

    assert asyncio.run(main()) == [b"0", b"1", b"2"]


def test_many_short_waits_add_up_to_no_stall() -> None:
    """Each wait shorter than the allowance, their sum several times it: no stall."""
    async def main() -> int:
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def sender() -> None:
            for _ in range(8):
                await asyncio.sleep(ALLOWANCE_S / 2)
                queue.put_nowait(b"x")
            queue.put_nowait(b"")

        task = asyncio.create_task(sender())
        with StallGuard(ALLOWANCE_S) as guard:
            got = await _pieces(queue, guard)
        await task
        return len(got)

    assert asyncio.run(main()) == 8


def test_another_cancellation_stays_a_cancellation() -> None:
    async def main() -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()

        async def reader() -> None:
            with StallGuard(ALLOWANCE_S) as guard:
                await _pieces(queue, guard)

        task = asyncio.create_task(reader())
        await asyncio.sleep(ALLOWANCE_S / 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())


def test_the_timer_goes_with_the_guard() -> None:
    """Once the guarded block ends, no timer of it is left on the loop to cancel anything."""
    async def main() -> None:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        queue.put_nowait(b"")
        with StallGuard(ALLOWANCE_S) as guard:
            await _pieces(queue, guard)
        with guard.waiting():  # a wait after the block is unguarded
            await asyncio.sleep(ALLOWANCE_S * 2)

    asyncio.run(main())
