"""The aiohttp application: route table, middleware, problem responses, access log.

How to extend (other helpers work on their own modules, never on this file):

* **A route module.** Create ``exchange/transport/handlers_<area>.py`` with a
  function ``routes() -> list[Route]`` (``exchange.transport.routing.Route``).
  :func:`route_modules` discovers every ``handlers_*`` module of this package
  by name, so nothing here needs editing. Handlers are thin: get the service
  with ``request.app[SERVICE_KEY]``, call ``auth.perform(request, action, op)``
  (or ``auth.authenticate`` for deliberately unlogged reads), render. A signed
  route whose handler never went through ``auth`` answers 500 (a safety net).
* **An action.** Audit actions are dotted names; add new ones to
  ``exchange.audit.entry.KNOWN_ACTIONS`` and pass them to ``auth.perform`` and
  as ``Route.action`` (the action logged when the request is refused before
  the handler runs: Expect gate, oversized body).
* **A problem type.** Raise an ``ExchangeError`` leaf (in your own module)
  with ``http_status`` and a new ``problem_type`` slug; ``problems.py`` turns
  it into ``https://exchange.invalid/problems/<slug>``. No table to edit.
* **An OpenAPI path.** Give each ``Route`` an ``openapi=operation(...)``
  (``exchange.transport.openapi``); the document is built from the routes, and
  a test fails if any route of the app is missing from it.
* **A body route** (``Route(body=True)``) gets the ``Expect: 100-continue``
  gate of ``auth.make_expect_handler``: the signature is verified before the
  client sends the body.
"""

from __future__ import annotations

import importlib
import pkgutil
import secrets
import time
from collections.abc import Iterable, Sequence
from types import ModuleType

import structlog
from aiohttp import web

import exchange.transport as transport_package
from exchange.errors import ExchangeError, TransportError
from exchange.service.core import Service
from exchange.storage import durability, waits
from exchange.transport.auth import ACTOR_KEY, AUTHENTICATED_KEY, decorate, make_expect_handler
from exchange.transport.problems import (
    error_response,
    http_exception_response,
    internal_error_response,
    is_outage,
)
from exchange.transport.routing import (
    BASE_URL_KEY,
    INFLIGHT_KEY,
    ROUTES_KEY,
    SEEN_KEY,
    SERVICE_KEY,
    Handler,
    InFlight,
    Route,
    durable_before_sending,
)

__all__ = ["REQUEST_ID_HEADER", "build_app", "collect_routes", "route_modules"]

REQUEST_ID_HEADER = "X-Request-Id"
_log = structlog.get_logger(__name__)


def route_modules() -> list[ModuleType]:
    """Return every ``exchange.transport.handlers_*`` module, in name order."""
    names = sorted(
        info.name for info in pkgutil.iter_modules(transport_package.__path__)
        if info.name.startswith("handlers_")
    )
    return [importlib.import_module(f"exchange.transport.{name}") for name in names]


def collect_routes(modules: Iterable[ModuleType] | None = None) -> list[Route]:
    """Return the routes of ``modules`` (default: all route modules); duplicates are an error."""
    routes: list[Route] = []
    seen: set[tuple[str, str]] = set()
    for module in route_modules() if modules is None else modules:
        for route in module.routes():
            key = (route.method, route.path)
            if key in seen:
                raise RuntimeError(f"internal error: route {route.method} {route.path} twice")
            seen.add(key)
            routes.append(route)
    return routes


class RequestTargetRefused(TransportError):
    """An absolute-form (``GET http://host/path``) or otherwise non-path request target.

    aiohttp routes such a request by its path but keeps the whole URI as the
    raw path, which would then enter the signature base and the audit entry:
    only origin-form targets (RFC 9112 §3.2.1) are accepted.
    """

    http_status = 400
    problem_type = "request-target"


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "-"


@web.middleware
async def _edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, problem responses for every error, the signed-route safety net, access log."""
    started = time.perf_counter()
    request_id = secrets.token_hex(16)  # 32 hex digits like uuid4().hex, a fifth of the cost
    route: Route | None = request.app[ROUTES_KEY].get(
        (request.method, _route_label(request))
    )
    response: web.StreamResponse
    inflight = request.app[INFLIGHT_KEY]
    inflight.enter()
    waited: dict[str, float] = {}
    try:
        if not request.raw_path.startswith("/"):
            raise RequestTargetRefused(
                f"request target must be a path, found {request.raw_path[:60]!r}"
            )
        with waits.tally() as waited, durability.tracking() as seen:
            request[SEEN_KEY] = seen
            response = await handler(request)
        if route is not None and route.signed and not request.get(AUTHENTICATED_KEY):
            _log.error("route_not_authenticated", request_id=request_id,
                       route=_route_label(request))
            response = internal_error_response()
    except web.HTTPException as exc:
        response = http_exception_response(exc) if exc.status >= 400 else exc
    except ExchangeError as err:
        if is_outage(err):
            _log.warning("database_unavailable", request_id=request_id,
                         error=type(err).__name__)
        response = error_response(err)
        if response.status >= 500 and response.status != 503:  # the client learns nothing
            _log.error("request_failed", request_id=request_id, route=_route_label(request),
                       error=type(err).__name__, problem=err.problem_type,
                       cause=type(err.__cause__).__name__ if err.__cause__ else None)
    except Exception:  # a bug: log it with its traceback, tell the client nothing
        _log.exception("request_failed", request_id=request_id, route=_route_label(request))
        response = internal_error_response()
    finally:
        inflight.leave()
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = request_id
        decorate(request, route, response)
    _log.info(
        "request_handled",
        request_id=request_id,
        participant=request.get(ACTOR_KEY),
        method=request.method,
        route=_route_label(request),
        status=response.status,
        duration_ms=round((time.perf_counter() - started) * 1000, 3),
        # Of which waiting for the database (exchange.storage.waits), when it was waited for.
        **({"db_wait_ms": {kind: round(seconds * 1000, 3) for kind, seconds in waited.items()}}
           if waited else {}),
    )
    return response


async def _durable_headers(request: web.Request, _response: web.StreamResponse) -> None:
    await durable_before_sending(request)


def build_app(
    service: Service, *, base_url: str, routes: Sequence[Route] | None = None
) -> web.Application:
    """Return the application for ``service``; ``base_url`` is the public URL signatures use."""
    limits = service.config.limits
    app = web.Application(middlewares=[_edge], client_max_size=limits.max_json_bytes)
    app[SERVICE_KEY] = service
    app[BASE_URL_KEY] = [base_url.rstrip("/")]
    table = list(collect_routes() if routes is None else routes)
    app[ROUTES_KEY] = {(r.method, r.path): r for r in table}
    app[INFLIGHT_KEY] = InFlight()
    app.on_response_prepare.append(_durable_headers)
    for route in table:
        app.router.add_route(
            route.method, route.path, route.handler,
            expect_handler=make_expect_handler(route),
        )
    return app
