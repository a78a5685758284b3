"""The event-loop lag watcher: a callback that holds the loop shows up as lag, and only then."""

from __future__ import annotations

import asyncio
import time

import pytest

from exchange.transport.looplag import watch_loop_lag

INTERVAL_S = 0.01
HOLD_S = 0.15


async def _watch_while(work: asyncio.Future[None] | None, seconds: float) -> list[float]:
    """Run the watcher for ``seconds`` (and ``work``, if any); return the lags it saw."""
    lags: list[float] = []
    watcher = asyncio.create_task(watch_loop_lag(lags.append, interval_s=INTERVAL_S))
    await asyncio.sleep(seconds)
    if work is not None:
        await work
    watcher.cancel()
    with pytest.raises(asyncio.CancelledError):
        await watcher
    return lags


def test_a_blocked_loop_is_seen_as_lag() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        # A callback that holds the loop, as hashing a large piece on it would.
        loop.call_later(0.05, time.sleep, HOLD_S)
        return await _watch_while(None, 0.4)

    lags = asyncio.run(main())
    assert max(lags) >= HOLD_S - INTERVAL_S  # the wake-up due during the hold came late
    assert sum(lag >= 0.05 for lag in lags) == 1  # and only that one


def test_an_idle_loop_has_almost_no_lag() -> None:
    lags = asyncio.run(_watch_while(None, 0.3))
    assert len(lags) >= 10
    assert all(lag >= 0 for lag in lags)
    assert sorted(lags)[len(lags) // 2] < 0.05  # a shared CI machine, not a quiet one


def test_the_interval_must_be_positive() -> None:
    async def main() -> None:
        await watch_loop_lag(lambda _: None, interval_s=0)

    with pytest.raises(ValueError, match="positive"):
        asyncio.run(main())
