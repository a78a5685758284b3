"""Short version of the load benchmark (issue 7, item 2) for CI, on the engine of bench/load.py.

12 clients for 15 s with files up to 4 MiB (uploaded in 1 MiB PATCHes),
against one and then two ``exchange serve`` processes sharing one
PostgreSQL database and data directory (the two on their own core, as
``bench/load.py --pin`` runs them): nothing acknowledged is lost or
altered, the log verifies and holds exactly one entry per request, feeds
deliver every commit (the latency probe's logged reads included), and the
server's peak resident set stays under 150 MiB. The fast tests below show
the accounting can fail.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.load.accounting import RequestRecord, request_class, request_kind
from tests.load.checks import LoadResult, _entry_problems
from tests.load.engine import MIB, LoadConfig, run_load
from tests.load.flush_probe import FILE_NAME, measure
from tests.load.server_times import (
    SmallTime,
    seconds_by_kind,
    server_small_records,
    tail_waits_ms,
)
from tests.load.workload import DataSource, pick_size
from tests.server_harness import core_split, drop_postgres, fresh_postgres

MAX_SERVER_RSS_MIB = 150


def _explain(result: LoadResult) -> str:
    figures = {k: v for k, v in result.to_json().items() if k not in ("request_kinds",)}
    return json.dumps(figures, indent=1, default=str)


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_short_load_loses_nothing_and_logs_every_request(processes: int,
                                                         tmp_path: Path) -> None:
    name, dsn = fresh_postgres()
    # With two processes the servers run on their own core (bench/load.py --pin); the shared
    # test database's cluster is already running, so only the servers are pinned.
    client_cpus, server_cpus = core_split() if processes == 2 else (None, None)
    # With two processes the clients keep their files elsewhere (bench/load.py --client-dir),
    # as in service, where they write to their own disks.
    elsewhere = tmp_path / "clients-elsewhere" if processes == 2 else None
    work = tmp_path / "work"
    if elsewhere is not None:
        elsewhere.mkdir()
    try:
        result = run_load(LoadConfig(
            clients=12, duration_s=15, processes=processes, max_file_bytes=4 * MIB,
            chunk_bytes=1 * MIB, database_url=dsn, grace_s=60, seed=processes,
            server_cpus=frozenset(server_cpus) if server_cpus else None,
            client_cpus=frozenset(client_cpus) if client_cpus else None,
            client_dir=elsewhere,
        ), work)
    finally:
        drop_postgres(name)
    why = _explain(result)
    # The load really ran: uploads, downloads, listings, refusals and feed events.
    assert result.files_committed >= 5, why
    assert {"upload", "download", "list", "probe"} <= set(result.ops), why
    assert result.probes_refused >= 1 and result.probes_accepted == 0, why
    assert result.feed_events >= 1, why
    # Nothing acknowledged is lost, altered, missing from listings or from feeds.
    assert result.files_lost == 0, why
    assert result.files_plaintext_checked == result.files_committed, why
    assert result.download_mismatches == 0 and result.upload_hash_mismatches == 0, why
    assert result.listing_missing == 0 and result.feed_events_missed == 0, why
    assert result.op_errors == 0 and result.client_warnings == 0, why
    # The log verifies and holds exactly one entry per request the clients made.
    assert result.log_verified, why
    assert result.entries_verified >= result.entries_appended > 0, why
    assert result.entries_appended == result.entries_expected, why
    assert not any(result.entry_problems.values()), why
    assert result.one_entry_per_request, why
    assert result.server_peak_rss_mib < MAX_SERVER_RSS_MIB, why
    # Latency is reported apart for small reads and transfers (figures, never thresholds).
    counts = result.requests_by_class
    assert counts["small"] > 0 and counts["transfer"] > 0 and counts["write"] > 0, why
    assert sum(counts.values()) == result.requests, why
    assert 0 < result.small_p50_ms <= result.small_p99_ms, why
    assert 0 < result.transfer_p50_ms <= result.transfer_p99_ms, why
    # The servers timed the small reads themselves (from their request log, in the run's
    # window): at least the clients' small reads that got an answer in it are there.
    assert result.server_small_requests >= counts["small"] // 2 > 0, why
    assert 0 < result.server_small_p50_ms <= result.server_small_p99_ms, why
    kinds = result.server_small_kinds
    assert sum(k["count"] for k in kinds.values()) == result.server_small_requests, why
    assert "GET /v1/cases" in kinds and "GET /v1/cases/{cid}/feed" not in kinds, why
    # The probe measured both its kinds (unlogged checkpoint, logged case list), none failed,
    # and the entries of its logged reads are in the one-entry-per-request accounting above.
    assert result.probe_requests >= 2 and result.probe_failures == 0, why
    assert 0 < result.probe_p50_ms <= result.probe_p99_ms, why
    assert 0 < result.probe_unlogged_p50_ms <= result.probe_unlogged_p99_ms, why
    assert 0 < result.probe_logged_p50_ms <= result.probe_logged_p99_ms, why
    # The disk probe timed its flushes beside the load and left no file behind.
    assert 0 < result.disk_flush_p50_ms <= result.disk_flush_p99_ms <= result.disk_flush_max_ms, why
    assert not (work / FILE_NAME).exists()
    # The clients' files were where they were asked to be, and that directory is left as found.
    assert (work / "clients").exists() == (elsewhere is None)
    if elsewhere is not None:
        assert not any(elsewhere.iterdir())
        assert result.config["client_dir"] == str(elsewhere)
    # Where the CPU went in the window: every core measured, and the servers, the
    # postmaster and its backends, and this process each used some.
    assert set(result.core_busy_pct) == set(result.core_iowait_pct) == \
        {str(core) for core in range(os.cpu_count() or 1)}, why
    assert all(0 <= v <= 100 for v in [*result.core_busy_pct.values(),
                                       *result.core_iowait_pct.values()]), why
    assert set(result.side_cores) == {"servers", "database", "clients"}, why
    assert all(0 < used <= (os.cpu_count() or 1) for used in result.side_cores.values()), why
    # Every server's loop-lag watcher ran through the window (one wake-up per 20 ms each).
    assert result.server_loop_lag_samples >= 10 * (result.elapsed_s // 1), why
    assert 0 <= result.server_loop_lag_p99_ms <= 2500, why
    assert 0 <= result.server_loop_lag_starved_pct <= 100, why
    assert result.ok, why


def test_flush_probe_times_each_flush_and_removes_only_its_file(tmp_path: Path) -> None:
    # One timing per 0.1 s slot at most; a busy CI machine may miss slots (the 16 MiB
    # preallocation's fsync comes first), so only "at least one" is certain.
    timings = measure(tmp_path, time.time() + 1.0, 0.1)
    assert 1 <= len(timings) <= 11 and all(0 < t < 30 for t in timings)
    assert list(tmp_path.iterdir()) == []


def test_flush_probe_refuses_a_file_it_did_not_create(tmp_path: Path) -> None:
    mine = tmp_path / FILE_NAME
    mine.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        measure(tmp_path, time.time() + 0.1, 0.05)
    assert mine.read_bytes() == b"someone else's"


def test_request_kind_templates_ids() -> None:
    assert request_kind("get", "/v1/cases/case-1/epochs/2/envelope") == \
        "GET /v1/cases/{cid}/epochs/{n}/envelope"
    assert request_kind("PATCH", "/v1/uploads/u-9") == "PATCH /v1/uploads/{uid}"
    assert request_kind("GET", "/v1/evidence/e1/content") == "GET /v1/evidence/{eid}/content"
    assert request_kind("GET", "/v1/audit/proof/inclusion?index=3&size=9") == \
        "GET /v1/audit/proof/inclusion"
    assert request_kind("POST", "/v1/cases/c/members/p/remove") == \
        "POST /v1/cases/{cid}/members/{pid}/remove"


def test_request_class_separates_transfers_small_reads_and_writes() -> None:
    assert request_class("PATCH /v1/uploads/{uid}") == "transfer"
    assert request_class("GET /v1/evidence/{eid}/content") == "transfer"
    for kind in ("GET /v1/cases", "GET /v1/cases/{cid}/feed", "GET /v1/audit/proof/inclusion",
                 "GET /v1/evidence/{eid}", "HEAD /v1/uploads/{uid}", "OPTIONS /v1/uploads"):
        assert request_class(kind) == "small", kind
    for kind in ("POST /v1/cases/{cid}/uploads", "POST /v1/uploads/{uid}/commit",
                 "POST /v1/cases"):
        assert request_class(kind) == "write", kind


def _entries(actors: list[str]) -> list[bytes]:
    return [json.dumps({"actor": actor}).encode() for actor in actors]


def _record(actor: str, index: int | None, *, kind: str = "GET /v1/cases",
            status: int = 200) -> RequestRecord:
    return RequestRecord(actor=actor, kind=kind, status=status, latency_s=0.01,
                         audit_index=index)


def test_entry_accounting_accepts_one_entry_per_request() -> None:
    entries = _entries(["admin", "a", "b", "a"])
    records = [_record("a", 1), _record("b", 2, status=403), _record("a", 3),
               _record("a", None, kind="GET /v1/audit/checkpoint")]
    expected, problems = _entry_problems(records, entries, 1, 4)
    assert expected == 3
    assert not any(problems.values())


def test_entry_accounting_finds_missing_duplicate_and_foreign_entries() -> None:
    entries = _entries(["admin", "a", "b", "a", "x"])
    records = [_record("a", 1), _record("a", 1), _record("a", 2), _record("a", 9),
               _record("a", None), _record("a", None, status=0)]
    expected, problems = _entry_problems(records, entries, 1, 5)
    assert expected == 6
    assert problems == {"duplicate_index": 1, "index_outside_run": 1, "entry_not_named": 2,
                        "actor_mismatch": 1, "logged_response_without_index": 1,
                        "no_response": 1}


def test_data_source_writes_distinct_files_with_their_hash(tmp_path: Path) -> None:
    source = DataSource(1000, seed=3)
    one, two = tmp_path / "one", tmp_path / "two"
    sha_one = source.write_file(one, 2500, b"A" * 16, offset=990)
    sha_two = source.write_file(two, 2500, b"B" * 16, offset=990)
    assert one.stat().st_size == two.stat().st_size == 2500
    assert sha_one == hashlib.sha256(one.read_bytes()).hexdigest()
    assert sha_two == hashlib.sha256(two.read_bytes()).hexdigest() != sha_one
    empty = tmp_path / "empty"
    assert source.write_file(empty, 0, b"C" * 16, offset=5) == hashlib.sha256(b"").hexdigest()


def test_file_sizes_are_bounded_and_mostly_small() -> None:
    rng = random.Random(7)
    sizes = [pick_size(rng, 256 * MIB) for _ in range(2000)]
    assert min(sizes) == 0 and max(sizes) <= 256 * MIB
    assert sorted(sizes)[len(sizes) // 2] < MIB
    assert max(sizes) > 64 * MIB


def test_server_times_keep_small_requests_in_the_window(tmp_path: Path) -> None:
    """Small reads in the window count; feeds, downloads, PATCHes, writes and late lines do not."""
    def line(method: str, route: str | None, ms: float, at: str) -> str:
        return json.dumps({"event": "request_handled", "method": method, "route": route,
                           "duration_ms": ms, "timestamp": at, "status": 200})

    log = tmp_path / "server-0.log"
    log.write_text("\n".join([
        "exchange: serving on https://exchange.load.test (listening on http://127.0.0.1:1)",
        line("GET", "/v1/cases", 12.0, "2026-12-07T03:00:01.000000Z"),
        line("GET", "/v1/audit/checkpoint", 30.0, "2026-12-07T03:00:02.000000Z"),
        line("GET", "/v1/cases/{cid}/feed", 60000.0, "2026-12-07T03:00:03.000000Z"),
        line("GET", "/v1/evidence/{eid}/content", 900.0, "2026-12-07T03:00:03.000000Z"),
        line("PATCH", "/v1/uploads/{uid}", 700.0, "2026-12-07T03:00:03.000000Z"),
        line("POST", "/v1/cases/{cid}/uploads", 50.0, "2026-12-07T03:00:03.000000Z"),
        line("GET", None, 1.0, "2026-12-07T03:00:03.000000Z"),
        line("GET", "/v1/cases", 5.0, "2026-12-07T03:00:09.000000Z"),  # after the window
        json.dumps({"event": "server_started", "timestamp": "2026-12-07T03:00:00.000000Z"}),
    ]) + "\n")
    start = datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC).timestamp()
    assert seconds_by_kind(server_small_records([log], start, start + 5)) == {
        "GET /v1/audit/checkpoint": [0.030], "GET /v1/cases": [0.012]}


def test_server_lines_carry_their_database_waits(tmp_path: Path) -> None:
    log = tmp_path / "server-0.log"
    log.write_text("\n".join(json.dumps(record) for record in [
        {"event": "request_handled", "method": "GET", "route": "/v1/cases", "status": 200,
         "duration_ms": 80.0, "timestamp": "2026-12-07T03:00:01.000000Z",
         "db_wait_ms": {"queued": 30.0, "commit": 40.0}},
        {"event": "request_handled", "method": "GET", "route": "/v1/audit/checkpoint",
         "status": 200, "duration_ms": 2.0, "timestamp": "2026-12-07T03:00:01.000000Z"},
    ]) + "\n")
    start = datetime(2026, 12, 7, 3, 0, 0, tzinfo=UTC).timestamp()
    assert server_small_records([log], start, start + 5) == {
        "GET /v1/audit/checkpoint": [SmallTime(0.002, {})],
        "GET /v1/cases": [SmallTime(0.080, {"queued": 0.030, "commit": 0.040})]}


def test_the_tail_is_the_slowest_percent_and_its_waits_are_averaged() -> None:
    fast = [SmallTime(0.010, {"commit": 0.005}) for _ in range(98)]
    slow = [SmallTime(0.500, {"queued": 0.200, "commit": 0.250}),
            SmallTime(0.700, {"nonce": 0.100, "commit": 0.500})]
    tail = tail_waits_ms(fast + slow)
    # The p99 of 100 requests is the 99th: the two slow ones are at or above it.
    assert tail == {"count": 2.0, "total": 600.0, "commit": 375.0, "nonce": 50.0,
                    "queued": 100.0, "other": 75.0}
    assert tail_waits_ms([]) == {}
