"""Signing hooks for other HTTP clients: sign any request as a participant.

Stock tools (tus clients, generated OpenAPI clients, scripts) speak plain
HTTP; the server wants every request signed (RFC 9421, Ed25519) with the
body's RFC 9530 Content-Digest covered. :class:`SignatureAuth` is a
``requests`` auth class: it runs on the fully prepared request, so it sees
the final headers and body, adds ``Content-Digest`` when there is a body and
signs ``@method``, ``@target-uri`` and every profile header present.

:class:`HttpxSignatureAuth` is the same for ``httpx`` (what generated
OpenAPI clients such as openapi-python-client's use): ``httpx_args={"auth":
HttpxSignatureAuth(identity)}``. Neither library is a dependency of
exchange: each is imported only when its hook is used. Example (a runnable
version is in the README, "Use it from other tools")::

    identity = open_keystore(...)            # a ParticipantIdentity
    auth = SignatureAuth(identity)
    requests.get(f"{url}/v1/cases", auth=auth)

tuspy calls ``requests.post``/``head``/``patch`` itself and takes no auth
object, so :func:`requests_signing` signs every request ``requests`` sends
while it is active (it wraps ``requests.Session.send`` for the duration; use
it around the upload only, in a single-threaded program).

The URL must be the server's public URL: the server rebuilds
``@target-uri`` from its configured origin and the raw request path.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import DEFAULT_LIFETIME_S, sign_headers
from exchange.wire.httpsig import content_digest

if TYPE_CHECKING:
    import httpx
    import requests

__all__ = ["HttpxSignatureAuth", "SignatureAuth", "requests_signing", "signed_request_headers"]


def signed_request_headers(
    identity: ParticipantIdentity, method: str, url: str, headers: dict[str, str],
    body: bytes | None, *, now: int, lifetime_s: int = DEFAULT_LIFETIME_S,
) -> dict[str, str]:
    """Return ``headers`` with Content-Digest (for a non-empty body) and the signature."""
    out = dict(headers)
    if body:
        out["Content-Digest"] = content_digest(body)
    return sign_headers(method, url, out, key=identity.signing_key, keyid=identity.id,
                        now=now, lifetime_s=lifetime_s)


def _body_bytes(body: object) -> bytes | None:
    if body is None or isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8")
    raise TypeError(f"SignatureAuth signs bytes bodies only, not {type(body).__name__} "
                    "(a streamed body needs its Content-Digest computed in advance)")


class _SigningAuth:
    """What both auth callables share: the identity, the clock and the signature lifetime."""

    def __init__(self, identity: ParticipantIdentity, *,
                 clock: Callable[[], float] = time.time,
                 lifetime_s: int = DEFAULT_LIFETIME_S) -> None:
        self.identity = identity
        self._clock = clock
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}(keyid={self.identity.id!r})"


class SignatureAuth(_SigningAuth):
    """A ``requests`` auth class (``auth=SignatureAuth(identity)``) signing each request.

    Implements the ``requests.auth.AuthBase`` protocol (a callable taking and
    returning the prepared request); a fresh nonce and ``created`` per request.
    """

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = _body_bytes(request.body)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in
                   ("signature", "signature-input", "content-digest")}
        if body is None and request.method not in ("GET", "HEAD", "OPTIONS", "DELETE"):
            headers.setdefault("Content-Length", "0")
        signed = signed_request_headers(self.identity, request.method or "GET",
                                        request.url or "", headers, body,
                                        now=int(self._clock()), lifetime_s=self.lifetime_s)
        request.headers.clear()
        request.headers.update(signed)
        return request


class HttpxSignatureAuth(_SigningAuth):
    """An ``httpx`` auth callable (``auth=HttpxSignatureAuth(identity)``) signing each request.

    httpx wraps a callable auth in its ``FunctionAuth``, so nothing here needs
    httpx itself. Bodies must be in memory (``content=``/``json=``: what
    generated clients send); a streamed body has no Content-Digest to sign.
    """

    def __call__(self, request: httpx.Request) -> httpx.Request:
        body = request.content or None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in
                   ("signature", "signature-input", "content-digest", "host")}
        signed = signed_request_headers(self.identity, request.method, str(request.url),
                                        headers, body, now=int(self._clock()),
                                        lifetime_s=self.lifetime_s)
        for name in ("Content-Digest", "Signature-Input", "Signature"):
            if name in signed:
                request.headers[name] = signed[name]
        return request


@contextlib.contextmanager
def requests_signing(auth: SignatureAuth) -> Iterator[None]:
    """Sign every request ``requests`` sends while active (for clients that take no auth).

    Wraps ``requests.Session.send`` and restores it on exit. A request that
    already carries a Signature (signed by hand) is left as it is.
    """
    import requests  # noqa: PLC0415  (optional: only interop users need it)

    original = requests.Session.send

    def send(session: requests.Session, request: requests.PreparedRequest,
             **kwargs: Any) -> requests.Response:
        if "Signature" not in request.headers:
            auth(request)
        return original(session, request, **kwargs)

    requests.Session.send = send  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        requests.Session.send = original  # type: ignore[method-assign]
