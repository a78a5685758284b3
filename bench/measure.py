"""What the benchmarks measure processes with: wall time, CPU seconds and peak RSS, per side.

* :func:`launch` runs a command (or a shell pipeline) from a tiny launcher
  interpreter pinned to the given cores and returns the wall time, the CPU
  seconds (user + system) and the peak resident set of everything it ran,
  from ``getrusage(RUSAGE_CHILDREN)`` after the wait. A launcher is needed
  because a child's ``ru_maxrss`` starts from its parent's resident size at
  fork (and exec): forked from a benchmark process, the figure would be the
  benchmark's, not the command's.
* :func:`listening_port` reads the port a reference server (``bench/plain_server.py``,
  ``bench/floor_server.py``) prints once it listens.
* :func:`cpu_s` and :func:`vm_hwm_mib` read a running server's CPU seconds
  (every thread, /proc/PID/stat; ``tests.load.cpu_window.process_cpu_s``) and its peak
  resident set (VmHWM).

Servers are started on their cores with :func:`tests.server_harness.pinned`.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.load.cpu_window import process_cpu_s  # the importing script put the checkout first

__all__ = ["Run", "cpu_s", "launch", "listening_port", "vm_hwm_mib",
           "with_bytecode_cache"]

MIB = 1024 * 1024

# argv: OUT CPUS COMMAND...  CPUS is "" (no pinning) or "0,1"; writes one JSON object to OUT.
_LAUNCHER = """
import json, os, resource, subprocess, sys, time
out, cpus, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
if cpus:
    os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
started = time.perf_counter()
status = subprocess.run(argv, stdin=subprocess.DEVNULL).returncode
wall = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(out, "w") as handle:
    json.dump({"status": status, "wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, handle)
"""


@dataclass(frozen=True, slots=True)
class Run:
    """One launched command: wall seconds, CPU seconds of all its processes, peak RSS, stdout."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    stdout: str


def launch(argv: Sequence[str], *, env: Mapping[str, str] | None = None,
           cpus: set[int] | None = None) -> Run:
    """Run ``argv`` on ``cpus`` (None: anywhere) through the launcher; raise if it fails.

    The wall time starts when the launcher spawns the command, so the
    launcher's own start-up is not counted; the command's is.
    """
    with tempfile.NamedTemporaryFile(prefix="bench-launch-", suffix=".json") as out:
        done = subprocess.run(
            [sys.executable, "-c", _LAUNCHER, out.name,
             ",".join(str(c) for c in sorted(cpus or ())), *argv],
            env=None if env is None else dict(env), capture_output=True, text=True, check=False)
        figures = json.loads(Path(out.name).read_text() or "{}")
    if done.returncode != 0 or figures.get("status") != 0:
        raise RuntimeError(f"{' '.join(argv)[:200]} failed:\n{done.stderr[-2000:]}")
    return Run(wall_s=figures["wall_s"], cpu_s=figures["cpu_s"],
               peak_rss_mib=figures["maxrss_kib"] / 1024, stdout=done.stdout)


def written_by_server(path: Path, complete: Callable[[str], bool], what: str,
                      timeout_s: float = 60.0) -> str:
    """Return ``path``'s text once ``complete`` holds for it: a file a server writes on a signal.

    The benchmark only asked for it, so it polls; ``complete`` recognises the
    whole file (its last line), never a half-written one.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            text = path.read_text(errors="replace")
            if complete(text):
                return text
        time.sleep(0.2)
    raise RuntimeError(f"{what} was not written within {timeout_s:.0f} s")


def with_bytecode_cache(env: Mapping[str, str], directory: Path) -> dict[str, str]:
    """Return ``env`` with Python's bytecode cache on, kept under ``directory``.

    An installed package has its ``.pyc`` files (pip compiles them); a process run with
    ``PYTHONDONTWRITEBYTECODE`` (as this machine's shells are) compiles every module of
    ours from source at each start, about 0.4 s of a CLI command here. The first run
    fills the cache, so measure after a warm-up run.
    """
    out = {k: v for k, v in env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    out["PYTHONPYCACHEPREFIX"] = str(directory)
    return out


#: The user + system CPU seconds process ``pid`` (all its threads) has used so far.
cpu_s = process_cpu_s


def vm_hwm_mib(pid: int) -> float:
    """Return the peak resident memory (VmHWM) of process ``pid`` in MiB, NaN if unknown."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def listening_port(child: subprocess.Popen[str]) -> int:
    """Return the port a reference server printed on its first line ("NAME: PORT")."""
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line:
        raise RuntimeError(f"a reference server exited before listening ({child.args!r})")
    return int(line.split()[-1])
