"""How a big writer's flushing pattern sets a small flush's latency on the same disk.

Usage: .venv/bin/python bench/disk_queue.py [--dir DIR] [--writers N] [--mb-per-s R]
                                            [--duration-s S] [--json]

A logged read is answered once its audit entry's 8 KiB reaches the disk
(``fdatasync`` of the database's log), while uploads write megabytes to the
same disk. This measures, on the disk holding ``--dir`` (default: the system's
temporary directory), the p50/p99 of that small flush (an 8 KiB overwrite of a
preallocated file and ``fdatasync``, every 50 ms) beside N (default 8) writers
at R MB/s in all (default 60), each writing 32 MiB files in 2 MiB pieces as an
upload's PATCH is written, under two patterns in alternating rounds:

* ``flush_every_16mib``: an ``fdatasync`` every 16 MiB (the uploads' pattern
  before 2026-12-07, night), so 16 MiB reach the disk's queue at once;
* ``writeback_each_piece``: each piece's write-back started as it is written
  (``exchange.fsutil.start_writeback``, ``sync_file_range``), no flush until
  the file's end: the pattern of uploads and pulls since.

Both end each file with an ``fsync``. ``--json`` prints one object with, per
pattern, ``small_flush_p50_ms``, ``small_flush_p99_ms``, ``small_flush_max_ms``
and ``written_mb_per_s``, and ``p99_ratio`` (the second pattern's p99 over the
first's, from the same run). Creates its files in a new directory under
``--dir`` and removes only them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.fsutil import start_writeback

PIECE = 2 * 1024 * 1024
FILE_PIECES = 16  # 32 MiB files
FLUSH_EVERY_PIECES = 8  # 16 MiB
PATTERNS = ("flush_every_16mib", "writeback_each_piece")
PROBE_BYTES = 8 * 1024
PROBE_FILE_BYTES = 16 * 1024 * 1024
PROBE_INTERVAL_S = 0.05


def _writer(directory: Path, number: int, pattern: str, bytes_per_s: float,
            stop_at: float, written: list[int]) -> None:
    """Write files at ``bytes_per_s`` in ``pattern`` until ``stop_at``; count the bytes."""
    piece = os.urandom(PIECE)
    started, total, file_number = time.monotonic(), 0, 0
    while time.monotonic() < stop_at:
        path = directory / f"writer-{number}-{file_number}"
        file_number += 1
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for k in range(FILE_PIECES):
                offset = k * PIECE
                os.pwrite(fd, piece, offset)
                total += PIECE
                if pattern == "writeback_each_piece":
                    start_writeback(fd, offset, PIECE)
                elif k % FLUSH_EVERY_PIECES == FLUSH_EVERY_PIECES - 1:
                    os.fdatasync(fd)
                ahead = total / bytes_per_s - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                if time.monotonic() >= stop_at:
                    break
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink()
    written.append(total)


def _small_flushes(directory: Path, stop_at: float) -> list[float]:
    """Time an 8 KiB overwrite's ``fdatasync`` every 50 ms until ``stop_at``; return ms."""
    path = directory / "small-flush"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.pwrite(fd, bytes(PROBE_FILE_BYTES), 0)
        os.fsync(fd)
        page, timings, n = b"\x5a" * PROBE_BYTES, [], 0
        while time.monotonic() < stop_at:
            time.sleep(PROBE_INTERVAL_S)
            os.pwrite(fd, page, (n * PROBE_BYTES) % PROBE_FILE_BYTES)
            n += 1
            began = time.perf_counter()
            os.fdatasync(fd)
            timings.append((time.perf_counter() - began) * 1000)
        return timings
    finally:
        os.close(fd)
        path.unlink()


def measure(directory: Path, pattern: str, writers: int, bytes_per_s: float,
            duration_s: float) -> dict[str, float]:
    """One round of ``pattern``: the small flush's latencies and what the writers wrote."""
    stop_at = time.monotonic() + duration_s
    written: list[int] = []
    threads = [threading.Thread(target=_writer, args=(directory, n, pattern,
                                                      bytes_per_s / writers, stop_at, written))
               for n in range(writers)]
    for thread in threads:
        thread.start()
    timings = sorted(_small_flushes(directory, stop_at))
    for thread in threads:
        thread.join()
    return {"small_flush_p50_ms": round(timings[len(timings) // 2], 2),
            "small_flush_p99_ms": round(timings[int(len(timings) * 0.99)], 2),
            "small_flush_max_ms": round(timings[-1], 2),
            "written_mb_per_s": round(sum(written) / duration_s / 1e6, 1)}


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="a directory on the disk to measure (default: the temporary one)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--mb-per-s", type=float, default=60.0,
                        help="what the writers write together, MB/s")
    parser.add_argument("--duration-s", type=float, default=30.0, help="per round")
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating rounds of the two patterns")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.writers < 1 or args.mb_per_s <= 0 or args.duration_s <= 0 or args.rounds < 1:
        parser.error("writers, rate, duration and rounds must be positive")
    rounds: dict[str, list[dict[str, float]]] = {p: [] for p in PATTERNS}
    with tempfile.TemporaryDirectory(prefix="exchange-disk-queue-", dir=args.dir) as work:
        for _ in range(args.rounds):
            for pattern in PATTERNS:
                rounds[pattern].append(measure(Path(work), pattern, args.writers,
                                               args.mb_per_s * 1e6, args.duration_s))
    result: dict[str, object] = {
        "writers": args.writers, "mb_per_s": args.mb_per_s, "duration_s": args.duration_s,
        "rounds": rounds}
    for pattern in PATTERNS:
        result[pattern] = {key: _median([r[key] for r in rounds[pattern]])
                           for key in rounds[pattern][0]}
    first, second = (result[p] for p in PATTERNS)
    assert isinstance(first, dict) and isinstance(second, dict)
    result["p99_ratio"] = round(second["small_flush_p99_ms"] /
                                max(first["small_flush_p99_ms"], 0.001), 3)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for pattern in PATTERNS:
            figures = result[pattern]
            assert isinstance(figures, dict)
            print(f"{pattern}: an 8 KiB flush p50 {figures['small_flush_p50_ms']} ms, "
                  f"p99 {figures['small_flush_p99_ms']} ms, max {figures['small_flush_max_ms']}"
                  f" ms, beside {figures['written_mb_per_s']} MB/s of writes")
        print(f"p99 ratio (writeback each piece / flush every 16 MiB): {result['p99_ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
