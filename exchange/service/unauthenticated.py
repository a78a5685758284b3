"""Requests whose signature does not verify: counted and logged, never audit entries.

Anyone can send a request without a key, so recording such refusals in the
transparency log would let anyone grow it forever (DESIGN.md §7): every
auditor must mirror and verify every entry. They are counted here instead (a
metrics counter by problem type, read by the operator's monitoring) and
written to the operational log at most once per source address per
``interval_s`` (with the number of refusals suppressed since), so a flood
neither grows the audit log nor floods the operational log.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable

import structlog

__all__ = ["UnauthenticatedRefusals"]

_log = structlog.get_logger(__name__)
_MAX_SOURCES = 4096


class UnauthenticatedRefusals:
    """The in-process counter and per-source rate-limited log of unauthenticated refusals.

    ``total`` and ``by_reason`` only grow; ``sources`` keeps the last log time
    and suppressed count of at most ``max_sources`` addresses (oldest evicted),
    so memory stays bounded whatever the number of addresses.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 interval_s: float = 60.0, max_sources: int = _MAX_SOURCES) -> None:
        self.total = 0
        self.by_reason: collections.Counter[str] = collections.Counter()
        self._clock = clock
        self._interval_s = interval_s
        self._max_sources = max_sources
        self._sources: collections.OrderedDict[str, list[float | int]] = (
            collections.OrderedDict())

    def __repr__(self) -> str:
        return f"UnauthenticatedRefusals(total={self.total})"

    def note(self, source: str | None, reason: str, action: str, *,
             claimed_keyid: str | None = None) -> bool:
        """Count one refusal from ``source``; return whether it was written to the log."""
        self.total += 1
        self.by_reason[reason] += 1
        key = source or "-"
        now = self._clock()
        seen = self._sources.get(key)
        if seen is not None and now - float(seen[0]) < self._interval_s:
            seen[1] = int(seen[1]) + 1
            return False
        suppressed = 0 if seen is None else int(seen[1])
        self._sources[key] = [now, 0]
        self._sources.move_to_end(key)
        while len(self._sources) > self._max_sources:
            self._sources.popitem(last=False)
        _log.warning("unauthenticated_request_refused", source=key, reason=reason,
                     action=action, claimed_keyid=claimed_keyid,
                     suppressed_since_last=suppressed, total=self.total)
        return True
