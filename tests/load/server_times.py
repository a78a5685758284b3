"""The servers' own handling times, read from their request log (``request_handled`` lines).

The clients time a request from sending it to its response headers, so their
figure holds the wait for their own busy core as well as the server's work.
Each server logs, per request, ``duration_ms``: from its handler's start to the
response being ready (signature checked, the operation run, its audit entry
committed). That is the part the server answers for, and what the load test
reports beside the clients' figure as ``server_small_p50_ms`` /
``server_small_p99_ms``. It leaves out the time a request waits in the
socket before the event loop reads it.

The small reads are those of :func:`tests.load.accounting.request_class`
(downloads and upload PATCHes are transfers there), the latency probe's
included, less the case feed: its server-sent events stream stays open for the
whole run, so its time is not a wait for an answer.

A line also says how much of that time the request waited for the database
(``db_wait_ms``, by kind: ``exchange.storage.waits``). :func:`tail_waits_ms`
averages those over the slowest requests, the ones that make the p99: where
the tail's time goes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tests.load.accounting import request_class

__all__ = ["FEED_KIND", "SmallTime", "seconds_by_kind", "server_small_records",
           "tail_waits_ms"]

#: The one small read whose server time is a stream's length, not a wait for an answer.
FEED_KIND = "GET /v1/cases/{cid}/feed"


@dataclass(frozen=True)
class SmallTime:
    """One small request as a server timed it: seconds in all, and of them waiting for the
    database, by kind (``exchange.storage.waits``: ``nonce``, ``queued``, ``lock``,
    ``commit``)."""

    seconds: float
    waits_s: dict[str, float]


def server_small_records(
    logs: Iterable[Path], since: float, until: float
) -> dict[str, list[SmallTime]]:
    """Return, per request kind (``"GET /v1/cases"``), the servers' small requests.

    Only requests logged in ``[since, until]`` count: Unix times, a line's
    timestamp being when the request ended. Lines that are not JSON request
    records (the start-up banner) are skipped. The kinds come out sorted.
    """
    by_kind: dict[str, list[SmallTime]] = {}
    for path in logs:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if record.get("event") != "request_handled" or record.get("route") is None:
                    continue
                kind = f"{record['method']} {record['route']}"
                if kind == FEED_KIND or request_class(kind) != "small":
                    continue
                ended = datetime.fromisoformat(record["timestamp"]).timestamp()
                if since <= ended <= until:
                    waits = {k: ms / 1000 for k, ms in (record.get("db_wait_ms") or {}).items()}
                    by_kind.setdefault(kind, []).append(
                        SmallTime(record["duration_ms"] / 1000, waits))
    return dict(sorted(by_kind.items()))


def seconds_by_kind(records: dict[str, list[SmallTime]]) -> dict[str, list[float]]:
    """Return, per request kind, the seconds of each of ``records``' requests."""
    return {kind: [t.seconds for t in times] for kind, times in records.items()}


def tail_waits_ms(times: Iterable[SmallTime], fraction: float = 0.99) -> dict[str, float]:
    """Return where the slowest requests' time went: the mean milliseconds of each wait.

    The slowest are those at or above the ``fraction`` percentile (nearest rank).
    Keys: ``count`` (how many), ``total`` (their mean time), one per wait kind seen,
    and ``other`` (the rest: signature, the operation's own work, the event loop).
    Empty when there are no requests.
    """
    ordered = sorted(times, key=lambda t: t.seconds)
    if not ordered:
        return {}
    threshold = ordered[max(1, math.ceil(fraction * len(ordered))) - 1].seconds
    tail = [t for t in ordered if t.seconds >= threshold]
    kinds = sorted({kind for t in tail for kind in t.waits_s})
    mean = {kind: sum(t.waits_s.get(kind, 0.0) for t in tail) / len(tail) for kind in kinds}
    total = sum(t.seconds for t in tail) / len(tail)
    out = {"count": float(len(tail)), "total": round(total * 1000, 1)}
    out.update({kind: round(value * 1000, 1) for kind, value in mean.items()})
    out["other"] = round((total - sum(mean.values())) * 1000, 1)
    return out
