"""PostgreSQL stops and starts again under load; the server stays up and recovers by itself.

A private cluster (never the session's shared one) is stopped with ``pg_ctl
stop -m fast`` while clients upload, commit and list. While it is down every
answer is either a success that was already on its way or 503
``service-unavailable`` problem+json with ``Retry-After`` (never a 500, never
a dropped connection), and ``/v1/ready`` says 503 too. Once PostgreSQL is
back, the same server process answers again without a restart; every
acknowledged commit downloads with its hash, every acknowledged entry is in
the log, and the log verifies offline.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from exchange.transport.client import SignedSession
from tests.faults._tools import (
    TUS,
    Acked,
    AckLog,
    b64,
    case_head,
    check_acked_entries,
    deployment_with,
    new_case,
    patch,
    private_cluster,
    problem_slug,
    sha256_hex,
)
from tests.server_harness import Deployment, run

KIB = 1024
#: How long each phase of the load lasts (before, during and after the outage).
PHASE_S = 1.5
RECOVERY_TIMEOUT_S = 30.0
SCENARIO_TIMEOUT_S = 120.0


@dataclass
class Load:
    """What the clients saw."""

    acks: AckLog = field(default_factory=AckLog)
    evidence: dict[str, str] = field(default_factory=dict)
    statuses: dict[int, int] = field(default_factory=dict)
    unavailable: int = 0
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def outcome(self, response: aiohttp.ClientResponse, ok: int) -> Any:
        """Return the JSON body of a success, None after a well-formed 503; fail otherwise."""
        async with response:
            self.statuses[response.status] = self.statuses.get(response.status, 0) + 1
            if response.status == 503:
                assert response.headers["Retry-After"].isdigit()
                assert response.content_type == "application/problem+json"
                assert problem_slug(await response.json()) == "service-unavailable"
                self.unavailable += 1
                await asyncio.sleep(0.1)  # a real client waits Retry-After; the test is brisk
                return None
            text = await response.text()
            assert response.status == ok, (response.status, text[:300])
            return await response.json() if text else {}


async def lister(load: Load, session: SignedSession, path: str, action: str) -> None:
    while not load.stop.is_set():
        response = await session.request("GET", path)
        index = response.headers.get("Exchange-Audit-Index")
        if await load.outcome(response, 200) is not None:
            load.acks.items.append(Acked(int(index or -1), action, session.keyid))
        await asyncio.sleep(0.02)


async def uploader(load: Load, session: SignedSession, case_id: str, head: str,
                   seed: int) -> None:
    """Create, send and commit small uploads, retrying every step that met a 503."""
    rng = random.Random(seed)
    while not load.stop.is_set():
        data = rng.randbytes(rng.randint(1, 200 * KIB))
        path = None
        while path is None:
            response = await session.request(
                "POST", f"/v1/cases/{case_id}/uploads",
                headers={**TUS, "Upload-Length": str(len(data))})
            if await load.outcome(response, 201) is not None:
                path = response.headers["Location"]
                load.acks.add(response, "upload.create", session.keyid)
        offset = 0
        while offset < len(data):
            response = await patch(session, path, offset, data[offset:])
            if await load.outcome(response, 204) is None:
                offset = await _offset(load, session, path)
                continue
            load.acks.add(response, "upload.append", session.keyid)
            offset = len(data)
        record = None
        while record is None:
            response = await session.request("POST", path + "/commit", json={
                "sealed_manifest": b64(b"m"), "ciphertext_sha256": sha256_hex(data),
                "epoch": 1, "case_head": head})
            record = await load.outcome(response, 201)
        load.evidence[record["evidence_id"]] = sha256_hex(data)
        load.acks.items.append(Acked(record["audit_index"], "evidence.commit", session.keyid))


async def _offset(load: Load, session: SignedSession, path: str) -> int:
    while True:
        response = await session.request("HEAD", path, headers=TUS)
        async with response:
            load.statuses[response.status] = load.statuses.get(response.status, 0) + 1
            if response.status == 200:
                return int(response.headers["Upload-Offset"])
            assert response.status == 503, response.status
            assert response.headers["Retry-After"].isdigit()
        await asyncio.sleep(0.1)


async def health(d: Deployment) -> int:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as http, \
            http.get(d.url + "/v1/ready") as response:
        if response.status == 503:
            assert response.headers["Retry-After"].isdigit()
        return response.status


async def outage(d: Deployment, cluster: Any) -> Load:
    load = Load()
    async with d.session("prosecutor") as pro, d.session("coordinator") as coord, \
            d.session("admin") as admin:
        case_id, _ = await new_case(d, pro, "coordinator")
        head = await case_head(d, pro, case_id)
        clients = [
            asyncio.create_task(uploader(load, pro, case_id, head, 1)),
            asyncio.create_task(uploader(load, coord, case_id, head, 2)),
            asyncio.create_task(lister(load, coord, "/v1/cases", "case.list")),
            asyncio.create_task(lister(load, admin, "/v1/participants", "participant.list")),
        ]
        try:
            await asyncio.sleep(PHASE_S)
            before = len(load.acks.items)
            assert before > 0 and load.unavailable == 0
            await asyncio.to_thread(cluster.stop_server, "fast")
            await asyncio.sleep(PHASE_S)
            assert await health(d) == 503
            await asyncio.to_thread(cluster.start_server)
            deadline = time.monotonic() + RECOVERY_TIMEOUT_S
            while await health(d) != 200:
                assert time.monotonic() < deadline, "the server did not recover"
                await asyncio.sleep(0.2)
            recovered = len(load.acks.items)
            await asyncio.sleep(PHASE_S)
            assert len(load.acks.items) > recovered, "no request succeeded after recovery"
        finally:
            load.stop.set()
            results = await asyncio.gather(*clients, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        for eid, sha in load.evidence.items():
            async with await coord.open_download(eid) as download:
                assert sha256_hex(await download.read()) == sha
    return load


def test_postgres_restart_under_load(tmp_path: Path) -> None:
    with private_cluster() as cluster:
        dsn = run(cluster.new_database())
        with deployment_with(tmp_path, "postgres", database_url=dsn) as d:
            server = d.processes[0].proc
            try:
                load = run(asyncio.wait_for(outage(d, cluster), SCENARIO_TIMEOUT_S))
            except BaseException:
                # Show what the server logged about its failures, to diagnose the run.
                errors = [line for line in d.processes[0].lines
                          if '"error"' in line or "Traceback" in line]
                print("".join(errors[-20:]))
                raise
            assert server.poll() is None, "the server process died"
            assert load.unavailable > 0, load.statuses
            assert set(load.statuses) <= {200, 201, 204, 503}, load.statuses
            assert load.evidence
            run(check_acked_entries(d, load.acks.items))
