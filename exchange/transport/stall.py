"""A stall guard for streamed request bodies: one timer per body, not one per piece.

An upload's body arrives in about 4,000 pieces per GiB. Wrapping each wait in
``asyncio.timeout`` schedules and cancels a timer per piece (about 18 µs of
event-loop time each, measured), which showed in the server's profile of an
upload (issue 17, the server's CPU per byte). :class:`StallGuard` keeps one
timer for the whole body: a piece only records the time, and the timer, when
it fires, re-arms itself for the last moment a wait began plus the allowance,
so the rule is the same as a per-wait timeout: the reading task is cancelled
only once it has waited ``timeout_s`` for one piece.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Stalled(Exception):
    """The body's sender stalled: no piece arrived for ``timeout_s`` during one wait."""


class StallGuard:
    """Cancel the current task when one :meth:`waiting` block lasts ``timeout_s``.

    Use ``with StallGuard(timeout_s) as guard:`` around the reading loop and
    ``with guard.waiting():`` around each wait for a piece. Time spent outside
    the waits (the consumer writing the previous piece) never counts: a slow
    disk is not a stalled client. A stall raises :class:`Stalled` from the
    waiting block; any other cancellation propagates unchanged.
    """

    def __init__(self, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("StallGuard needs to run inside a task")
        self._task = task
        self._cancelling = 0
        self._since: float | None = None  # when the current wait began; None: not waiting
        self._fired = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiting = _Waiting(self)  # one for every wait: nothing allocated per piece

    def __enter__(self) -> StallGuard:
        self._cancelling = self._task.cancelling()
        self._timer = self._loop.call_at(self._loop.time() + self._timeout_s, self._check)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        now = self._loop.time()
        since = self._since
        if since is None or now < since + self._timeout_s:
            due = now + self._timeout_s if since is None else since + self._timeout_s
            self._timer = self._loop.call_at(due, self._check)
            return
        self._timer = None
        self._fired = True
        self._task.cancel()

    def waiting(self) -> _Waiting:
        """Return the context for one wait for a piece (see the class docstring)."""
        return self._waiting


class _Waiting:
    __slots__ = ("_guard",)

    def __init__(self, guard: StallGuard) -> None:
        self._guard = guard

    def __enter__(self) -> None:
        guard = self._guard
        guard._since = guard._loop.time()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        guard = self._guard
        guard._since = None
        if guard._fired and exc_type is asyncio.CancelledError:
            guard._fired = False
            # Ours alone (no other cancel pending): it becomes the stall it stands for.
            if guard._task.uncancel() <= guard._cancelling:
                raise Stalled from None


__all__ = ["StallGuard", "Stalled"]
