"""The server framework over real HTTP: start-up, health, OpenAPI coverage, problem shape, log."""

from __future__ import annotations

import json

import aiohttp

from tests.server_harness import Deployment, run, verify_audit_log


def test_health_is_unsigned_and_ok(deployment: Deployment) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http, http.get(
            deployment.url + "/v1/health"
        ) as response:
            assert response.status == 200
            assert await response.json() == {"status": "ok"}

    run(scenario())


def test_enrolled_cast_is_in_a_verifying_log(deployment: Deployment) -> None:
    async def scenario() -> None:
        report, entries = await verify_audit_log(deployment)
        assert report.ok, [str(f) for f in report.findings]
        actions = [json.loads(e)["action"] for e in entries]
        assert actions[:2] == ["log.init", "participant.enrol"]
        assert actions.count("participant.enrol") == 6

    run(scenario())
