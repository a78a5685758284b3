"""After a load run: nothing lost, one audit entry per request, the log verifies; the figures.

Checks, straight against the store and the blob files (not through the
server's HTTP layer):

* every acknowledged upload has its evidence record (same case, blob id =
  ciphertext SHA-256, same size), its blob hashes to that SHA-256 and, with
  ``verify_plaintext``, decrypts (age, the case key) to the plaintext the
  client wrote; anything else counts in ``files_lost``;
* the whole log verifies with ``exchange.audit.verify_log``;
* the entries appended during the measured phase are exactly the requests the
  clients and the latency probe made: the indexes named by the responses are
  distinct and cover the appended range, each entry's actor is the client
  that got that index, and their count equals the requests minus the
  unlogged kinds that succeeded.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from exchange.audit.verify import verify_log
from exchange.crypto.age import AgeError, Decryptor
from exchange.crypto.envelope import CaseKey
from exchange.errors import StorageError
from exchange.storage.errors import NotFound
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.metadata import MetadataStore
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.server import checkpoint_signer, load_log_signer
from tests.load.accounting import (
    UNLOGGED_KINDS,
    MemorySampler,
    RequestLog,
    RequestRecord,
    percentile_ms,
    request_class,
)
from tests.load.cpu_window import CpuUse, no_use
from tests.load.loop_lag import LagWindow
from tests.load.server_times import seconds_by_kind, server_small_records, tail_waits_ms
from tests.load.workload import Acked, Ledger, Stats
from tests.server_harness import ORIGIN

__all__ = ["LoadResult", "RunData", "check_run", "open_store"]

_PAGE = 256  # the store serves at most 256 entries per call
MB = 1_000_000


@dataclass
class RunData:
    """Everything the drive phase hands to the checks."""

    data_dir: Path
    dsn: str | None
    log_key: str
    log: RequestLog
    stats: Stats
    ledger: Ledger
    case_keys: dict[str, dict[int, CaseKey]]
    start_size: int
    started: float
    ended: float
    setup_s: float
    sampler: MemorySampler
    verify_plaintext: bool
    #: The latency probe's requests (``tests.load.probe``), outside :attr:`log` so its
    #: latencies stay apart from the busy clients'; its logged reads count in the accounting.
    probe_records: list[RequestRecord] = field(default_factory=list)
    #: The disk probe's ``fdatasync`` times in seconds (``tests.load.flush_probe``).
    flush_s: list[float] = field(default_factory=list)
    #: The servers' request logs (``tests.load.server_times`` reads their own times).
    server_logs: list[Path] = field(default_factory=list)
    #: Where the CPU went in the load window (``tests.load.cpu_window``).
    cpu: CpuUse = field(default_factory=no_use)
    #: How late the servers' event loops ran in the load window (``tests.load.loop_lag``).
    loop_lag: LagWindow = field(default_factory=lambda: LagWindow(0, 0.0, 0.0))


@dataclass
class LoadResult:
    """The figures and verdicts of one run (``to_json`` for ``--json``)."""

    config: dict[str, object]
    elapsed_s: float
    setup_s: float
    verify_s: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    #: Latency by request class (:func:`tests.load.accounting.request_class`).
    small_p50_ms: float
    small_p99_ms: float
    #: The servers' own time for the small requests (handler start to response ready,
    #: from their request log; feeds left out): ``tests.load.server_times``.
    server_small_p50_ms: float
    server_small_p99_ms: float
    server_small_requests: int
    transfer_p50_ms: float
    transfer_p99_ms: float
    write_p50_ms: float
    write_p99_ms: float
    requests_by_class: dict[str, int]
    #: The probe: one idle client in its own process sending a small read every 50 ms,
    #: in turn the checkpoint (unlogged) and the case list (logged: audit entry first).
    #: ``probe_p50_ms``, ``probe_p99_ms``, requests and failures are over both kinds.
    probe_p50_ms: float
    probe_p99_ms: float
    probe_unlogged_p50_ms: float
    probe_unlogged_p99_ms: float
    probe_logged_p50_ms: float
    probe_logged_p99_ms: float
    probe_requests: int
    probe_failures: int
    #: The disk's floor under a logged read: one 8 KiB overwrite + ``fdatasync`` every
    #: 100 ms beside the load, on the same disk (``tests.load.flush_probe``); 0 without it.
    disk_flush_p50_ms: float
    disk_flush_p99_ms: float
    disk_flush_max_ms: float
    mb_per_s: float
    upload_mb_per_s: float
    download_mb_per_s: float
    files_committed: int
    files_lost: int
    files_plaintext_checked: int
    download_mismatches: int
    upload_hash_mismatches: int
    listing_missing: int
    feed_subscriptions: int
    feed_events: int
    feed_events_missed: int
    probes_refused: int
    probes_accepted: int
    entries_appended: int
    entries_expected: int
    entries_verified: int
    log_verified: bool
    one_entry_per_request: bool
    entry_problems: dict[str, int]
    requests_without_response: int
    server_peak_rss_mib: float
    server_peak_rss_mib_per_process: list[float]
    server_rss_first_half_mib: float
    server_rss_second_half_mib: float
    op_errors: int
    client_warnings: int
    ops: dict[str, dict[str, float]] = field(default_factory=dict)
    request_kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: The servers' own time per small-read kind (count, p50_ms, p99_ms), as in
    #: ``server_small_p50_ms``: which reads make the tail.
    server_small_kinds: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Over the load window (``tests.load.cpu_window``): each core's busy and I/O-wait
    #: percentages (keyed by core number), and the cores' worth of CPU used by the
    #: servers, the database (an upper bound) and the clients' process.
    core_busy_pct: dict[str, float] = field(default_factory=dict)
    core_iowait_pct: dict[str, float] = field(default_factory=dict)
    side_cores: dict[str, float] = field(default_factory=dict)
    #: Where the servers' slowest small requests (at or above their p99) spent their time,
    #: mean milliseconds: ``total``, waiting for the database by kind (``nonce``,
    #: ``queued``, ``lock``, ``commit``: ``exchange.storage.waits``) and ``other``; ``count``.
    server_small_tail_ms: dict[str, float] = field(default_factory=dict)
    #: The servers' event-loop lag over the window (``tests.load.loop_lag``): wake-ups
    #: timed, their 99th percentile (estimated from the histogram), and the percentage
    #: that came more than 100 ms late (a starved loop).
    server_loop_lag_samples: int = 0
    server_loop_lag_p99_ms: float = 0.0
    server_loop_lag_starved_pct: float = 0.0
    samples: dict[str, list[str]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the result as a JSON-ready dict."""
        return asdict(self)

    @property
    def ok(self) -> bool:
        """Whether every correctness check passed."""
        return (self.files_lost == 0 and self.download_mismatches == 0
                and self.upload_hash_mismatches == 0 and self.listing_missing == 0
                and self.feed_events_missed == 0 and self.probes_accepted == 0
                and self.log_verified and self.one_entry_per_request and self.op_errors == 0
                and self.probe_failures == 0)


async def open_store(data_dir: Path, dsn: str | None) -> MetadataStore:
    """Open the deployment's metadata store directly, with the log's checkpoint signer."""
    signer = checkpoint_signer(load_log_signer(data_dir))
    if dsn:
        return await PostgresStore.open(dsn, signer=signer)
    return await SqliteStore.open(data_dir, signer=signer)


async def _check_file(store: MetadataStore, blobs: FsBlobStore, acked: Acked,
                      keys: dict[int, CaseKey], plaintext: bool) -> str | None:
    """Return why ``acked`` is lost or altered, or None when it is intact."""
    try:
        async with store.transaction("load.check_evidence") as tx:
            record = await tx.get_evidence(acked.evidence_id)
    except NotFound:
        return f"{acked.evidence_id}: no evidence record"
    if (record.case_id, record.blob_id, record.ciphertext_size) != \
            (acked.case_id, acked.ciphertext_sha256, acked.ciphertext_size):
        return f"{acked.evidence_id}: record differs from the acknowledged upload"
    cipher, plain, size = hashlib.sha256(), hashlib.sha256(), 0
    key = keys.get(record.epoch)
    if plaintext and key is None:
        return f"{acked.evidence_id}: no key for epoch {record.epoch} of its case"
    decryptor = Decryptor([key.identity]) if plaintext and key is not None else None
    try:
        info = await blobs.stat(record.blob_id)
        async for chunk in await blobs.open_range(record.blob_id, 0, info.size):
            cipher.update(chunk)
            size += len(chunk)
            if decryptor is not None:
                decryptor.feed(chunk, plain.update)
        if decryptor is not None:
            plain.update(decryptor.finalize())
    except (StorageError, AgeError) as err:
        return f"{acked.evidence_id}: blob unreadable ({type(err).__name__})"
    if cipher.hexdigest() != acked.ciphertext_sha256 or size != acked.ciphertext_size:
        return f"{acked.evidence_id}: stored ciphertext differs"
    if decryptor is not None and plain.hexdigest() != acked.plaintext_sha256:
        return f"{acked.evidence_id}: plaintext hash differs"
    return None


async def _read_log(store: MetadataStore) -> tuple[list[bytes], bytes]:
    checkpoint = await store.publish_checkpoint()
    entries: list[bytes] = []
    for start in range(0, checkpoint.size, _PAGE):
        end = min(start + _PAGE, checkpoint.size)
        entries.extend(e.entry for e in await store.audit_entries(start, end))
    return entries, checkpoint.note


def _entry_problems(records: list[RequestRecord], entries: list[bytes], start: int,
                    end: int) -> tuple[int, dict[str, int]]:
    """Return (expected entry count, problem counts) for the measured phase."""
    unlogged_ok = sum(1 for r in records if r.kind in UNLOGGED_KINDS and r.audit_index is None
                      and 200 <= r.status < 300)
    named: dict[int, str] = {}
    problems = {"duplicate_index": 0, "index_outside_run": 0, "entry_not_named": 0,
                "actor_mismatch": 0, "logged_response_without_index": 0, "no_response": 0}
    for r in records:
        if r.status == 0:
            problems["no_response"] += 1
        elif r.audit_index is None:
            if not (r.kind in UNLOGGED_KINDS and 200 <= r.status < 300):
                problems["logged_response_without_index"] += 1
        elif not start <= r.audit_index < end:
            problems["index_outside_run"] += 1
        elif r.audit_index in named:
            problems["duplicate_index"] += 1
        else:
            named[r.audit_index] = r.actor
    for index in range(start, end):
        actor = named.get(index)
        if actor is None:
            problems["entry_not_named"] += 1
        elif json.loads(entries[index]).get("actor") != actor:
            problems["actor_mismatch"] += 1
    return len(records) - unlogged_ok, problems


def _latency(values: list[float]) -> dict[str, float]:
    return {"count": len(values), "p50_ms": percentile_ms(values, 0.50),
            "p99_ms": percentile_ms(values, 0.99)}


async def check_run(data: RunData, *, config_json: dict[str, object]) -> LoadResult:
    """Run every check on a finished run; return the result."""
    checked_at = time.monotonic()
    store = await open_store(data.data_dir, data.dsn)
    lost: list[str] = []
    try:
        blobs = FsBlobStore(data.data_dir)
        for acked in data.ledger.all:
            why = await _check_file(store, blobs, acked, data.case_keys.get(acked.case_id, {}),
                                    data.verify_plaintext)
            if why is not None:
                lost.append(why)
        end_size = await store.tree_size()
        entries, note = await _read_log(store)
    finally:
        await store.close()
    report = verify_log(entries, data.log_key, note, origin=ORIGIN)
    records = data.log.records
    probe = data.probe_records
    # The probe's logged reads appended entries too: each must be named like the clients'.
    expected, problems = _entry_problems(records + probe, entries, data.start_size, end_size)
    probe_unlogged = [r.latency_s for r in probe if r.kind in UNLOGGED_KINDS]
    probe_logged = [r.latency_s for r in probe if r.kind not in UNLOGGED_KINDS]
    appended = end_size - data.start_size
    stats = data.stats
    elapsed = max(data.ended - data.started, 1e-9)
    latencies = [r.latency_s for r in records]
    by_class: dict[str, list[float]] = {"small": [], "transfer": [], "write": []}
    for r in records:
        by_class[request_class(r.kind)].append(r.latency_s)
    missed = sum(len({a.audit_index for a in data.ledger.by_case.get(case, ())} - seen)
                 for (_, case), seen in stats.feed_events.items())
    half = data.started + elapsed / 2
    unix = time.time() - time.monotonic()  # the run's window on the servers' clock
    server_records = server_small_records(data.server_logs, unix + data.started,
                                          unix + data.ended)
    server_kinds = seconds_by_kind(server_records)
    server_small = [seconds for times in server_kinds.values() for seconds in times]
    return LoadResult(
        config=config_json,
        elapsed_s=round(elapsed, 2), setup_s=round(data.setup_s, 2),
        verify_s=round(time.monotonic() - checked_at, 2),
        requests=len(records), requests_per_s=round(len(records) / elapsed, 1),
        p50_ms=percentile_ms(latencies, 0.50), p99_ms=percentile_ms(latencies, 0.99),
        small_p50_ms=percentile_ms(by_class["small"], 0.50),
        small_p99_ms=percentile_ms(by_class["small"], 0.99),
        server_small_p50_ms=percentile_ms(server_small, 0.50),
        server_small_p99_ms=percentile_ms(server_small, 0.99),
        server_small_requests=len(server_small),
        transfer_p50_ms=percentile_ms(by_class["transfer"], 0.50),
        transfer_p99_ms=percentile_ms(by_class["transfer"], 0.99),
        write_p50_ms=percentile_ms(by_class["write"], 0.50),
        write_p99_ms=percentile_ms(by_class["write"], 0.99),
        requests_by_class={name: len(values) for name, values in by_class.items()},
        probe_p50_ms=percentile_ms([r.latency_s for r in probe], 0.50),
        probe_p99_ms=percentile_ms([r.latency_s for r in probe], 0.99),
        probe_unlogged_p50_ms=percentile_ms(probe_unlogged, 0.50),
        probe_unlogged_p99_ms=percentile_ms(probe_unlogged, 0.99),
        probe_logged_p50_ms=percentile_ms(probe_logged, 0.50),
        probe_logged_p99_ms=percentile_ms(probe_logged, 0.99),
        probe_requests=len(probe), probe_failures=sum(1 for r in probe if r.status != 200),
        disk_flush_p50_ms=percentile_ms(data.flush_s, 0.50),
        disk_flush_p99_ms=percentile_ms(data.flush_s, 0.99),
        disk_flush_max_ms=percentile_ms(data.flush_s, 1.0),
        mb_per_s=round((stats.uploaded_bytes + stats.downloaded_bytes) / MB / elapsed, 2),
        upload_mb_per_s=round(stats.uploaded_bytes / MB / elapsed, 2),
        download_mb_per_s=round(stats.downloaded_bytes / MB / elapsed, 2),
        files_committed=len(data.ledger.all), files_lost=len(lost),
        files_plaintext_checked=len(data.ledger.all) if data.verify_plaintext else 0,
        download_mismatches=stats.download_mismatches,
        upload_hash_mismatches=stats.upload_hash_mismatches,
        listing_missing=stats.listing_missing,
        feed_subscriptions=len(stats.feed_events),
        feed_events=sum(len(s) for s in stats.feed_events.values()),
        feed_events_missed=missed,
        probes_refused=stats.probes_refused, probes_accepted=stats.probes_accepted,
        entries_appended=appended, entries_expected=expected, entries_verified=report.entries,
        log_verified=report.ok,
        one_entry_per_request=appended == expected and not any(problems.values()),
        entry_problems=problems, requests_without_response=problems["no_response"],
        server_peak_rss_mib=data.sampler.peak_mib(),
        server_peak_rss_mib_per_process=data.sampler.peaks_mib(),
        server_rss_first_half_mib=data.sampler.peak_between_mib(data.started, half),
        server_rss_second_half_mib=data.sampler.peak_between_mib(half, data.ended),
        op_errors=len(stats.errors), client_warnings=len(stats.warnings),
        ops={op: _latency(values) for op, values in sorted(stats.op_latency_s.items())},
        request_kinds={kind: {**_latency([r.latency_s for r in group]),
                              "refused": sum(1 for r in group if r.status >= 400 or not r.status)}
                       for kind, group in sorted(data.log.by_kind().items())},
        server_small_kinds={kind: _latency(times) for kind, times in server_kinds.items()},
        core_busy_pct=data.cpu.core_busy_pct, core_iowait_pct=data.cpu.core_iowait_pct,
        side_cores=data.cpu.side_cores,
        server_small_tail_ms=tail_waits_ms(t for times in server_records.values() for t in times),
        server_loop_lag_samples=data.loop_lag.samples,
        server_loop_lag_p99_ms=data.loop_lag.p99_ms,
        server_loop_lag_starved_pct=data.loop_lag.starved_pct,
        samples={"lost": lost[:10], "errors": stats.errors[:10],
                 "warnings": stats.warnings[:10], "no_response": data.log.failures[:10],
                 "log_findings": [str(f)[:300] for f in report.findings[:5]]},
    )

