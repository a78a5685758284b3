"""Liveness, readiness and Prometheus metrics of a real server (SQLite and PostgreSQL).

The metrics are scraped from the separate ``--metrics-port`` listener and
parsed with prometheus-client's own text parser, so a malformed exposition
fails here; the values are checked against what the test did.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.faults._tools import new_case
from tests.ops.test_backup_restore import upload
from tests.server_harness import Deployment, deployed, run


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed(tmp_path_factory.mktemp(f"metrics-{request.param}"), request.param,
                  extra_args=["--metrics-port", "0"]) as d:
        yield d


def metrics_url(d: Deployment) -> str:
    line = next(x for x in d.processes[0].lines if x.startswith("exchange: metrics on "))
    return line.split()[-1]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    parsed = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            parsed[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return parsed


def value(parsed: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str,
          **labels: str) -> float:
    return parsed.get((name, frozenset(labels.items())), 0.0)


def test_metrics_count_requests_bytes_and_the_log(served: Deployment) -> None:
    d = served

    async def scenario() -> tuple[str, str]:
        async with aiohttp.ClientSession() as http:
            async with http.get(metrics_url(d)) as response:
                assert response.status == 200
                first = await response.text()
            async with d.session("prosecutor") as pro:
                case_id, _ = await new_case(d, pro)
                await upload(pro, case_id, b"z" * 50_000)
            async with http.get(d.url + "/v1/no-such-route") as response:
                assert response.status == 404
            async with http.get(d.url + "/metrics") as response:
                assert response.status == 404  # not on the public listener
            async with http.get(metrics_url(d)) as response:
                assert response.headers["Content-Type"].startswith("text/plain")
                second = await response.text()
        return first, second

    first, second = run(scenario())
    before, after = samples(first), samples(second)
    patch = value(after, "exchange_http_requests_total", method="PATCH",
                  route="/v1/uploads/{uid}", status="204")
    assert patch == value(before, "exchange_http_requests_total", method="PATCH",
                          route="/v1/uploads/{uid}", status="204") + 1
    assert value(after, "exchange_http_requests_total", method="POST",
                 route="/v1/uploads/{uid}/commit", status="201") >= 1
    assert value(after, "exchange_http_requests_total", method="GET", route="unmatched",
                 status="404") >= 1
    grown = (value(after, "exchange_http_request_body_bytes_total", route="/v1/uploads/{uid}")
             - value(before, "exchange_http_request_body_bytes_total", route="/v1/uploads/{uid}"))
    assert grown == 50_000
    assert value(after, "exchange_http_response_body_bytes_total",
                 route="/v1/uploads/{uid}/commit") > 0
    assert value(after, "exchange_http_request_duration_seconds_count", method="PATCH",
                 route="/v1/uploads/{uid}") >= 1
    assert value(after, "exchange_uploads_in_progress") == 0
    assert value(after, "exchange_audit_tree_size") > value(before, "exchange_audit_tree_size")
    assert 0 <= value(after, "exchange_audit_unpublished_entries") <= value(
        after, "exchange_audit_tree_size")
    assert value(after, "exchange_database_up") == 1
    assert value(after, "exchange_database_batches_committed") >= 1
    if d.backend == "postgres":
        assert value(after, "exchange_database_pool_connections") >= 1
    # The loop-lag watcher ran during the scenario; every sample fits the last bucket.
    lagged = value(after, "exchange_event_loop_lag_seconds_count")
    assert lagged > value(before, "exchange_event_loop_lag_seconds_count")
    assert value(after, "exchange_event_loop_lag_seconds_bucket", le="+Inf") == lagged
    assert 0 <= value(after, "exchange_event_loop_lag_seconds_sum") < lagged


def test_health_is_liveness_and_ready_checks_database_and_blobs(served: Deployment) -> None:
    d = served

    async def get(path: str) -> tuple[int, dict[str, object]]:
        async with aiohttp.ClientSession() as http, http.get(d.url + path) as response:
            return response.status, await response.json(content_type=None)

    assert run(get("/v1/health"))[:2] == (200, {"status": "ok"})
    assert run(get("/v1/ready"))[:2] == (200, {"status": "ok", "database": "ok", "blobs": "ok"})


def test_readiness_fails_without_blob_directory(tmp_path: Path) -> None:
    """A blob area where no temporary file can be made: not ready, still alive.

    (A permission change proves nothing when the tests run as root; a file
    where the temporary directory should be fails for everyone.)
    """
    (tmp_path / "s").mkdir()
    with deployed(tmp_path / "s", "sqlite") as d:
        tmp = d.data_dir / "blobs" / ".tmp"
        moved = d.data_dir / "blobs" / ".tmp-aside"
        tmp.rename(moved)
        tmp.write_bytes(b"")  # a file where the directory was: no temporary file can be made

        async def get(path: str) -> tuple[int, dict[str, object]]:
            async with aiohttp.ClientSession() as http, http.get(d.url + path) as response:
                if response.status == 503:
                    assert response.headers["Retry-After"].isdigit()
                return response.status, await response.json(content_type=None)

        try:
            status, body = run(get("/v1/ready"))
            assert status == 503, body
            assert "blob store cannot write" in str(body["detail"])
            assert run(get("/v1/health"))[0] == 200
        finally:
            tmp.unlink()
            moved.rename(tmp)
        assert run(get("/v1/ready"))[0] == 200
