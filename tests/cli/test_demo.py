"""The README's main-job command runs to completion."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_demo_runs_to_completion() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "exchange", "demo"], cwd=ROOT, capture_output=True, text=True,
        timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Done: evidence stayed encrypted end to end" in result.stdout
    assert "refused" in result.stdout and "payload chunk failed to authenticate" in result.stdout
