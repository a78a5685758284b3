"""Slow and stalled clients (slowloris) cannot exhaust the server.

With short configured timeouts (``idle_timeout_s`` and ``body_timeout_s`` of
:data:`TIMEOUT_S`): a crowd of connections that trickle their request head a
few bytes at a time is closed by the server once the idle timeout passes,
while well-behaved clients are served promptly the whole time; a signed PATCH
whose body stalls is abandoned (offset unchanged, denied entry, the upload
usable again); a stalled JSON body is refused with 408; and a participant
whose stalled uploads fill its quota gets 429 for more while another
participant still uploads.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from exchange.wire.httpsig import content_digest
from exchange.wire.tus import PATCH_CONTENT_TYPE
from tests.faults._tools import (
    TUS,
    check_acked_entries,
    deployment_with,
    new_case,
    patch,
    problem_slug,
)
from tests.server_harness import Deployment, expect_problem, run

TIMEOUT_S = 2
LIMITS = {"idle_timeout_s": TIMEOUT_S, "body_timeout_s": TIMEOUT_S, "max_concurrent_uploads": 2}
#: Trickling connections held open at once (each one a socket and a parser on the server).
CROWD = 150
#: A request of a well-behaved client must be answered within this long meanwhile.
PROMPT_S = 1.0


async def trickle_head(url: str, closed: list[float], started: float) -> None:
    """Send a request head a few bytes at a time, forever; note when the server hangs up."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(f"GET /v1/health HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
        for n in range(1000):
            await asyncio.sleep(0.25)
            if reader.at_eof():
                break
            writer.write(f"X-Slow-{n}: 1\r\n".encode())
            await writer.drain()
        await asyncio.wait_for(reader.read(), 1)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        closed.append(time.monotonic() - started)
        writer.close()


async def stalled_body(data: bytes, stall_s: float) -> AsyncIterator[bytes]:
    yield data[:10]
    await asyncio.sleep(stall_s)
    yield data[10:]


async def slowloris(d: Deployment) -> None:
    started = time.monotonic()
    closed: list[float] = []
    crowd = [asyncio.create_task(trickle_head(d.url, closed, started)) for _ in range(CROWD)]
    await asyncio.sleep(0.3)
    async with d.session("prosecutor") as pro, d.session("prosecutor2") as pro2, \
            d.session("admin") as admin:
        # Well-behaved clients keep being served while the crowd trickles.
        latencies = []
        for _ in range(12):
            t0 = time.monotonic()
            response = await pro.request("GET", "/v1/cases")
            assert response.status == 200
            response.release()
            latencies.append(time.monotonic() - t0)
            await asyncio.sleep(0.2)
        assert max(latencies) < PROMPT_S, latencies

        # Every trickling connection was cut off by the server near the idle timeout.
        await asyncio.wait_for(asyncio.gather(*crowd), TIMEOUT_S + 10)
        assert len(closed) == CROWD
        assert max(closed) < TIMEOUT_S + 3, max(closed)

        # A PATCH body that stalls is abandoned; nothing of it stays; the upload works after.
        case_id, _ = await new_case(d, pro)
        data = bytes(range(256)) * 40
        handle = await pro.create_upload(case_id, len(data))
        headers = {**TUS, "Upload-Offset": "0", "Content-Type": PATCH_CONTENT_TYPE,
                   "Content-Length": str(len(data))}
        t0 = time.monotonic()
        try:
            response = await pro.request("PATCH", handle.path, headers=headers,
                                         data=stalled_body(data, TIMEOUT_S + 6),
                                         digest=content_digest(data))
            async with response:
                assert response.status == 400, response.status
                assert problem_slug(await response.json()) == "upload-interrupted"
        except (TimeoutError, ConnectionError, OSError) as err:  # cut off: also fine
            assert "Connection" in type(err).__name__ or isinstance(err, OSError)
        assert time.monotonic() - t0 < TIMEOUT_S + 5
        assert await pro.upload_offset(handle.path) == 0
        response = await patch(pro, handle.path, 0, data)
        assert response.status == 204, await response.text()
        response.release()

        # A stalled JSON body: 408, logged.
        body = json.dumps({"bundle": {}, "role": "auditor"}).encode()
        response = await admin.request(
            "POST", "/v1/participants", data=stalled_body(body, TIMEOUT_S + 6),
            digest=content_digest(body),
            headers={"Content-Type": "application/json", "Content-Length": str(len(body))})
        index = await expect_problem(response, 408, "body-timeout")

        # Stalled uploads fill the participant's quota (2): more is 429; others still upload.
        await pro.request("DELETE", handle.path, headers=TUS)
        held = [await pro.create_upload(case_id, 100) for _ in range(2)]
        await expect_problem(await pro.request(
            "POST", f"/v1/cases/{case_id}/uploads", headers={**TUS, "Upload-Length": "5"}),
            429, "too-many-uploads")
        other_case, _ = await new_case(d, pro2, owner="prosecutor2")
        other = await pro2.create_upload(other_case, 3)
        response = await patch(pro2, other.path, 0, b"abc")
        assert response.status == 204
        response.release()
        assert len(held) == 2
    entries = await check_acked_entries(d, [])
    assert b'"reason":"body-timeout"' in entries[index]


def test_slow_clients_cannot_exhaust_the_server(tmp_path: Path) -> None:
    with deployment_with(tmp_path, "sqlite", limits=LIMITS) as d:
        run(slowloris(d))
        assert d.processes[0].proc.poll() is None
