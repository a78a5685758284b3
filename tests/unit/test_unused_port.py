"""The helper that picks a port a server is told before it listens (exchange.ports)."""

from __future__ import annotations

import socket

from exchange.ports import LOWEST_PORT, ephemeral_range, unused_port


def test_the_port_is_free_and_below_the_range_outgoing_connections_use() -> None:
    port = unused_port()
    low, high = ephemeral_range()
    assert LOWEST_PORT <= port < low <= high
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # still free: nothing held it


def test_a_port_in_use_is_not_chosen() -> None:
    taken = []
    try:
        for _ in range(20):
            sock = socket.socket()
            port = unused_port()
            sock.bind(("127.0.0.1", port))
            sock.listen()
            taken.append(sock)
        assert len({s.getsockname()[1] for s in taken}) == len(taken)
    finally:
        for sock in taken:
            sock.close()
