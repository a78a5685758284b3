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
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from tests.load.accounting import request_class

__all__ = ["FEED_KIND", "server_small_times_by_kind"]

#: The one small read whose server time is a stream's length, not a wait for an answer.
FEED_KIND = "GET /v1/cases/{cid}/feed"


def server_small_times_by_kind(
    logs: Iterable[Path], since: float, until: float
) -> dict[str, list[float]]:
    """Return, per request kind (``"GET /v1/cases"``), the servers' seconds per small request.

    Only requests logged in ``[since, until]`` count: Unix times, a line's
    timestamp being when the request ended. Lines that are not JSON request
    records (the start-up banner) are skipped. The kinds come out sorted.
    """
    by_kind: dict[str, list[float]] = {}
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
                    by_kind.setdefault(kind, []).append(record["duration_ms"] / 1000)
    return dict(sorted(by_kind.items()))
