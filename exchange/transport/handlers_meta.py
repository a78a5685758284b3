"""Unsigned routes: ``GET /v1/health`` and ``GET /v1/openapi.json`` (the API description)."""

from __future__ import annotations

from aiohttp import web

from exchange.errors import ExchangeError
from exchange.transport.openapi import build_document, json_content, obj, operation
from exchange.transport.problems import error_response
from exchange.transport.routing import BASE_URL_KEY, ROUTES_KEY, SERVICE_KEY, Route

__all__ = ["routes"]


async def health(request: web.Request) -> web.StreamResponse:
    """Answer ok when the metadata store answers (503 + Retry-After when it does not)."""
    try:
        await request.app[SERVICE_KEY].store.tree_size()
    except ExchangeError as err:
        return error_response(err)
    return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})


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
            method="GET", path="/v1/health", handler=health, action=None, signed=False,
            openapi=operation(
                "liveness and database reachability", signed=False, problems=(),
                responses={"200": {"description": "the server and its database answer",
                                   "content": json_content(obj(
                                       {"status": {"const": "ok"}}, required=["status"]))}},
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
