"""Client-side accounting of the load test: every HTTP request, its latency and its audit entry.

Every simulated client sends through an aiohttp session carrying the trace
hooks of :func:`trace_config`, so each request the client library makes
(checkpoint fetches, proofs, envelope reads and retries included, refusals
too) is recorded once, with its kind (method and path template), status,
time to response headers and the ``Exchange-Audit-Index`` the server named.
A request that got no response at all is recorded with status 0.
:class:`MemorySampler` samples VmRSS of the server processes and reads
their VmHWM (kernel-tracked peak resident set) at the end.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp

from exchange.transport.problems import AUDIT_INDEX_HEADER

__all__ = [
    "UNLOGGED_KINDS",
    "MemorySampler",
    "RequestLog",
    "RequestRecord",
    "percentile_ms",
    "request_class",
    "request_kind",
    "trace_config",
]

#: A path segment following one of these names is an identifier, shown as the placeholder.
_ID_AFTER = {
    "cases": "{cid}", "evidence": "{eid}", "uploads": "{uid}", "participants": "{pid}",
    "epochs": "{n}", "envelopes": "{pid}", "members": "{pid}", "receipt": "{index}",
}
#: Authenticated reads the server answers without an audit entry when they succeed: the
#: public checkpoint (logging it would grow the log it describes) and tus discovery.
UNLOGGED_KINDS = frozenset({"GET /v1/audit/checkpoint", "OPTIONS /v1/uploads"})
#: The request kinds that carry evidence bytes (an upload PATCH, a download).
TRANSFER_KINDS = frozenset({"PATCH /v1/uploads/{uid}", "GET /v1/evidence/{eid}/content"})
MIB = 1024 * 1024


def request_kind(method: str, path: str) -> str:
    """Return ``METHOD /path/template`` for a request path (query dropped, ids as placeholders)."""
    out: list[str] = []
    previous = ""
    for segment in path.split("?", 1)[0].split("/"):
        placeholder = _ID_AFTER.get(previous)
        if placeholder is not None and out and not out[-1].startswith("{"):
            out.append(placeholder)
        else:
            out.append(segment)
        previous = segment
    return f"{method.upper()} {'/'.join(out)}"


def request_class(kind: str) -> str:
    """Return ``transfer``, ``small`` or ``write`` for a request kind (see :func:`request_kind`).

    Transfers carry evidence bytes; small requests are the other reads (listings, case
    and evidence views, feeds, statements, envelopes, audit checkpoints and proofs, tus
    offsets), which a user waits on and which must stay fast while transfers run; writes
    are the rest (statements, upload creation and commit), each durably logged.
    """
    if kind in TRANSFER_KINDS:
        return "transfer"
    if kind.split(" ", 1)[0] in ("GET", "HEAD", "OPTIONS"):
        return "small"
    return "write"


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One request as the client saw it; ``status`` 0 means no response arrived."""

    actor: str
    kind: str
    status: int
    latency_s: float
    audit_index: int | None


class RequestLog:
    """The requests of a run's measured phase, appended from the event loop (no locking).

    Requests made while :attr:`recording` is false (set-up) are only counted in
    :attr:`ignored`.
    """

    def __init__(self) -> None:
        self.records: list[RequestRecord] = []
        self.failures: list[str] = []
        self.recording = False
        self.ignored = 0

    def add(self, record: RequestRecord, failure: str | None = None) -> None:
        """Record one request (and why it got no response, if so)."""
        if not self.recording:
            self.ignored += 1
            return
        self.records.append(record)
        if failure is not None:
            self.failures.append(failure)

    def by_kind(self) -> dict[str, list[RequestRecord]]:
        """Return the records grouped by request kind."""
        groups: dict[str, list[RequestRecord]] = {}
        for record in self.records:
            groups.setdefault(record.kind, []).append(record)
        return groups


def trace_config(log: RequestLog, actor: str) -> aiohttp.TraceConfig:
    """Return trace hooks that record every request of one client's session into ``log``."""
    config = aiohttp.TraceConfig()

    async def on_start(_s: aiohttp.ClientSession, ctx: SimpleNamespace,
                       _p: aiohttp.TraceRequestStartParams) -> None:
        ctx.started = time.perf_counter()

    async def on_end(_s: aiohttp.ClientSession, ctx: SimpleNamespace,
                     params: aiohttp.TraceRequestEndParams) -> None:
        value = params.response.headers.get(AUDIT_INDEX_HEADER, "")
        log.add(RequestRecord(
            actor=actor, kind=request_kind(params.method, params.url.raw_path),
            status=params.response.status, latency_s=time.perf_counter() - ctx.started,
            audit_index=int(value) if value.isdigit() else None))

    async def on_exception(_s: aiohttp.ClientSession, ctx: SimpleNamespace,
                           params: aiohttp.TraceRequestExceptionParams) -> None:
        kind = request_kind(params.method, params.url.raw_path)
        log.add(RequestRecord(actor=actor, kind=kind, status=0,
                              latency_s=time.perf_counter() - ctx.started, audit_index=None),
                failure=f"{kind}: {type(params.exception).__name__}: "
                        f"{str(params.exception)[:120]}")

    config.on_request_start.append(on_start)
    config.on_request_end.append(on_end)
    config.on_request_exception.append(on_exception)
    return config


def percentile_ms(values_s: Sequence[float], fraction: float) -> float:
    """Return the nearest-rank percentile of ``values_s`` (seconds) in milliseconds (0 if empty)."""
    if not values_s:
        return 0.0
    ordered = sorted(values_s)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return round(ordered[rank - 1] * 1000, 2)


def _status_kib(pid: int, field: str) -> int | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


class MemorySampler:
    """Samples VmRSS of some processes every ``interval_s`` in a daemon thread.

    Call :meth:`stop` before the processes exit: it also reads their VmHWM,
    the kernel's record of each one's peak resident set, which catches peaks
    between samples.
    """

    def __init__(self, pids: Iterable[int], *, interval_s: float = 0.25) -> None:
        self.pids = list(pids)
        self.interval_s = interval_s
        self.samples: list[tuple[float, int, int]] = []  # (monotonic time, pid, VmRSS KiB)
        self.hwm_kib: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-memory", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for pid in self.pids:
                rss = _status_kib(pid, "VmRSS")
                if rss is not None:
                    self.samples.append((now, pid, rss))
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop sampling and read each process's VmHWM."""
        self._stop.set()
        self._thread.join(5)
        for pid in self.pids:
            hwm = _status_kib(pid, "VmHWM")
            if hwm is not None:
                self.hwm_kib[pid] = hwm

    def peak_mib(self) -> float:
        """Return the largest peak resident set of any process, in MiB."""
        peaks = list(self.hwm_kib.values()) + [rss for _, _, rss in self.samples]
        return round(max(peaks, default=0) / 1024, 1)

    def peaks_mib(self) -> list[float]:
        """Return each process's peak resident set (VmHWM, else the sampled maximum) in MiB."""
        out = []
        for pid in self.pids:
            sampled = [rss for _, p, rss in self.samples if p == pid]
            out.append(round(max([self.hwm_kib.get(pid, 0), *sampled]) / 1024, 1))
        return out

    def peak_between_mib(self, start: float, end: float) -> float:
        """Return the largest sampled VmRSS between two monotonic times, in MiB."""
        inside = [rss for t, _, rss in self.samples if start <= t <= end]
        return round(max(inside, default=0) / 1024, 1)
