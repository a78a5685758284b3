"""Run the ``exchange`` CLI as a subprocess, the way users and scripts do."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from tests.support import ROOT

Run = Callable[..., subprocess.CompletedProcess[bytes]]


@pytest.fixture
def run(tmp_path: Path) -> Run:
    """Return ``run(*args, input=b"", env={...})`` executing ``python -m exchange`` in tmp_path.

    The child gets no controlling terminal (new session) and none of the
    caller's EXCHANGE_* variables, so prompts and environment are explicit.
    """

    def _run(
        *args: str, input: bytes = b"", env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
        child_env["PYTHONPATH"] = str(ROOT)
        child_env.update(env or {})
        return subprocess.run(
            [sys.executable, "-m", "exchange", *args],
            input=input, capture_output=True, env=child_env, cwd=cwd or tmp_path,
            start_new_session=True, timeout=120, check=False,
        )

    return _run


def stderr_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


def only_file(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())
