"""Progress under a real 80-column pseudo-terminal, and a visible retry when the server goes away.

The pull goes through a throttling TCP relay in front of the shared server;
the test cuts the relay mid-download, so the client must say it is retrying,
then reopens it so the pull completes. Everything the CLI writes to its
terminal is captured and checked: no redraw wider than 79 columns (so none
wraps into a new line), rate and time left visible, each bar ended by a
newline before the next message.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import re
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.e2e.conftest import PASSPHRASE, World
from tests.server_harness import deployed, write_test_keystore

COLUMNS = 80
RELAY_BYTES_PER_S = 3 * 1024 * 1024


class Relay:
    """A TCP relay to ``target`` that can be cut (connections dropped, port closed) and reopened."""

    def __init__(self, target: tuple[str, int] | None) -> None:
        self.target = target
        self.port = 0
        self.cut_event = threading.Event()
        self.conns: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.moved = 0
        self.open()

    def open(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]
        self.listener = listener
        self.cut_event.clear()
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        self.cut_event.set()
        if self.listener is not None:
            self.listener.close()
        for conn in self.conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()
        self.conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while not self.cut_event.is_set():
            try:
                client, _ = listener.accept()
            except OSError:
                return
            assert self.target is not None
            upstream = socket.create_connection(self.target)
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, False),
                             daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True),
                             daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttle: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(64 * 1024):
                dst.sendall(data)
                if throttle:
                    self.moved += len(data)
                    time.sleep(len(data) / RELAY_BYTES_PER_S)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _run_on_terminal(argv: list[str], env: dict[str, str],
                     on_output: Callable[[str], None]) -> tuple[int, str]:
    """Run ``argv`` with stderr on a pty of 80 columns; return its status and what it drew."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, COLUMNS, 0, 0))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=slave,
                            stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks: list[bytes] = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
        on_output(b"".join(chunks).decode("utf-8", "replace"))
    os.close(master)
    code = proc.wait(60)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.fixture(scope="module")
def relayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[World, Relay]]:
    """A server whose public URL is a relay in front of it (signatures name the relay)."""
    base = tmp_path_factory.mktemp("relayed")
    relay = Relay(None)
    with deployed(base, "sqlite",
                  extra_args=("--public-url", f"http://127.0.0.1:{relay.port}")) as deployment:
        parts = urlsplit(deployment.url)
        relay.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        keys = base / "keys"
        keys.mkdir()
        for name, identity in deployment.cast.items():
            write_test_keystore(keys / f"{name}.keystore", identity, PASSPHRASE)
        yield World(deployment=deployment, base=base), relay
        relay.cut()


def test_pull_progress_fits_80_columns_and_a_lost_server_is_announced(
    relayed: tuple[World, Relay], tmp_path: Path,
) -> None:
    world, relay = relayed
    relay_url = f"http://127.0.0.1:{relay.port}"
    source = tmp_path / "a rather long evidence file name from the seizure, disk 3.img"
    source.write_bytes(os.urandom(9 * 1024 * 1024))
    env = {**world.env("coordinator"), "EXCHANGE_URL": relay_url}
    env.pop("COLUMNS", None)  # the width must come from the terminal itself
    prosecutor = {**world.env("prosecutor"), "EXCHANGE_URL": relay_url}
    case_id = subprocess.run([sys.executable, "-m", "exchange", "case", "create", "--title",
                              "Operation Narrow Terminal"], env=prosecutor, text=True,
                             capture_output=True, check=True).stdout.strip()
    for args in (["case", "add-member", case_id, "coordinator"],
                 ["upload", case_id, str(source)]):
        subprocess.run([sys.executable, "-m", "exchange", *args], env=prosecutor,
                       capture_output=True, check=True)
    relay.moved = 0
    state = {"cut": False}

    def on_output(text: str) -> None:
        if not state["cut"] and relay.moved > 2 * 1024 * 1024 and "left" in text:
            state["cut"] = True
            relay.cut()
            threading.Timer(2.0, relay.open).start()

    dest = tmp_path / "dest"
    code, drawn = _run_on_terminal(
        [sys.executable, "-m", "exchange", "pull", case_id, "--dest", str(dest)], env,
        on_output)
    assert code == 0, drawn
    assert state["cut"], "the relay was never cut: " + drawn
    assert (dest / case_id / source.name).read_bytes() == source.read_bytes()

    assert re.search(r"exchange: warning: server \w+( \w+)* while downloading \S+, "
                     r"retrying in \d+ s \(attempt \d+ of \d+\)", drawn), drawn
    redraws = [segment.replace("\x1b[K", "") for line in drawn.split("\n")
               for segment in line.split("\r")]
    bars = [r for r in redraws if "/s" in r and "left" in r]
    assert len(bars) >= 3, drawn
    # Messages may wrap like any text; a redrawn line must not, or each redraw scrolls.
    assert all(len(bar) <= COLUMNS - 1 for bar in bars), max(bars, key=len)
    assert all(re.search(r"\d (B|KiB|MiB|GiB)/s \S+ left$", bar) for bar in bars), bars
    # Every message starts its own line: the bar was ended (or erased) first.
    for line in drawn.split("\n"):
        visible = line.split("\r")[-1].replace("\x1b[K", "")
        if "exchange:" in visible:
            assert visible.startswith("exchange:"), line
