"""Unsigned routes: liveness, readiness and the API description.

``GET /v1/health`` is liveness: the process runs and its event loop answers;
it does not touch the database, so an orchestrator does not restart a healthy
process because PostgreSQL is away. ``GET /v1/ready`` is readiness: the
database answers and a blob could be written now; 503 with ``Retry-After``
and a problem naming the part that failed otherwise, so a load balancer sends
no traffic to a server that cannot commit.
"""

from __future__ import annotations

from aiohttp import web

from exchange.errors import ExchangeError, StorageError
from exchange.service.statements import load_anchor
from exchange.transport.openapi import build_document, json_content, obj, operation
from exchange.transport.problems import error_response
from exchange.transport.routing import BASE_URL_KEY, ROUTES_KEY, SERVICE_KEY, Route
from exchange.transport.witnesses import WITNESSES_KEY

__all__ = ["routes"]


_NO_STORE = {"Cache-Control": "no-store"}


class BlobStoreUnavailable(StorageError):
    """The blob store cannot take a write (full, read-only or missing disk)."""

    http_status = 503
    problem_type = "service-unavailable"


async def health(request: web.Request) -> web.StreamResponse:
    """Answer ok while the process serves requests (liveness; no dependency checked).

    With witnesses, ``witnessing`` says how fresh the served checkpoint is: a
    witness outage leaves ``fresh`` false and ``witnessed_size`` behind ``log_size``.
    """
    body: dict[str, object] = {"status": "ok"}
    witnesses = request.app.get(WITNESSES_KEY)
    if witnesses is not None:
        body["witnessing"] = witnesses.health()
    return web.json_response(body, headers=_NO_STORE)


async def ready(request: web.Request) -> web.StreamResponse:
    """Answer ok when the database answers and the blob store takes writes (readiness)."""
    service = request.app[SERVICE_KEY]
    try:
        await service.store.tree_size()
        probe = getattr(service.blobs, "ready", None)
        if probe is not None:
            try:
                await probe()
            except OSError as err:
                raise BlobStoreUnavailable(
                    f"the blob store cannot write: {err.strerror or type(err).__name__}"
                ) from None
    except ExchangeError as err:
        response = error_response(err)
        response.headers.setdefault("Retry-After", "5")
        return response
    return web.json_response({"status": "ok", "database": "ok", "blobs": "ok"},
                             headers=_NO_STORE)


async def trust_anchor(request: web.Request) -> web.StreamResponse:
    """Return the server's trust anchor (trust.json) as written by ``exchange server init``.

    A convenience for setting up a client, never a source of trust: whoever
    pins it compares its fingerprint with an administrator out of band
    (``exchange trust show``), since a compromised server can serve any file.
    """
    try:
        anchor = load_anchor(request.app[SERVICE_KEY].config.data_dir)
    except ExchangeError as err:
        return error_response(err)
    return web.Response(body=anchor.encode(), content_type="application/json",
                        headers={"Cache-Control": "no-store",
                                 "Exchange-Anchor-Fingerprint": anchor.fingerprint})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """Return the OpenAPI 3.1 document of every route of this app."""
    document = build_document(request.app[ROUTES_KEY].values(),
                              server_url=request.app[BASE_URL_KEY][0],
                              limits=request.app[SERVICE_KEY].config.limits)
    return web.json_response(document)


def routes() -> list[Route]:
    """Return the unsigned meta routes."""
    return [
        Route(
            method="GET", path="/v1/trust-anchor", handler=trust_anchor, action=None,
            signed=False,
            openapi=operation(
                "the trust anchor (compare its fingerprint out of band before pinning it)",
                signed=False, problems=(503,),
                responses={"200": {"description": "the exchange-trust-anchor/v1 document",
                                   "content": json_content(obj({
                                       "format": {"const": "exchange-trust-anchor/v1"},
                                       "origin": {"type": "string"},
                                       "log_key": {"type": "string"},
                                       "admins": {"type": "array"},
                                       "admin_quorum": {"type": "integer"},
                                       "witness_policy": {"type": "object"}},
                                       required=["format", "origin", "log_key", "admins"]))}},
            ),
        ),
        Route(
            method="GET", path="/v1/health", handler=health, action=None, signed=False,
            openapi=operation(
                "liveness: the process answers (no dependency checked)", signed=False,
                problems=(),
                responses={"200": {"description": "the server process answers",
                                   "content": json_content(obj(
                                       {"status": {"const": "ok"},
                                        "witnessing": {"type": "object"}},
                                       required=["status"]))}},
            ),
        ),
        Route(
            method="GET", path="/v1/ready", handler=ready, action=None, signed=False,
            openapi=operation(
                "readiness: the database answers and the blob store takes writes",
                signed=False, problems=(),
                responses={"200": {"description": "ready to serve",
                                   "content": json_content(obj(
                                       {"status": {"const": "ok"},
                                        "database": {"const": "ok"},
                                        "blobs": {"const": "ok"}},
                                       required=["status", "database", "blobs"]))}},
            ),
        ),
        Route(
            method="GET", path="/v1/openapi.json", handler=openapi_document, action=None,
            signed=False,
            openapi=operation(
                "this OpenAPI 3.1 document", signed=False, problems=(),
                responses={"200": {"description": "the document",
                                   "content": json_content(obj(
                                       {"openapi": {"type": "string"},
                                        "info": {"type": "object"},
                                        "paths": {"type": "object"}},
                                       required=["openapi", "info", "paths"],
                                       additional=True))}},
            ),
        ),
    ]
