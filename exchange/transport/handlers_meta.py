"""Unsigned routes: ``GET /v1/health`` and ``GET /v1/openapi.json`` (the API description)."""

from __future__ import annotations

from aiohttp import web

from exchange.errors import ExchangeError
from exchange.transport.openapi import build_document, json_content, obj, operation
from exchange.transport.problems import error_response
from exchange.transport.routing import ROUTES_KEY, SERVICE_KEY, Route
from exchange.transport.witnesses import WITNESSES_KEY

__all__ = ["routes"]


async def health(request: web.Request) -> web.StreamResponse:
    """Answer ok when the metadata store answers (503 + Retry-After when it does not).

    With witnesses, ``witnessing`` says how fresh the served checkpoint is: a
    witness outage leaves ``fresh`` false and ``witnessed_size`` behind ``log_size``.
    """
    try:
        await request.app[SERVICE_KEY].store.tree_size()
    except ExchangeError as err:
        return error_response(err)
    body: dict[str, object] = {"status": "ok"}
    witnesses = request.app.get(WITNESSES_KEY)
    if witnesses is not None:
        body["witnessing"] = witnesses.health()
    return web.json_response(body, headers={"Cache-Control": "no-store"})


async def openapi_document(request: web.Request) -> web.StreamResponse:
    """Return the OpenAPI 3.1 document of every route of this app."""
    document = build_document(request.app[ROUTES_KEY].values())
    return web.json_response(document)


def routes() -> list[Route]:
    """Return the unsigned meta routes."""
    return [
        Route(
            method="GET", path="/v1/health", handler=health, action=None, signed=False,
            openapi=operation(
                "liveness and database reachability", signed=False, problems=(),
                responses={"200": {"description": "the server and its database answer",
                                   "content": json_content(obj(
                                       {"status": {"const": "ok"},
                                        "witnessing": {"type": "object"}},
                                       required=["status"]))}},
            ),
        ),
        Route(
            method="GET", path="/v1/openapi.json", handler=openapi_document, action=None,
            signed=False,
            openapi=operation(
                "this OpenAPI 3.1 document", signed=False, problems=(),
                responses={"200": {"description": "the document",
                                   "content": json_content({"type": "object"})}},
            ),
        ),
    ]
