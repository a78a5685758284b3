"""The load test's disk probe: how long one small durable write takes on the data's disk.

A logged read is answered only once its audit entry is committed, and a
commit ends with a flush of the database's write-ahead log to the disk. On a
machine whose one disk also takes the uploads' blobs (each PATCH fsynced),
that flush waits for the blob bytes queued ahead of it, whatever the server
does. This probe measures that floor in the same run as the load: every
``--interval-ms`` (the load test: 100 ms), on a fixed schedule, it overwrites
8 KiB of a preallocated 16 MiB file (as a write-ahead log is written: in
place, no metadata change) and times ``fdatasync``, until the Unix time
``--until``. At 100 ms it adds 80 KiB/s of writes and ten flushes a second
to the load's own.

    python -m tests.load.flush_probe DIR --until UNIX_TIME [--interval-ms M]

It creates ``DIR/flush-probe.bin`` (DIR must exist and the file must not)
and removes that file at the end; it touches nothing else. It prints one
JSON object: ``{"flush_s": [seconds, ...]}``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from tests.load.schedule import fixed_schedule

FILE_NAME = "flush-probe.bin"
#: The size of the preallocated file and of each timed write (a WAL page is 8 KiB).
FILE_BYTES = 16 * 1024 * 1024
WRITE_BYTES = 8 * 1024


def measure(directory: Path, until: float, interval_s: float) -> list[float]:
    """Return the seconds each timed ``fdatasync`` took, one per interval until ``until``."""
    path = directory / FILE_NAME
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        os.pwrite(fd, bytes(FILE_BYTES), 0)
        os.fsync(fd)
        page = b"\x5a" * WRITE_BYTES
        timings: list[float] = []
        for n, due in enumerate(fixed_schedule(until, interval_s)):
            time.sleep(max(0.0, due - time.monotonic()))
            os.pwrite(fd, page, (n * WRITE_BYTES) % FILE_BYTES)
            began = time.perf_counter()
            os.fdatasync(fd)
            timings.append(time.perf_counter() - began)
        return timings
    finally:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # the file this probe created (O_EXCL above)


def main(argv: list[str] | None = None) -> int:
    """Run the probe and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("directory", type=Path, help="a directory on the data's disk")
    parser.add_argument("--until", type=float, required=True,
                        help="Unix time at which to stop")
    parser.add_argument("--interval-ms", type=float, default=100.0)
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        parser.error(f"{args.directory} is not a directory")
    timings = measure(args.directory, args.until, args.interval_ms / 1000)
    sys.stdout.write(json.dumps({"flush_s": timings}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
