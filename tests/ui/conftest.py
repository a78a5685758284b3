"""Fixtures for the local UI's tests: a real server, real ``exchange ui`` processes, Chromium.

Chromium is Debian's (``apt-get install chromium``; Playwright cannot fetch
its own browser here). Without it the browser tests skip locally and fail in
CI, where ``.ci/run`` sets ``EXCHANGE_REQUIRE_BROWSER=1``. Screenshots go to
``tests/artefacts/ui/`` (git-ignored) or ``$EXCHANGE_UI_ARTEFACTS``.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from exchange.crypto.anchor import TrustAnchor, parse_anchor
from exchange.demo import DEMO_PASSPHRASE
from exchange.demo_server import LocalServer, child_environment
from tests.support import ROOT, skip_or_fail

KEYS = ROOT / "exchange" / "demo_keys"
CHROMIUM = Path(os.environ.get("EXCHANGE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTEFACTS = Path(os.environ.get("EXCHANGE_UI_ARTEFACTS", ROOT / "tests" / "artefacts" / "ui"))
PASSPHRASE = DEMO_PASSPHRASE
START_TIMEOUT_S = 30.0


@dataclass
class World:
    """A running exchange server whose first administrator is the demo's admin-01."""

    url: str
    log_key: str
    base: Path
    trust: Path

    @property
    def anchor(self) -> TrustAnchor:
        """The trust anchor every participant pins."""
        return parse_anchor(self.trust.read_bytes())


class UiProcess:
    """One ``exchange ui --no-browser`` subprocess; ``launch`` is the URL with the secret."""

    def __init__(self, world: World, name: str, keystores: list[str], *,
                 idle_lock_min: float = 15.0) -> None:
        self.state_dir = world.base / "ui" / name
        self.pull_dir = world.base / "pulled" / name
        argv = [sys.executable, "-m", "exchange", "ui", "--no-browser", "--url", world.url,
                "--trust", str(world.trust), "--state-dir", str(self.state_dir),
                "--pull-dir", str(self.pull_dir), "--idle-lock-min", str(idle_lock_min)]
        for keystore in keystores:
            argv += ["--keystore", str(KEYS / f"{keystore}.keystore")]
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env=child_environment())
        self.errors: deque[str] = deque(maxlen=200)
        threading.Thread(target=self._drain, daemon=True).start()
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http://127.0.0.1:"):
            self.stop()
            raise RuntimeError(f"exchange ui did not start: {line!r} {list(self.errors)}")
        self.launch = line
        self.base = line.split("/?", 1)[0]
        self.port = int(self.base.rsplit(":", 1)[1])

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.errors.append(line.rstrip("\n"))

    def terminate(self) -> None:
        """Ask the process to stop (SIGTERM) without waiting."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> int:
        """SIGTERM the process and wait for it."""
        self.terminate()
        if self.proc.returncode is None:
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def request(ui: Any, method: str, path: str, *, host: str | None = None,
            headers: dict[str, str] | None = None,
            body: str | None = None) -> http.client.HTTPResponse:
    """Send one raw request to the UI on ``ui.port`` (any Host header); the body is read."""
    connection = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=30)
    connection.putrequest(method, path, skip_host=True)
    connection.putheader("Host", host or f"127.0.0.1:{ui.port}")
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    data = body.encode() if body is not None else None
    if data is not None:
        connection.putheader("Content-Type", "application/x-www-form-urlencoded")
        connection.putheader("Content-Length", str(len(data)))
    connection.endheaders(data)
    response = connection.getresponse()
    response.data = response.read()  # type: ignore[attr-defined]
    return response


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A fresh server (embedded SQLite, 127.0.0.1, any port) with admin-01 as administrator."""
    base = tmp_path_factory.mktemp("ui-world")
    server = LocalServer(base / "server", origin="ui.test/log",
                         admin_bundle=KEYS / "admin-01.bundle.json",
                         organisation="Registry", country="EU")
    log_key = server.init()
    server.start()
    try:
        yield World(url=server.wait_ready(), log_key=log_key, base=base,
                    trust=server.data_dir / "trust.json")
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium driven by Playwright (skip locally, fail in CI when missing)."""
    if not CHROMIUM.exists():
        skip_or_fail("BROWSER", f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def artefacts() -> Path:
    """The folder for screenshots (kept after the run)."""
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    return ARTEFACTS
