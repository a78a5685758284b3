"""How late the event loop runs: the server's own measure of a starved loop.

Why: every request of a server process is handled by one event loop. When a
callback holds it (hashing a large piece on the loop thread, a long JSON
encode, a blocking call by mistake), every other request waits, and nothing
else shows it: the CPU may be idle, the database quick. The watcher asks the
loop to wake it every ``interval_s`` and records how much later than asked it
woke. A healthy loop is late by well under a millisecond; under transfer load
a few milliseconds; a lag of 100 ms means every request in flight waited that
long. Exported as ``exchange_event_loop_lag_seconds`` (``exchange serve
--metrics-port``), and read by ``bench/load.py`` to tell a starved loop from a
slow disk.

The cost is one timer callback per interval (50 a second at the default),
a few microseconds each.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LAG_INTERVAL_S", "watch_loop_lag"]

#: How often the watcher asks to be woken (seconds).
LAG_INTERVAL_S = 0.02


async def watch_loop_lag(observe: Callable[[float], None], *,
                         interval_s: float = LAG_INTERVAL_S) -> None:
    """Record, until cancelled, how late each wake-up of the loop is (``observe(seconds)``).

    The lag of one wake-up is the time between when the timer was due and
    when this coroutine ran again; it is never negative.
    """
    if interval_s <= 0:
        raise ValueError("interval_s must be positive")
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + interval_s
        await asyncio.sleep(interval_s)
        observe(max(0.0, loop.time() - due))
