"""The route table's building blocks, shared by ``app.py`` and every ``handlers_*`` module.

A :class:`Route` names the HTTP method and path, the thin handler, the audit
action logged when the request is refused before the handler runs, whether it
is signed and whether it takes a body (body routes get the ``Expect:
100-continue`` gate), whether it speaks tus (its answers carry the tus
headers), and its OpenAPI operation object. Keeping the OpenAPI
text next to the route makes it hard for the document to drift from the app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exchange.service.core import Service
from exchange.storage.durability import Seen

__all__ = [
    "BASE_URL_KEY",
    "INFLIGHT_KEY",
    "ROUTES_KEY",
    "SEEN_KEY",
    "SERVICE_KEY",
    "Handler",
    "InFlight",
    "Route",
    "durable_before_sending",
    "move_base_url",
    "respond_json",
]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: The process's Service.
SERVICE_KEY = web.AppKey("exchange_service", Service)
#: The public base URL (scheme://host:port, no trailing slash) that @target-uri uses,
#: then the earlier ones this process served under (a ``server move``). A list so
#: server.py can fill in the bound port after start-up and a move can change it.
BASE_URL_KEY = web.AppKey("exchange_base_url", list)


def move_base_url(app: web.Application, url: str) -> None:
    """Make ``url`` the public URL (a logged ``server.url`` statement moved the server).

    From the entry that logged the move on, requests must be signed for the
    new URL (the verifier checks exactly that); the old one is kept only to
    explain refusals (``wrong-server-url``).
    """
    bases: list[str] = app[BASE_URL_KEY]
    url = url.rstrip("/")
    if bases[0] != url:
        bases[:] = [url, *(b for b in bases if b != url)]


#: Every Route of the app, keyed by (method, path).
ROUTES_KEY = web.AppKey("exchange_routes", dict)


class InFlight:
    """Counts requests being handled, so shutdown can wait for them (bodies included)."""

    def __init__(self) -> None:
        self.count = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def enter(self) -> None:
        """Note a request starting."""
        self.count += 1
        self.idle.clear()

    def leave(self) -> None:
        """Note a request finished."""
        self.count -= 1
        if self.count == 0:
            self.idle.set()


#: The app's in-flight request counter.
INFLIGHT_KEY = web.AppKey("exchange_inflight", InFlight)

#: The request's :class:`~exchange.storage.durability.Seen`: the commits its reads saw.
SEEN_KEY = "exchange_seen"


async def durable_before_sending(request: web.Request) -> None:
    """Wait until what ``request`` read outside its units is durable (storage.durability).

    The app runs it before the headers of every answer (``on_response_prepare``);
    a stream runs it before each event it writes.
    """
    seen: Seen | None = request.get(SEEN_KEY)
    if seen is not None and seen.commit:
        await request.app[SERVICE_KEY].store.wait_durable(seen.commit)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    """One API route.

    ``path`` uses aiohttp's ``{name}`` placeholders without regular expressions,
    which are also OpenAPI path templates. ``action`` is the audit action for
    refusals the handler never sees (Expect gate, oversized body); unsigned
    routes have none. ``openapi`` is the OpenAPI 3.1 operation object.
    """

    method: str
    path: str
    handler: Handler
    action: str | None
    openapi: Mapping[str, Any] = field(default_factory=dict)
    signed: bool = True
    body: bool = False
    #: A tus 1.0 route: every answer, errors included, carries the tus headers.
    tus: bool = False

    def __post_init__(self) -> None:
        if self.method != self.method.upper():
            raise ValueError(f"route method must be upper case, found {self.method!r}")
        if not self.path.startswith("/v1/") or ":" in self.path:
            raise ValueError(f"route path must start with /v1/ and use plain placeholders: "
                             f"{self.path!r}")
        if self.signed and not self.action:
            raise ValueError(f"signed route {self.method} {self.path} needs an audit action")


def respond_json(
    value: object, *, audit_index: int | None, status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """Return a JSON response naming the audit entry that logged the request (if any)."""
    out = dict(headers or {})
    out["Cache-Control"] = "no-store"
    if audit_index is not None:
        out["Exchange-Audit-Index"] = str(audit_index)
    return web.json_response(value, status=status, headers=out)
