"""A throwaway local server for ``exchange demo``: ``server init`` + ``serve`` subprocesses.

The demo runs the real commands a deployment runs (server design, "Server
start"), so what a newcomer sees is what an administrator gets: ``exchange
server init`` on the embedded SQLite default, then ``exchange serve`` on
127.0.0.1 port 0, whose ``exchange: serving on URL`` line on stderr says
where it listens. Both children get none of the caller's ``EXCHANGE_*``
variables (a set ``EXCHANGE_DATABASE_URL`` must not send the demo to a real
database). :meth:`LocalServer.stop` sends SIGTERM (the server drains and
closes its store) and is safe to call more than once, from ``finally``. The
server runs in its own session, so a terminal's Ctrl-C reaches only the demo,
which then stops the server in order instead of racing its shutdown.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path
from types import TracebackType

from exchange.errors import ExchangeError

__all__ = ["DemoServerError", "LocalServer", "child_environment"]

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
#: Server log lines kept for the demo's own use and for error reports (bounded memory).
KEPT_LINES = 2000
_READY_PREFIX = "exchange: serving on "
_PACKAGE_ROOT = Path(__file__).resolve().parents[1]
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class DemoServerError(ExchangeError):
    """The demo's server could not be created or started; ``log`` holds its last lines."""

    problem_type = "demo-server"

    def __init__(self, message: str, log: list[str] | None = None) -> None:
        super().__init__(message)
        self.log = log or []


def child_environment() -> dict[str, str]:
    """Return the environment for ``python -m exchange`` children: no ``EXCHANGE_*``.

    The package's own parent directory is put first on ``PYTHONPATH`` so the
    children run this very code, installed or not.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM when the demo dies, even by SIGKILL (Linux).

    Without it a killed demo would leave its server running in a new session.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class LocalServer:
    """One exchange server in ``data_dir`` on the loopback interface, run as subprocesses."""

    #: The stderr line that says the process listens (the URL follows).
    ready_prefix = _READY_PREFIX

    def __init__(self, data_dir: Path, *, origin: str, admin_bundle: Path,
                 organisation: str = "", country: str = "") -> None:
        self.data_dir = data_dir
        self.origin = origin
        self.admin_bundle = admin_bundle
        self.organisation = organisation
        self.country = country
        self.url = ""
        self.proc: subprocess.Popen[str] | None = None
        self._lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"LocalServer(data_dir={str(self.data_dir)!r}, url={self.url!r})"

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @staticmethod
    def _argv(*args: str) -> list[str]:
        return [sys.executable, "-m", "exchange", *args]

    def init(self) -> str:
        """Run ``exchange server init``; return the log's verifier key it prints."""
        done = subprocess.run(
            self._argv("server", "init", "--data-dir", str(self.data_dir), "--origin",
                       self.origin, "--admin", str(self.admin_bundle), "--organisation",
                       self.organisation, "--country", self.country),
            capture_output=True, text=True, env=child_environment(), timeout=START_TIMEOUT_S,
            check=False, stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise DemoServerError(f"'exchange server init' failed with exit status "
                                  f"{done.returncode}", done.stderr.splitlines()[-20:])
        return done.stdout.strip()

    def start(self, *extra_args: str, port: int = 0) -> None:
        """Start ``exchange serve`` on 127.0.0.1, ``port`` or any free one (returns at once)."""
        self.spawn(self._argv("serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                              "--port", str(port), *extra_args))

    def spawn(self, argv: list[str]) -> None:
        """Start ``argv`` as this server's process; its ready line sets :attr:`url`."""
        self.url = ""
        self._ready = threading.Event()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, env=child_environment(), start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None)  # noqa: PLW1509
        self._reader = threading.Thread(target=self._drain, name="exchange-demo-server-log",
                                        daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self._lines.append(line.rstrip("\n"))
            if line.startswith(self.ready_prefix) and not self.url:
                # "serving on PUBLIC_URL [(listening on URL)]": connect where it listens.
                self.url = line.split()[-1].rstrip(")")
                self._ready.set()
        self._ready.set()  # the server exited: wake up wait_ready

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> str:
        """Return the server's URL once it serves; raise :class:`DemoServerError` otherwise."""
        if not self._ready.wait(timeout_s) or not self.url:
            self.stop()
            raise DemoServerError("'exchange serve' did not start", self.log_tail())
        return self.url

    @property
    def pid(self) -> int | None:
        """The server process id (None before :meth:`start`)."""
        return None if self.proc is None else self.proc.pid

    def running(self) -> bool:
        """Whether the server process is alive."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> list[str]:
        """Return the last ``n`` lines the server wrote on stderr."""
        return list(self._lines)[-n:]

    def log_records(self) -> list[dict[str, object]]:
        """Return the server's structured (JSON) log lines decoded, in order."""
        records = []
        for line in list(self._lines):
            if line.startswith("{"):
                try:
                    value = json.loads(line)
                except ValueError:
                    continue
                if isinstance(value, dict):
                    records.append(value)
        return records

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM the server and wait for it (SIGKILL after ``timeout_s``); return its status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Not started when Ctrl-C arrived between starting the process and its reader.
        if self._reader is not None and self._reader.ident is not None:
            self._reader.join(5)
        return proc.returncode
