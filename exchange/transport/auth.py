"""Request authentication at the HTTP edge: RFC 9421 profile, Expect gate, bounded bodies.

The profile (server design "Authentication"): a signature must cover at least
``@method``, ``@target-uri`` and every one of :data:`COVERED_HEADERS` that the
request carries (more components, such as ``@authority``, are accepted);
``content-digest`` is required whenever there is a body (a tus PATCH may carry the
signed ``exchange-prefix-digest`` instead). A 401 answer names
exactly that set in ``Accept-Signature`` (RFC 9421 §5.1) next to a
``WWW-Authenticate`` challenge (RFC 9110 §11.6.1), so any RFC 9421 client can
learn what to sign.
``@target-uri`` is the configured public URL plus the raw request target, never
the Host header, so Host games cannot change what was signed. The verification
itself runs inside the operation's transaction (``Service.perform``), which
also records the nonce, so replays fail across processes sharing a database.

``Expect: 100-continue``: body routes get :func:`expect_handler`, which
verifies the headers' signature and the participant's status before the
client may send a single body byte; a refusal is answered (and logged)
without reading the body, and the connection is closed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiohttp import web

from exchange.errors import ExchangeError, TransportError
from exchange.service.core import Actor, Operation, Performed, SignedRequest
from exchange.service.errors import AuditedRefusal, RequestTooLarge
from exchange.transport.problems import error_response, problem_response
from exchange.transport.routing import BASE_URL_KEY, SERVICE_KEY, Route
from exchange.wire.httpsig import COVERED_HEADERS, ED25519_ALG, PREFIX_DIGEST_FIELD
from exchange.wire.tus import response_headers as tus_response_headers

__all__ = [
    "ACTOR_KEY",
    "AUTHENTICATED_KEY",
    "COVERED_HEADERS",
    "authenticate",
    "challenge_headers",
    "decorate",
    "has_body",
    "make_expect_handler",
    "perform",
    "read_body",
    "required_components",
    "signed_request",
    "target_uri",
]

T = TypeVar("T")
ExpectHandler = Callable[[web.Request], Awaitable[web.StreamResponse | None]]

#: Set on the request once a handler handed it to the service (the middleware checks).
AUTHENTICATED_KEY = "exchange_authenticated"
#: The participant id of an authenticated request, for the access log.
ACTOR_KEY = "exchange_actor"
_READ_CHUNK = 64 * 1024


class BodyTimeout(TransportError):
    """The client stopped sending its request body (``limits.body_timeout_s`` without a byte)."""

    http_status = 408
    problem_type = "body-timeout"


def has_body(request: web.BaseRequest) -> bool:
    """Whether the request announces a body (Content-Length > 0 or chunked)."""
    if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
        return True
    length = request.content_length
    return length is not None and length > 0


def required_components(request: web.BaseRequest) -> frozenset[str]:
    """Return the components this request's signature must cover (it may cover more)."""
    names = {"@method", "@target-uri"}
    names.update(h for h in COVERED_HEADERS if h in request.headers)
    # A body is bound by its Content-Digest; a tus PATCH may instead carry the signed
    # digest of the upload's whole prefix, which the server checks against the bytes
    # it stored (exchange.service.evidence.append).
    prefix_patch = request.method == "PATCH" and PREFIX_DIGEST_FIELD in request.headers
    if has_body(request) and not prefix_patch:
        names.add("content-digest")
    return frozenset(names)


#: The ``WWW-Authenticate`` auth-scheme naming RFC 9421 signatures (no IANA
#: registration exists for one; "Signature" is the name the RFC 9421 drafts used).
AUTH_SCHEME = "Signature"


def challenge_headers(request: web.BaseRequest) -> dict[str, str]:
    """Return ``WWW-Authenticate`` and ``Accept-Signature`` for a 401 to ``request``.

    ``Accept-Signature`` (RFC 9421 §5.1) lists the components this very request
    must cover and the parameters we require (``keyid``, ``created``,
    ``expires``, ``nonce``; ``alg`` is optional but must be ed25519 if given).
    """
    ordered = ["@method", "@target-uri"]
    ordered += [h for h in COVERED_HEADERS if h in required_components(request)]
    components = " ".join(f'"{name}"' for name in ordered)
    return {
        "WWW-Authenticate": f'{AUTH_SCHEME} realm="exchange", alg="{ED25519_ALG}"',
        "Accept-Signature": f'sig1=({components});keyid;created;expires;nonce;'
                            f'alg="{ED25519_ALG}"',
    }


def decorate(request: web.BaseRequest, route: Route | None,
             response: web.StreamResponse) -> None:
    """Add the protocol headers an answer owes its client (before it is sent).

    A 401 gets :func:`challenge_headers`; every answer of a tus route, errors
    included, gets the tus headers (``Tus-Resumable``; ``Tus-Version`` on 412).
    """
    if response.status == 401:
        for name, value in challenge_headers(request).items():
            response.headers.setdefault(name, value)
    if route is not None and route.tus:
        for name, value in tus_response_headers(response.status).items():
            response.headers.setdefault(name, value)


def target_uri(request: web.Request) -> str:
    """Return the ``@target-uri``: the configured public base URL plus the raw path and query."""
    base: str = request.app[BASE_URL_KEY][0]
    return base + request.raw_path


def other_uris(request: web.Request) -> tuple[str, ...]:
    """Return the URIs the client may have signed for instead of :func:`target_uri`.

    The URL it reached (scheme and Host header: ``localhost`` for
    ``127.0.0.1``, a proxy's port) and the URLs before a move. They only
    explain a signature that does not verify (``wrong-server-url``); nothing
    is ever accepted for them.
    """
    bases: list[str] = request.app[BASE_URL_KEY]
    reached = f"{request.scheme}://{request.host}"
    return tuple(base + request.raw_path for base in dict.fromkeys([reached, *bases[1:]])
                 if base != bases[0])


def signed_request(request: web.Request, *, body: bytes | None = None) -> SignedRequest:
    """Return the signed-request view of ``request`` (``body``: the whole buffered body)."""
    return SignedRequest(
        method=request.method,
        target_uri=target_uri(request),
        headers=tuple(request.headers.items()),
        required_components=required_components(request),
        body=body if body else None,
        source=request.remote,
        other_uris=other_uris(request),
    )


async def perform(
    request: web.Request,
    action: str,
    op: Operation[T],
    *,
    case: str | None = None,
    object: str | None = None,
    body: bytes | None = None,
) -> Performed[T]:
    """Run ``op`` for this request through ``Service.perform`` (authenticated and logged)."""
    request[AUTHENTICATED_KEY] = True
    performed = await request.app[SERVICE_KEY].perform(
        signed_request(request, body=body), action, op, case=case, object=object
    )
    request[ACTOR_KEY] = performed.actor.id
    return performed


async def authenticate(
    request: web.Request, action: str, *, case: str | None = None, object: str | None = None
) -> Actor:
    """Return the authenticated actor without logging success (unlogged reads only)."""
    request[AUTHENTICATED_KEY] = True
    actor = await request.app[SERVICE_KEY].authenticate(
        signed_request(request), action, case=case, object=object
    )
    request[ACTOR_KEY] = actor.id
    return actor


async def read_body(request: web.Request, *, max_bytes: int, action: str) -> bytes:
    """Return the whole body, refusing more than ``max_bytes`` with 413 (logged if signed).

    A body that stalls for ``limits.body_timeout_s`` is refused with 408.

    The digest is checked by ``Service.perform`` together with the signature,
    so a body is never trusted before its signer is known.
    """
    length = request.content_length
    refused: ExchangeError | None = None
    if length is not None and length > max_bytes:
        refused = RequestTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
    timeout_s = request.app[SERVICE_KEY].config.limits.body_timeout_s
    chunks: list[bytes] = []
    size = 0
    while refused is None:
        try:
            async with asyncio.timeout(timeout_s):
                chunk = await request.content.read(_READ_CHUNK)
        except TimeoutError:
            refused = BodyTimeout(f"no body byte arrived for {timeout_s} s after {size} bytes")
            break
        if not chunk:
            break
        size += len(chunk)
        if size > max_bytes:
            refused = RequestTooLarge(f"request body exceeds the limit of {max_bytes} bytes")
            break
        chunks.append(chunk)
    if refused is not None:
        request[AUTHENTICATED_KEY] = True
        raise await _refuse_body(request, action, refused)
    return b"".join(chunks)


async def _refuse_body(request: web.Request, action: str, refused: ExchangeError) -> ExchangeError:
    """Return what to raise for a refused body: logged if the headers' signature verifies.

    The signature covers the headers (and the Content-Digest the body should
    match), so the signer is known without the body. A signature that does
    not verify was counted by ``authenticate``; the body's refusal is answered
    unlogged, like any request nobody signed.
    """
    service = request.app[SERVICE_KEY]
    signed = signed_request(request)
    try:
        actor = await service.authenticate(signed, action, record_nonce=False)
    except AuditedRefusal:
        raise
    except ExchangeError:
        return refused
    return await service.log_denied(signed, action, refused, actor=actor)


def make_expect_handler(route: Route) -> ExpectHandler | None:
    """Return the ``Expect: 100-continue`` gate for a signed body route (None otherwise)."""
    if not (route.body and route.signed and route.action):
        return None
    action = route.action

    async def expect_handler(request: web.Request) -> web.StreamResponse | None:
        expect = request.headers.get("Expect", "").strip().lower()
        if expect != "100-continue":
            response = problem_response(
                417, "expectation-failed", f"unknown expectation {expect[:40]!r}"
            )
            response.force_close()
            decorate(request, route, response)
            return response
        try:
            actor = await request.app[SERVICE_KEY].authenticate(
                signed_request(request), action, record_nonce=False
            )
        except (AuditedRefusal, ExchangeError) as err:
            # No body byte was read: close the connection rather than drain it.
            response = error_response(err)
            response.force_close()
            decorate(request, route, response)
            return response
        request[ACTOR_KEY] = actor.id
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    return expect_handler
