"""``exchange demo --ui`` reopens the demo world in the interface, on the same server URL:
an auditor unlocked there verifies the whole log without a finding."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.parse

import pytest

from exchange.demo import DEMO_PASSPHRASE
from exchange.demo_server import child_environment
from tests.ui.conftest import request

pytestmark = pytest.mark.timeout(300)
AUDITOR_INDEX = 2  # the unlock page lists NL, CC, the auditor, the administrator, DE


class _Ui:
    def __init__(self, launch: str) -> None:
        self.launch = launch
        self.port = int(urllib.parse.urlsplit(launch).port or 0)


def test_demo_opens_its_world_in_the_ui() -> None:
    proc = subprocess.Popen([sys.executable, "-m", "exchange", "demo", "--ui", "--no-browser"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=child_environment())
    try:
        assert proc.stdout is not None
        launch = ""
        for line in proc.stdout:
            if line.startswith("http://127.0.0.1:") and "/?t=" in line:
                launch = line.strip()
                break
        assert launch, "the demo did not print the interface's address"
        ui = _Ui(launch)
        own = f"http://127.0.0.1:{ui.port}"
        secret = urllib.parse.parse_qs(urllib.parse.urlsplit(launch).query)["t"][0]
        jar = (request(ui, "GET", "/?t=" + secret).getheader("Set-Cookie") or "").split(";")[0]
        page = request(ui, "GET", "/", headers={"Cookie": jar})
        assert page.status == 200
        form = f"keystore={AUDITOR_INDEX}&passphrase={urllib.parse.quote(DEMO_PASSPHRASE)}"
        assert request(ui, "POST", "/unlock", headers={"Cookie": jar, "Origin": own},
                       body=form).getheader("Location") == "/"
        assert request(ui, "GET", "/", headers={"Cookie": jar}).getheader("Location") == \
            "/audit"
        started = request(ui, "POST", "/audit/verify", headers={"Cookie": jar, "Origin": own},
                          body="")
        assert started.status == 200
        job: dict[str, object] = {"state": "running"}
        deadline = time.monotonic() + 60
        while job["state"] == "running" and time.monotonic() < deadline:
            time.sleep(0.3)
            job = json.loads(request(ui, "GET", "/jobs/job-1", headers={"Cookie": jar}).data)
        assert job["state"] == "done", json.dumps(job)[:2000]
        assert "no errors were found" in str(job["message"])
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
