"""Where the CPU went during the load window: each core's busy and I/O-wait share, each side's use.

A latency target needs to know whether the machine was the limit. Two
snapshots (``/proc/stat`` per core, ``/proc/PID/stat`` per process) taken at
the start and end of the load give, over the window: each core's busy share
(user, system, interrupts) and I/O-wait share, and how many cores' worth of
CPU the servers, the database and this (clients') process used. With
``--pin`` the servers and the database share one core, so its figures say
how near that core was to saturation while the tail formed.

The database's CPU is its postmaster's (including the backends that exited
in the window, which the kernel adds to their parent) plus its live
backends': a backend that exited in the window counts with its whole life,
so that figure is an upper bound.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

_TICK = os.sysconf("SC_CLK_TCK")
# /proc/stat cpu columns: user nice system idle iowait irq softirq steal ...
_IDLE, _IOWAIT = 3, 4


@dataclass(frozen=True)
class CpuSnapshot:
    """Per-core tick counters and each side's CPU seconds at one moment."""

    cores: dict[int, tuple[int, ...]]
    sides: dict[str, float]


def _core_ticks() -> dict[int, tuple[int, ...]]:
    cores: dict[int, tuple[int, ...]] = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit():
            cores[int(name[3:])] = tuple(int(v) for v in rest.split()[:8])
    return cores


def _stat_fields(pid: int) -> list[str]:
    """Return the fields of ``/proc/PID/stat`` after the command name; OSError if gone."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def process_cpu_s(pid: int, *, reaped_children: bool = False) -> float:
    """Return the CPU seconds ``pid`` (all its threads) used so far, with its reaped
    children's if asked; ``OSError`` if the process is gone.

    The one reader of a process's CPU time: ``bench/measure.py`` uses it too.
    """
    fields = _stat_fields(pid)
    # After ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / _TICK


def _cpu_s_if_alive(pid: int, *, reaped_children: bool = False) -> float:
    try:
        return process_cpu_s(pid, reaped_children=reaped_children)
    except OSError:
        return 0.0  # it ended between the listing and the read


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = _stat_fields(int(entry))
            except (OSError, IndexError):
                continue
            if int(fields[1]) == parent:
                found.append(int(entry))
    return found


def postmaster_pid(dsn: str | None) -> int | None:
    """Return the PID of the PostgreSQL cluster behind a Unix-socket ``dsn``; None if unknown.

    The socket directory of the test clusters (``host=`` in the DSN) is their
    base directory, which holds ``data/postmaster.pid``.
    """
    if not dsn:
        return None
    hosts = parse_qs(urlsplit(dsn).query).get("host") or []
    for host in hosts:
        pid_file = Path(host) / "data" / "postmaster.pid"
        try:
            return int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return None


def snapshot(servers: Iterable[int], database: int | None) -> CpuSnapshot:
    """Take the counters now: the servers' PIDs, the postmaster's (None: no database side)."""
    sides = {
        "servers": sum(_cpu_s_if_alive(pid) for pid in servers),
        "clients": process_cpu_s(os.getpid()),
    }
    if database is not None:
        sides["database"] = _cpu_s_if_alive(database, reaped_children=True) + sum(
            _cpu_s_if_alive(child) for child in _children(database))
    return CpuSnapshot(cores=_core_ticks(), sides=sides)


@dataclass(frozen=True)
class CpuUse:
    """The window's figures (percentages of each core's time; cores' worth per side)."""

    core_busy_pct: dict[str, float]
    core_iowait_pct: dict[str, float]
    side_cores: dict[str, float]


def use(before: CpuSnapshot, after: CpuSnapshot, window_s: float) -> CpuUse:
    """Return what happened between two snapshots ``window_s`` seconds apart."""
    busy: dict[str, float] = {}
    iowait: dict[str, float] = {}
    for core, ticks in sorted(after.cores.items()):
        start = before.cores.get(core)
        if start is None:
            continue
        delta = [b - a for a, b in zip(start, ticks, strict=True)]
        total = sum(delta)
        if total <= 0:
            continue
        busy[str(core)] = round(100 * (total - delta[_IDLE] - delta[_IOWAIT]) / total, 1)
        iowait[str(core)] = round(100 * delta[_IOWAIT] / total, 1)
    sides = {name: round(max(0.0, after.sides[name] - before.sides.get(name, 0.0)) / window_s, 2)
             for name in after.sides} if window_s > 0 else {}
    return CpuUse(core_busy_pct=busy, core_iowait_pct=iowait, side_cores=sides)


def no_use() -> CpuUse:
    """The figures of a run that never reached its load window."""
    return CpuUse(core_busy_pct={}, core_iowait_pct={}, side_cores={})


__all__ = ["CpuSnapshot", "CpuUse", "no_use", "postmaster_pid", "process_cpu_s", "snapshot",
           "use"]
