"""Unsigned routes: ``GET /v1/health`` and ``GET /v1/openapi.json`` (the API description)."""

from __future__ import annotations

from aiohttp import web

from exchange.errors import ExchangeError
from exchange.service.statements import load_anchor
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
    document = build_document(request.app[ROUTES_KEY].values())
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
                                   "content": json_content({"type": "object"})}},
            ),
        ),
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
