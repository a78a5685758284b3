"""A closed laptop mid-upload: the interface is killed while sending; after a restart,
dropping the same file again resumes the upload instead of starting over."""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import json
import os
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from exchange.client import Client, create_case, enrol, list_evidence
from exchange.crypto.keys import bundle_possession, parse_bundle
from exchange.demo import open_demo_keystore
from tests.ui.conftest import KEYS, PASSPHRASE, UiProcess, World, request

pytestmark = pytest.mark.timeout(240)
NL = "prosecutor-nl-01"
SIZE = 112 * 1024 * 1024 + 7  # several tus PATCHes: the first is 16 MiB


async def _case(world: World) -> str:
    admin_id, nl_id = open_demo_keystore(KEYS, "admin-01"), open_demo_keystore(KEYS, NL)
    async with Client(admin_id, world.url, anchor=world.anchor,
                      state_dir=world.base / "lib" / "admin") as admin:
        data = (KEYS / f"{NL}.bundle.json").read_bytes()
        await enrol(admin, parse_bundle(data), "prosecutor",
                    possession=bundle_possession(json.loads(data)), country="NL")
    async with Client(nl_id, world.url, anchor=world.anchor,
                      state_dir=world.base / "lib" / "nl") as nl:
        return (await create_case(nl, "Resume check")).case_id


def _unlock(ui: UiProcess) -> str:
    secret = urllib.parse.parse_qs(urllib.parse.urlsplit(ui.launch).query)["t"][0]
    jar = (request(ui, "GET", "/?t=" + secret).getheader("Set-Cookie") or "").split(";")[0]
    form = "keystore=0&passphrase=" + urllib.parse.quote(PASSPHRASE)
    assert request(ui, "POST", "/unlock", body=form, headers={
        "Cookie": jar, "Origin": f"http://127.0.0.1:{ui.port}"}).status == 303
    return jar


def _drop(ui: UiProcess, jar: str, case_id: str, path: Path) -> str:
    """Send the file as the page does; return its job id."""
    connection = http.client.HTTPConnection("127.0.0.1", ui.port, timeout=120)
    with path.open("rb") as body:
        connection.request("POST", f"/cases/{case_id}/files", body=body, headers={
            "Host": f"127.0.0.1:{ui.port}", "Cookie": jar,
            "Origin": f"http://127.0.0.1:{ui.port}", "Content-Length": str(SIZE),
            "X-Relative-Path": urllib.parse.quote("laptop/disk-image.bin"),
            "X-Last-Modified": "1764547200000", "Content-Type": "application/octet-stream"})
        answer = json.loads(connection.getresponse().read())
    return str(answer["job"])


def _job(ui: UiProcess, jar: str, job_id: str) -> dict[str, Any]:
    return dict(json.loads(request(ui, "GET", f"/jobs/{job_id}", headers={"Cookie": jar}).data))


def test_upload_resumes_after_the_interface_was_killed(world: World, tmp_path: Path) -> None:
    case_id = asyncio.run(_case(world))
    source = tmp_path / "disk-image.bin"
    with source.open("wb") as handle:
        for _ in range(SIZE // (1024 * 1024)):
            handle.write(os.urandom(1024 * 1024))
        handle.write(os.urandom(SIZE % (1024 * 1024)))
    first = UiProcess(world, "resume", [NL])
    try:
        jar = _unlock(first)
        job_id = _drop(first, jar, case_id, source)
        deadline = time.monotonic() + 120
        while _job(first, jar, job_id)["done"] <= 20 * 1024 * 1024:  # past the first PATCH
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.proc.send_signal(signal.SIGKILL)  # the lid closes: no clean shutdown
        first.proc.wait(20)
    finally:
        first.stop()
    again = UiProcess(world, "resume", [NL])
    try:
        jar = _unlock(again)
        job_id = _drop(again, jar, case_id, source)
        deadline = time.monotonic() + 120
        while (job := _job(again, jar, job_id))["state"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        again.stop()
    assert job["state"] == "done", job
    assert job["result"]["resumed_from"] >= 16 * 1024 * 1024, job
    assert "(resumed)" in job["message"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert job["result"]["plaintext_sha256"] == digest

    async def listed() -> list[Any]:
        async with Client(open_demo_keystore(KEYS, NL), world.url, anchor=world.anchor,
                          state_dir=world.base / "lib" / "nl") as nl:
            return await list_evidence(nl, case_id)

    evidence = asyncio.run(listed())
    assert [e.manifest.plaintext_sha256 for e in evidence] == [digest]  # once, not twice
