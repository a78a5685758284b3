"""Prometheus metrics on a separate listener (``exchange serve --metrics-port``).

Why a separate listener: the metrics say who is busy and how big the log is,
which is for the operator's monitoring, not for the internet; binding them
to another port (loopback by default) keeps them off the public API and its
reverse proxy. The registry is per application, so several servers in one
process (tests) never mix their series.

Request series are recorded by a middleware that runs outside the edge
middleware of :mod:`exchange.transport.app` and so sees the final status of
every request, problem answers included. Route labels are the route
templates (``/v1/uploads/{uid}``), never raw paths, so the number of series
stays bounded; requests matching no route are labelled ``unmatched``.
Audit-log and database gauges are read from the stores when scraped.
"""

from __future__ import annotations

import time
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from exchange.errors import ExchangeError
from exchange.service.core import Service
from exchange.storage.errors import NotFound
from exchange.transport.routing import Handler

__all__ = ["LOOP_LAG_BUCKETS", "METRICS_PATH", "Metrics", "metrics_app"]

METRICS_PATH = "/metrics"
#: Request durations from a cached listing (about a millisecond) to a long upload chunk.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30,
                   60)
#: Event-loop lag (``exchange.transport.looplag``): from a healthy loop to a starved one.
LOOP_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_UPLOAD_ROUTES = {("PATCH", "/v1/uploads/{uid}"), ("POST", "/v1/uploads/{uid}/commit")}
_log = structlog.get_logger(__name__)


def _route(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


class Metrics:
    """The server's metric series and the middleware that feeds the request ones."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("exchange_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("exchange_http_request_duration_seconds",
                                 "time from request start to the last byte of the answer",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("exchange_http_request_body_bytes",
                                "request body bytes received", ["route"], registry=r)
        self.bytes_out = Counter("exchange_http_response_body_bytes",
                                 "response body bytes sent", ["route"], registry=r)
        self.in_flight = Gauge("exchange_http_requests_in_flight",
                               "requests being handled", registry=r)
        self.uploads = Gauge("exchange_uploads_in_progress",
                             "upload chunks (tus PATCH) and commits being received", registry=r)
        self.tree_size = Gauge("exchange_audit_tree_size", "entries in the audit log",
                               registry=r)
        self.lag = Gauge("exchange_audit_unpublished_entries",
                         "entries not yet covered by a published checkpoint (sequencing lag)",
                         registry=r)
        self.checkpoint_age = Gauge("exchange_audit_checkpoint_age_seconds",
                                    "seconds since the latest checkpoint was signed", registry=r)
        self.db_up = Gauge("exchange_database_up", "1 when the database answered the scrape",
                           registry=r)
        self.db_batches = Gauge("exchange_database_batches_committed",
                                "group-commit batches committed by this process", registry=r)
        self.db_queue = Gauge("exchange_database_units_queued",
                              "units of work waiting for the next group commit", registry=r)
        self.db_pool_size = Gauge("exchange_database_pool_connections",
                                  "PostgreSQL pool connections open (0 for SQLite)", registry=r)
        self.db_pool_idle = Gauge("exchange_database_pool_idle_connections",
                                  "PostgreSQL pool connections idle (0 for SQLite)", registry=r)
        self.loop_lag = Histogram("exchange_event_loop_lag_seconds",
                                  "how late the event loop ran a timer (every request of "
                                  "the process waited at least as long)",
                                  buckets=LOOP_LAG_BUCKETS, registry=r)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count, time and size every request (outermost middleware)."""
        started = time.perf_counter()
        route = _route(request)
        upload = (request.method, route) in _UPLOAD_ROUTES
        self.in_flight.inc()
        if upload:
            self.uploads.inc()
        status = 500
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
            status = response.status
            return response
        finally:
            self.in_flight.dec()
            if upload:
                self.uploads.dec()
            self.requests.labels(request.method, route, str(status)).inc()
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)
            self.bytes_in.labels(route).inc(request.content.total_bytes)
            if response is not None:
                sent = response.body_length if response.prepared else len(
                    getattr(response, "body", b"") or b"")
                self.bytes_out.labels(route).inc(sent)

    async def refresh(self) -> None:
        """Read the audit-log and database gauges from the stores (at scrape time)."""
        store: Any = self.service.store
        self.db_batches.set(getattr(store, "batches", 0))
        queued = getattr(store, "queued_units", None)
        if queued is not None:
            self.db_queue.set(queued())
        pool_stats = getattr(store, "pool_stats", None)
        if pool_stats is not None:
            open_connections, idle = pool_stats()
            self.db_pool_size.set(open_connections)
            self.db_pool_idle.set(idle)
        try:
            size = await store.tree_size()
            self.tree_size.set(size)
            try:
                latest = await store.latest_checkpoint()
            except NotFound:
                self.lag.set(size)
            else:
                self.lag.set(size - latest.size)
                self.checkpoint_age.set(max(0.0, self.service.clock() - latest.created_at))
        except ExchangeError as err:
            _log.warning("metrics_database_unavailable", error=type(err).__name__)
            self.db_up.set(0)
        else:
            self.db_up.set(1)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer a scrape in the Prometheus text format."""
        await self.refresh()
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_app(metrics: Metrics) -> web.Application:
    """Return the application of the metrics listener (``GET /metrics`` only)."""
    app = web.Application()
    app.router.add_get(METRICS_PATH, metrics.handle)
    return app
