"""Load benchmark (issue 7, item 2): many concurrent clients against 1 or 2 server processes.

Usage: .venv/bin/python bench/load.py [--clients N] [--duration-s S] [--processes 1|2]
                                      [--max-file-mib M] [--backend postgres|sqlite] [--pin]
                                      [--client-dir DIR] [--json]

Starts a private PostgreSQL cluster (``--backend postgres``, the default) and
``--processes`` ``exchange serve`` processes sharing it and one data
directory, enrols one participant per client (60 % prosecutors, the rest
coordinators) and one for the latency probe (a coordinator in no case),
creates cases, then runs N clients (asyncio tasks in this
process, real ``exchange.client`` operations) for S seconds: uploads of
random files (0 B to M MiB, log-uniform), verified downloads, listings,
refused probes of other cases, and open case feeds (SSE). Afterwards every
acknowledged file is checked in the store (ciphertext and plaintext hash),
the audit log is verified with ``exchange.audit.verify_log`` and must hold
exactly one entry per request the clients made. The engine lives in
``tests/load/engine.py`` (the CI test runs a short version of it).

Prints requests/s, MB/s, p50/p99 latency per request kind and per
operation, server peak memory (VmHWM) and entries verified; ``--json``
prints one object (keys include ``requests_per_s``, ``p99_ms``,
``small_p50_ms`` and ``small_p99_ms`` (reads other than transfers: listings,
case views, feeds, audit reads), ``server_small_p50_ms`` and
``server_small_p99_ms`` (the same reads timed by the servers themselves, from
their request log: handler start to response ready, feeds left out;
``tests/load/server_times.py``; ``server_small_kinds`` splits them by request
kind, to show which reads make the tail), ``transfer_p99_ms`` (upload PATCHes and
downloads, to response headers), ``write_p99_ms``, ``probe_p50_ms`` and
``probe_p99_ms`` (an idle client in its own process sending a small read
every 50 ms: server latency without the busy clients' own event loop in it),
split into ``probe_unlogged_p50_ms``/``probe_unlogged_p99_ms`` (the audit
checkpoint, answered without an audit entry) and
``probe_logged_p50_ms``/``probe_logged_p99_ms`` (the case list, answered
after its audit entry is committed, like every listing and case view; its
entries count in the one-entry-per-request check), ``disk_flush_p50_ms``,
``disk_flush_p99_ms`` and ``disk_flush_max_ms`` (``tests/load/flush_probe.py``:
an 8 KiB overwrite and ``fdatasync`` every ``--disk-probe-ms`` (100) on the same disk, as a commit's
log flush; the floor under a logged read's latency that the disk sets while the
transfers' blobs are fsynced), ``core_busy_pct`` and ``core_iowait_pct`` (each
core's share of the load window busy and waiting for I/O, keyed by core number),
``side_cores`` (the cores' worth of CPU the servers, the database and the clients'
process used in the window; ``tests/load/cpu_window.py``): whether the machine was the
limit, ``server_loop_lag_p99_ms`` and ``server_loop_lag_starved_pct`` (how late the servers'
event loops ran a timer in the window, from their ``exchange_event_loop_lag_seconds``
histograms: the 99th percentile, estimated within its bucket, and the percentage of
wake-ups more than 100 ms late; ``tests/load/loop_lag.py``): whether transfers starved
the loop, ``server_small_tail_ms`` (the servers' slowest small reads, at or above their
p99: their mean time and how much of it they waited for the database, by kind, from the
``db_wait_ms`` of their log lines; ``tests/load/server_times.py``), ``files_lost``,
``entries_verified``, ``server_peak_rss_mib``). Exit status 0 when every
check passed, 3 otherwise. Client work runs on the same cores as the
servers and the database, unless ``--pin`` puts the clients on the first
usable core and the database and servers on the second. The clients keep
their files (what they upload, what they pull) in the work directory, on the
data's disk, unless ``--client-dir`` puts them on another filesystem
(``/dev/shm``), as in service, where clients write to their own disks: on one
disk their writes were most of a small flush's tail (2026-12-07).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.load.engine import MIB, LoadConfig, LoadResult, run_load
from tests.server_harness import core_split


def _print_human(result: LoadResult) -> None:
    c = result.config
    print(f"load: {c['clients']} clients, {c['processes']} server process(es) on "
          f"{c['backend']}, {result.elapsed_s} s measured (set-up {result.setup_s} s, "
          f"checks {result.verify_s} s), files up to {c['max_file_mib']} MiB"
          + (f"; servers on cores {c['server_cpus']}, clients on {c['client_cpus']}"
             if c.get("server_cpus") else ""))
    print(f"requests: {result.requests} ({result.requests_per_s}/s), p50 {result.p50_ms} ms, "
          f"p99 {result.p99_ms} ms (time to response headers)")
    counts = result.requests_by_class
    print(f"  small reads {counts['small']}: p50 {result.small_p50_ms} ms, p99 "
          f"{result.small_p99_ms} ms; transfers {counts['transfer']}: p50 "
          f"{result.transfer_p50_ms} ms, p99 {result.transfer_p99_ms} ms; writes "
          f"{counts['write']}: p50 {result.write_p50_ms} ms, p99 {result.write_p99_ms} ms")
    print(f"  small reads as the servers timed them ({result.server_small_requests}, probe's "
          f"included, feeds left out): p50 {result.server_small_p50_ms} ms, p99 "
          f"{result.server_small_p99_ms} ms")
    print(f"  probe (one idle client, own process, a small read every 50 ms) "
          f"{result.probe_requests}: p50 {result.probe_p50_ms} ms, p99 {result.probe_p99_ms} ms, "
          f"{result.probe_failures} failed; unlogged (checkpoint) p50 "
          f"{result.probe_unlogged_p50_ms} ms, p99 {result.probe_unlogged_p99_ms} ms; logged "
          f"(case list) p50 {result.probe_logged_p50_ms} ms, p99 {result.probe_logged_p99_ms} ms")
    print(f"  disk (8 KiB + fdatasync every {c['disk_probe_interval_s']} s beside the load): p50 "
          f"{result.disk_flush_p50_ms} ms, p99 {result.disk_flush_p99_ms} ms, max "
          f"{result.disk_flush_max_ms} ms")
    cores = ", ".join(f"core {core} {busy} % busy, {result.core_iowait_pct.get(core)} % I/O wait"
                      for core, busy in result.core_busy_pct.items())
    sides = ", ".join(f"{side} {used}" for side, used in result.side_cores.items())
    print(f"CPU in the load window: {cores or 'not measured'}; cores' worth used: "
          f"{sides or 'not measured'}")
    tail = result.server_small_tail_ms
    waits = ", ".join(f"{kind} {ms} ms" for kind, ms in tail.items()
                      if kind not in ("count", "total"))
    print(f"the servers' slowest small reads ({int(tail.get('count', 0))}, at or above their "
          f"p99): {tail.get('total')} ms on average, of which {waits or 'not measured'}")
    print(f"servers' event-loop lag ({result.server_loop_lag_samples} wake-ups): p99 "
          f"{result.server_loop_lag_p99_ms} ms, {result.server_loop_lag_starved_pct} % more "
          "than 100 ms late")
    print(f"throughput: {result.mb_per_s} MB/s (upload {result.upload_mb_per_s}, "
          f"download {result.download_mb_per_s})")
    print("operations (end to end):")
    for op, figures in result.ops.items():
        print(f"  {op:<10} {int(figures['count']):>7}  p50 {figures['p50_ms']:>9} ms  "
              f"p99 {figures['p99_ms']:>9} ms")
    print("requests by kind:")
    for kind, figures in result.request_kinds.items():
        print(f"  {kind:<52} {int(figures['count']):>7}  p50 {figures['p50_ms']:>8} ms  "
              f"p99 {figures['p99_ms']:>8} ms  refused {int(figures['refused'])}")
    print("small reads by kind, as the servers timed them:")
    for kind, figures in result.server_small_kinds.items():
        print(f"  {kind:<52} {int(figures['count']):>7}  p50 {figures['p50_ms']:>8} ms  "
              f"p99 {figures['p99_ms']:>8} ms")
    print(f"files: {result.files_committed} committed, {result.files_lost} lost, "
          f"{result.files_plaintext_checked} plaintext-checked; download mismatches "
          f"{result.download_mismatches}; listing misses {result.listing_missing}")
    print(f"feeds: {result.feed_subscriptions} open, {result.feed_events} evidence events, "
          f"{result.feed_events_missed} missed; probes refused {result.probes_refused}, "
          f"accepted {result.probes_accepted}")
    print(f"audit log: {result.entries_verified} entries verified "
          f"({'ok' if result.log_verified else 'FINDINGS'}); {result.entries_appended} appended "
          f"during the run for {result.entries_expected} logged requests: "
          f"{'one entry per request' if result.one_entry_per_request else 'MISMATCH'} "
          f"{ {k: v for k, v in result.entry_problems.items() if v} or ''}")
    print(f"server memory: peak {result.server_peak_rss_mib} MiB (VmHWM per process: "
          f"{result.server_peak_rss_mib_per_process}); sampled VmRSS peak "
          f"{result.server_rss_first_half_mib} MiB in the first half, "
          f"{result.server_rss_second_half_mib} MiB in the second")
    print(f"errors: {result.op_errors} operations failed, {result.client_warnings} client "
          f"warnings")
    for name, lines in result.samples.items():
        for line in lines:
            print(f"  {name}: {line}")
    print("verdict: " + ("all checks passed" if result.ok else "CHECKS FAILED"))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration-s", type=float, default=180.0)
    parser.add_argument("--processes", type=int, choices=(1, 2), default=1)
    parser.add_argument("--max-file-mib", type=float, default=256.0)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--chunk-mib", type=float, default=8.0,
                        help="upload PATCH size (one audit entry each)")
    parser.add_argument("--no-plaintext-check", action="store_true",
                        help="check stored ciphertext hashes only (skip decrypting every blob)")
    parser.add_argument("--pin", action="store_true",
                        help="the database and servers on the second usable core, the clients "
                             "(this process) on the first, so client CPU is not server latency")
    parser.add_argument("--disk-probe-ms", type=float, default=100.0,
                        help="time an 8 KiB fdatasync on the data's disk this often during the "
                             "load (the disk's floor under a commit); 0: do not")
    parser.add_argument("--client-dir", type=Path,
                        help="keep the clients' files (what they upload and pull) under this "
                             "directory, e.g. /dev/shm, not on the data's disk: in service "
                             "clients write to their own disks (default: the work directory)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", type=Path, help="run in this directory and keep it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    client_cpus, server_cpus = core_split() if args.pin else (None, None)
    config = LoadConfig(
        clients=args.clients, duration_s=args.duration_s, processes=args.processes,
        max_file_bytes=int(args.max_file_mib * MIB), backend=args.backend,
        chunk_bytes=int(args.chunk_mib * MIB), verify_plaintext=not args.no_plaintext_check,
        seed=args.seed, disk_probe_interval_s=args.disk_probe_ms / 1000,
        server_cpus=frozenset(server_cpus) if server_cpus else None,
        client_cpus=frozenset(client_cpus) if client_cpus else None,
        client_dir=args.client_dir,
    )
    if args.keep:
        result = run_load(config, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="exchange-load-") as tmp:
            result = run_load(config, Path(tmp))
    if args.json:
        print(json.dumps(result.to_json(), indent=2, sort_keys=True))
    else:
        _print_human(result)
    return 0 if result.ok else 3


if __name__ == "__main__":
    sys.exit(main())
