"""The demo's server stops cleanly even when Ctrl-C cut its start short (seen in CI)."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import pytest

from exchange.demo_server import LocalServer


def test_stop_after_ctrl_c_between_the_process_and_its_log_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The process runs, its log reader never started: stop ends the process, raises nothing."""
    def interrupted(self: threading.Thread) -> None:
        raise KeyboardInterrupt  # the SIGINT arrives as the reader thread is being started

    server = LocalServer(tmp_path, origin="demo.example/log", admin_bundle=tmp_path / "admin")
    with monkeypatch.context() as patch:
        patch.setattr(threading.Thread, "start", interrupted)
        with pytest.raises(KeyboardInterrupt):
            server.spawn([sys.executable, "-c", "import time; time.sleep(60)"])
    assert server.running()
    assert server.stop(timeout_s=10) == -signal.SIGTERM
    assert not server.running()
