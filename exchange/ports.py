"""A loopback port for a server that must be told its port before it listens.

Why not the kernel's pick (bind to port 0, read the port, close, hand it on):
that port comes from the ephemeral range, the same range every outgoing
connection takes its local port from, so between the pick and the server's
bind another process's connection may take it ("address already in use"; it
happened in CI). Ports below the range are never handed out that way. Where
the server itself can bind port 0 and report what it got, prefer that.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["unused_port"]

#: Where :func:`unused_port` looks when the kernel's range cannot be read (Linux's default).
_EPHEMERAL_FALLBACK = (32768, 60999)
#: The lowest port handed out: above the well-known and most registered services' ports.
LOWEST_PORT = 20000


def ephemeral_range() -> tuple[int, int]:
    """Return the kernel's range for outgoing connections' local ports (inclusive)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _EPHEMERAL_FALLBACK


def unused_port() -> int:
    """Return a loopback TCP port below the ephemeral range that is free now."""
    low, _ = ephemeral_range()
    candidates = list(range(LOWEST_PORT, max(LOWEST_PORT + 1, low)))
    random.shuffle(candidates)
    for port in candidates[:200]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port between {LOWEST_PORT} and {low}")
