"""The probes' fixed schedule (``tests.load.probe``, ``tests.load.flush_probe``)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

__all__ = ["fixed_schedule"]


def fixed_schedule(until: float, interval_s: float) -> Iterator[float]:
    """Yield the ``time.monotonic()`` moments to act at: one per ``interval_s``, before ``until``.

    ``until`` is a Unix time (the load's end, shared across processes). The
    moments are fixed from the first one on, so a slow action does not push
    the next ones back: slow periods are sampled as often as fast ones.
    """
    start = time.monotonic()
    deadline = start + max(0.0, until - time.time())
    for n in itertools.count():
        due = start + n * interval_s
        if due >= deadline:
            return
        yield due
