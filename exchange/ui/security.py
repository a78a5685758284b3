"""The local UI's guards: launch secret, Host and Origin checks, security headers.

Theory of operation. ``exchange ui`` listens on 127.0.0.1, where any local
process and any web page the user visits can reach it. So:

* the launch URL carries a random per-launch secret (``/?t=SECRET``); the
  first visit trades it for an ``HttpOnly``, ``SameSite=Strict`` cookie and
  redirects to a URL without it. Every other request must present the cookie
  (compared in constant time). Another local user's process does not know
  the secret, and a cross-site page cannot send the cookie.
* the ``Host`` header must be exactly ``127.0.0.1:PORT`` (DNS rebinding: a
  hostile name resolving to 127.0.0.1 carries its own name in ``Host``).
* a state-changing request (anything but GET/HEAD) must carry an ``Origin``
  equal to the UI's own origin (cross-site request forgery).
* every answer carries a strict Content-Security-Policy (scripts, styles and
  connections from this origin only, no framing, no inline code) and no-store.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable

from aiohttp import web

__all__ = [
    "CSP",
    "SECRET_PARAM",
    "Guard",
    "new_secret",
]

SECRET_PARAM = "t"  # noqa: S105 (the name of the query parameter, not a secret)
#: No inline script or style, nothing from another origin, no framing, no plugins.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
_SAFE_METHODS = frozenset({"GET", "HEAD"})
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # "same-origin": with "no-referrer" Chromium sends "Origin: null" on form posts.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def new_secret() -> str:
    """Return a fresh launch secret (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


class Guard:
    """The checks for one UI process listening on ``127.0.0.1:port``."""

    def __init__(self, secret: str, port: int, *, host: str = "127.0.0.1") -> None:
        self.secret = secret
        self.port = port
        self.host = host
        self.cookie = f"exchange_ui_{port}"  # cookies ignore ports: one name per UI process

    @property
    def origin(self) -> str:
        """The UI's own origin, the only one allowed to change state."""
        return f"http://{self.host}:{self.port}"

    def launch_url(self) -> str:
        """Return the URL that opens the UI (it carries the secret: show it to the user only)."""
        return f"{self.origin}/?{SECRET_PARAM}={self.secret}"

    def refusal(self, request: web.Request) -> tuple[int, str] | None:
        """Return (status, reason) if ``request`` must be refused, else None."""
        if request.headers.get("Host", "") != f"{self.host}:{self.port}":
            return 421, "wrong-host"
        if request.method not in _SAFE_METHODS and \
                request.headers.get("Origin", "") != self.origin:
            return 403, "wrong-origin"
        presented = request.cookies.get(self.cookie, "")
        offered = request.query.get(SECRET_PARAM, "") if request.path == "/" else ""
        if _same(presented, self.secret) or _same(offered, self.secret):
            return None
        return 403, "no-secret"

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Refuse what :meth:`refusal` names; trade a launch secret for the cookie."""
        refused = self.refusal(request)
        if refused is not None:
            status, reason = refused
            response: web.StreamResponse = web.Response(
                status=status, text=_REFUSAL_TEXT[reason], content_type="text/plain")
        elif request.method == "GET" and SECRET_PARAM in request.query and request.path == "/":
            response = web.Response(status=303, headers={"Location": "/"})
            response.set_cookie(self.cookie, self.secret, httponly=True, samesite="Strict",
                                path="/")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as exc:  # redirects and errors get the headers too
                response = web.Response(status=exc.status, reason=exc.reason, text=exc.text,
                                        headers=exc.headers)
        for name, value in _HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _same(given: str, secret: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), secret.encode())


_REFUSAL_TEXT = {
    "wrong-host": "refused: this interface answers only at its own loopback address\n",
    "wrong-origin": "refused: a request that changes something must come from this "
                    "interface's own pages\n",
    "no-secret": "refused: open the address that 'exchange ui' printed (it carries a "
                 "one-time secret for this browser)\n",
}
