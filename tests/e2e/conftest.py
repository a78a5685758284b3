"""Fixtures of the client end-to-end tests: a real server and the CLI as a user runs it.

``world`` (module scope) is a SQLite deployment from ``tests.server_harness``
with keystores (cheap Argon2) for the cast, and a ``cli(name, *args)``
runner that starts ``python -m exchange`` with that participant's
``EXCHANGE_*`` environment and its own state directory.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_harness import Deployment, deployed, write_test_keystore

PASSPHRASE = "e2e-passphrase-not-secret"
CLI_TIMEOUT_S = 120


@dataclass
class World:
    """A running server, the cast's keystores, and per-participant CLI environments."""

    deployment: Deployment
    base: Path

    def env(self, name: str) -> dict[str, str]:
        """Return the environment of participant ``name``'s CLI (its own HOME and state)."""
        home = self.base / "home" / name
        home.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
        env.update({
            "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_STATE_HOME": str(home / ".state"),
            "EXCHANGE_URL": self.deployment.url,
            "EXCHANGE_KEYSTORE": str(self.base / "keys" / f"{name}.keystore"),
            "EXCHANGE_PASSPHRASE": PASSPHRASE,
            "EXCHANGE_TRUST": str(self.deployment.trust_file),
            "EXCHANGE_TEST_WEAK_KDF": "1",  # the cast's keystores use cheap Argon2 parameters
        })
        return env

    def state_dir(self, name: str) -> Path:
        """Return the XDG state root of ``name``'s CLI."""
        return self.base / "home" / name / ".state" / "exchange"

    def cli(self, name: str, *args: str, check: bool = True, timeout_s: float = CLI_TIMEOUT_S,
            unset: tuple[str, ...] = (),
            extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run ``exchange ARGS`` as participant ``name``; assert success when ``check``.

        ``unset`` names environment variables to leave out.
        """
        env = {k: v for k, v in self.env(name).items() if k not in unset}
        env.update(extra_env or {})
        done = subprocess.run([sys.executable, "-m", "exchange", *args], env=env,
                              capture_output=True, text=True, timeout=timeout_s, check=False)
        if check:
            assert done.returncode == 0, f"exchange {' '.join(args)} -> {done.returncode}\n" \
                                         f"{done.stdout}\n{done.stderr}"
        return done

    def popen(self, name: str, *args: str) -> subprocess.Popen[str]:
        """Start ``exchange ARGS`` as ``name`` in the background (stderr piped)."""
        return subprocess.Popen([sys.executable, "-m", "exchange", *args], env=self.env(name),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


class Background:
    """A CLI running in the background whose stderr lines are collected by a thread."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    @property
    def text(self) -> str:
        """Everything it printed on stderr so far."""
        return "".join(self.lines)

    def wait_for(self, words: str, timeout_s: float) -> bool:
        """Whether a line holding ``words`` appears within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not any(words in line for line in self.lines):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True

    def stop(self, signum: int) -> int:
        """Send ``signum``; return the exit status once its output is read."""
        self.process.send_signal(signum)
        code = self.process.wait(30)
        self._reader.join(5)
        return code


@contextlib.contextmanager
def running_world(base: Path, backend: str) -> Iterator[World]:
    """A running server on ``backend`` with the standard cast and their keystores."""
    with deployed(base, backend) as deployment:
        keys = base / "keys"
        keys.mkdir()
        for name, identity in deployment.cast.items():
            write_test_keystore(keys / f"{name}.keystore", identity, PASSPHRASE)
        yield World(deployment=deployment, base=base)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A running SQLite server with the standard cast and their keystores."""
    with running_world(tmp_path_factory.mktemp("e2e"), "sqlite") as found:
        yield found


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def both(request: pytest.FixtureRequest,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The same world once per database (SQLite, then PostgreSQL)."""
    base = tmp_path_factory.mktemp(f"e2e-{request.param}")
    with running_world(base, request.param) as found:
        yield found


def new_case(world: World, title: str, *members: str) -> str:
    """Create a case as ``prosecutor`` with ``members`` added; return its id."""
    case_id = world.cli("prosecutor", "case", "create", "--title", title).stdout.strip()
    for member in members:
        world.cli("prosecutor", "case", "add-member", case_id, member)
    return case_id
