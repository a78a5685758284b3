"""The servers' own handling times, read from their request log (``request_handled`` lines).

The clients time a request from sending it to its response headers, so their
figure holds the wait for their own busy core as well as the server's work.
Each server logs, per request, ``duration_ms``: from its handler's start to the
response being ready (signature checked, the operation run, its audit entry
committed). That is the part the server answers for, and what the load test
reports beside the clients' figure as ``server_small_p50_ms`` /
``server_small_p99_ms``. It leaves out the time a request waits in the
socket before the event loop reads it.

Streamed responses are left out: a case feed (server-sent events) stays open
for the whole run and a download's time is its body's, so neither is a small
request's wait; the upload PATCH is a transfer. Every other kind counts in its
class (:func:`tests.load.accounting.request_class`), the latency probe's reads
included.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from tests.load.accounting import request_class

__all__ = ["STREAMED_KINDS", "server_small_times"]

#: Kinds whose server time is a stream's length, not a wait for an answer.
STREAMED_KINDS = frozenset({"GET /v1/cases/{cid}/feed", "GET /v1/evidence/{eid}/content"})


def server_small_times(logs: Iterable[Path], since: float, until: float) -> list[float]:
    """Return the seconds each server took per small request logged in ``[since, until]``.

    ``since`` and ``until`` are Unix times (a line's timestamp is when the request
    ended). Lines that are not JSON request records (the start-up banner) are skipped.
    """
    times: list[float] = []
    for path in logs:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for line in lines:
                if not line.startswith("{"):
                    continue
                record = json.loads(line)
                if record.get("event") != "request_handled" or record.get("route") is None:
                    continue
                kind = f"{record['method']} {record['route']}"
                if kind in STREAMED_KINDS or request_class(kind) != "small":
                    continue
                ended = datetime.fromisoformat(record["timestamp"]).timestamp()
                if since <= ended <= until:
                    times.append(record["duration_ms"] / 1000)
    return times
