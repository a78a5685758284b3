"""The server framework over real HTTP: start-up, health, OpenAPI coverage, problem shape, log."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from exchange.config import ConfigError, ServerConfig, load_config, write_config_file
from exchange.crypto.keys import ParticipantIdentity
from exchange.service.core import Service
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.app import build_app, collect_routes
from exchange.transport.openapi import build_document
from exchange.transport.routing import ROUTES_KEY
from exchange.wire.httpsig import content_digest
from tests import statements
from tests.server_harness import Deployment, deployed, init_server, run, verify_audit_log


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


def test_openapi_document_covers_every_route(deployment: Deployment, tmp_path: Path) -> None:
    async def scenario() -> None:
        async with aiohttp.ClientSession() as http, http.get(
            deployment.url + "/v1/openapi.json"
        ) as response:
            assert response.status == 200
            served = await response.json()
        assert served["openapi"].startswith("3.1")
        assert served == json.loads(json.dumps(build_document(
            collect_routes(), server_url=deployment.url)))
        ids = [op["operationId"] for item in served["paths"].values() for op in item.values()]
        assert len(ids) == len(set(ids))  # every operation has its own id
        assert served["servers"] == [{"url": deployment.url, "description": served[
            "servers"][0]["description"]}]
        assert served["components"]["securitySchemes"]["httpSignature"]["type"] == "http"

        # Walk the router of an app built the way the server builds it.
        store = await SqliteStore.open(tmp_path)
        try:
            config = ServerConfig(data_dir=tmp_path, origin="walk.test/log")
            service = Service(store=store, blobs=FsBlobStore(tmp_path), config=config)
            app = build_app(service, base_url="http://127.0.0.1:1")
            walked = 0
            for route in app.router.routes():
                info = route.get_info()
                path = info.get("formatter") or info.get("path")
                assert path in served["paths"], path
                operation = served["paths"][path][route.method.lower()]
                assert "503" in operation["responses"]
                signed = app[ROUTES_KEY][(route.method, path)].signed
                assert bool(operation["security"]) == signed, path
                walked += 1
            documented = sum(len(item) for item in served["paths"].values())
            assert walked == documented >= 14
        finally:
            await store.close()

    run(scenario())


def test_server_init_refuses_an_existing_data_dir(deployment: Deployment) -> None:
    with pytest.raises(RuntimeError, match="exit status 1"):
        init_server(deployment.data_dir, ParticipantIdentity.generate("admin2"))


def test_config_layers_and_errors(tmp_path: Path) -> None:
    write_config_file(tmp_path, {"origin": "cfg.test/log", "port": 9000,
                                 "limits": {"max_json_bytes": 4096}})
    config = load_config(tmp_path, environ={"EXCHANGE_PORT": "9100",
                                            "EXCHANGE_PUBLIC_URL": "https://x.test"},
                         overrides={"port": 9200, "host": None})
    assert (config.port, config.host, config.limits.max_json_bytes) == (9200, "127.0.0.1", 4096)
    assert config.base_url() == "https://x.test"
    for bad, key in (
        ({"origin": "o", "port": "many"}, "port"),
        ({"origin": "o", "limits": {"clock_skew_s": 0}}, "limits.clock_skew_s"),
        ({"origin": "o", "public_url": "ftp://x"}, "public_url"),
        ({"origin": "o", "database_url": "mysql://x"}, "database_url"),
        ({"origin": "o", "colour": "blue"}, "colour"),
    ):
        (tmp_path / "server.json").write_text(json.dumps(bad))
        with pytest.raises(ConfigError, match=key):
            load_config(tmp_path, environ={})


def test_sigterm_drains_in_flight_requests(tmp_path: Path) -> None:
    with deployed(tmp_path, "sqlite") as d:
        proc = d.processes[0]
        newcomer = ParticipantIdentity.generate("late")

        async def in_flight() -> int:
            async with d.session("admin") as admin:
                state = await statements.server_state(admin, d.anchor)
            enrolment = statements.sign(
                state, kind="participant.enrol", chain="directory", issuer="admin",
                key=d.cast["admin"].signing_key, body={
                    "participant": newcomer.public_bundle().to_json_obj(),
                    "possession": statements.b64(newcomer.possession_proof()),
                    "role": "coordinator", "organisation": "", "country": ""})
            body = json.dumps({"statement": statements.b64(enrolment.encode())}).encode()
            started = asyncio.Event()

            async def slow_body() -> AsyncIterator[bytes]:
                yield body[:100]
                started.set()
                await asyncio.sleep(0.8)  # SIGTERM arrives while the body is still coming
                yield body[100:]

            async with d.session("admin") as admin:
                request = asyncio.create_task(admin.request(
                    "POST", "/v1/participants", data=slow_body(), digest=content_digest(body),
                    headers={"Content-Type": "application/json"}))
                await started.wait()
                await asyncio.sleep(0.2)  # let the server start handling it
                proc.proc.send_signal(signal.SIGTERM)
                response = await request
                async with response:
                    await response.read()
                    return response.status

        assert run(in_flight()) == 201
        assert proc.stop() == 0
        assert any('"draining_requests"' in line for line in proc.lines)
        assert any('"server_stopped"' in line for line in proc.lines)


def test_absolute_form_request_target_is_refused(deployment: Deployment) -> None:
    """`GET http://elsewhere/v1/...` would put a foreign URI into the signature base and the
    audit entry (aiohttp routes it by its path): only origin-form targets are accepted."""
    async def scenario() -> bytes:
        host, port = deployment.url.removeprefix("http://").rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(b"GET http://evil.example/v1/cases HTTP/1.1\r\nHost: evil.example\r\n"
                     b"Connection: close\r\n\r\n")
        await writer.drain()
        data = await reader.read()
        writer.close()
        return data

    raw = run(scenario())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), head
    assert b"application/problem+json" in head
    assert json.loads(body)["type"].endswith("/request-target")
