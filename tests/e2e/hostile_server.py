"""A hostile exchange server: a small aiohttp app on 127.0.0.1 that answers with chosen lies.

The operator of a real server holds the log's signing key, so this one signs
genuine checkpoints (of an empty log) with its own key, which the client is
told to pin; everything else it says is whatever a test scripts: traversal
ids, absolute paths, endless feed events, ANSI sequences, malformed JSON,
wrong Content-Length. It runs in a thread of the test process while the real
``exchange`` CLI runs as a subprocess against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.note import Ed25519Signer
from exchange.audit.tree import empty_root
from exchange.crypto.anchor import AnchorAdmin, TrustAnchor
from exchange.crypto.keys import ParticipantIdentity
from tests.server_harness import write_test_keystore

ORIGIN = "hostile.example/log"
PASSPHRASE = "hostile test passphrase"
#: Escape sequences a hostile server would like to reach a terminal: set the window
#: title, clear the screen, hide the cursor, a C1 CSI, a right-to-left override.
ANSI = "\x1b]0;owned\x07\x1b[2J\x1b[?25l\x9b31m\u202e"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def problem(status: int, slug: str, detail: str) -> web.Response:
    """An RFC 9457 answer with whatever detail the test wants to smuggle."""
    body = {"type": f"https://exchange.invalid/problems/{slug}", "title": slug,
            "status": status, "detail": detail}
    return web.Response(status=status, body=json.dumps(body).encode(),
                        content_type="application/problem+json")


def answer(value: object, status: int = 200) -> web.Response:
    """A JSON answer."""
    return web.Response(status=status, body=json.dumps(value).encode(),
                        content_type="application/json")


@dataclass
class HostileServer:
    """The app, its signing key and the routes a test scripted (``"GET /v1/cases"``: handler).

    Unscripted requests get a 404 problem. ``sent`` counts body bytes the
    streaming lies managed to write before the client hung up.
    """

    routes: dict[str, Handler] = field(default_factory=dict)
    signer: Ed25519Signer = field(default_factory=lambda: Ed25519Signer.generate(ORIGIN))
    url: str = ""
    sent: int = 0
    requests: list[str] = field(default_factory=list)

    @property
    def log_key(self) -> str:
        """The verifier key the client pins."""
        return self.signer.verifier().vkey()

    def anchor(self) -> TrustAnchor:
        """The trust anchor the client pins: this server's log key and an administrator."""
        return TrustAnchor(origin=ORIGIN, log_key=self.log_key,
                           admins=(AnchorAdmin(_ADMIN.public_bundle()),))

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        key = f"{request.method} {request.path}"
        self.requests.append(key)
        if key not in self.routes and request.method == "GET" and \
                request.path.endswith("/statements"):
            # No signed statement at all (unless a test scripts one): the client's
            # replayed view holds the anchor's administrator only.
            return answer({"chain": "?", "statements": []})
        if key == "GET /v1/audit/checkpoint":
            note = sign_checkpoint(Checkpoint(ORIGIN, 0, empty_root()), self.signer)
            return web.Response(body=note, content_type="text/plain")
        handler = self.routes.get(key)
        if handler is None:
            return problem(404, "not-found", "nothing scripted here")
        return await handler(request)

    @contextlib.contextmanager
    def running(self) -> Iterator[HostileServer]:
        """Serve on 127.0.0.1 (an ephemeral port) in a thread until the block ends."""
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        stop = asyncio.Event()

        async def main() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._dispatch)
            runner = web.AppRunner(app, handle_signals=False)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.url = f"http://127.0.0.1:{port}"
            ready.set()
            await stop.wait()
            await runner.cleanup()

        thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the hostile server did not start")
        try:
            yield self
        finally:
            loop.call_soon_threadsafe(stop.set)
            thread.join(10)
            loop.close()

    def stream(self, head: bytes, piece: bytes, *, repeat: int,
               content_type: str = "text/event-stream") -> Handler:
        """A handler answering ``head`` then ``piece`` ``repeat`` times, counting what got out."""

        async def handler(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": content_type})
            await response.prepare(request)
            try:
                await response.write(head)
                for _ in range(repeat):
                    await response.write(piece)
                    self.sent += len(piece)
            except (ConnectionError, RuntimeError):
                pass  # the client hung up: what we wanted
            return response

        return handler


_ADMIN = ParticipantIdentity.generate("admin")


def _trust_file(base: Path, server: HostileServer) -> Path:
    path = base / "trust.json"
    path.write_bytes(server.anchor().encode())
    return path


def client_env(base: Path, server: HostileServer) -> dict[str, str]:
    """The CLI environment of a participant of the hostile server (a cheap 0600 keystore)."""
    keystore = base / "me.keystore"
    if not keystore.exists():
        write_test_keystore(keystore, ParticipantIdentity.generate("coordinator-1"), PASSPHRASE)
    home = base / "home"
    home.mkdir(exist_ok=True)
    return {
        "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
        "EXCHANGE_URL": server.url, "EXCHANGE_KEYSTORE": str(keystore),
        "EXCHANGE_PASSPHRASE": PASSPHRASE, "EXCHANGE_TRUST": str(_trust_file(base, server)),
        "EXCHANGE_STATE_DIR": str(base / "state"), "EXCHANGE_TEST_WEAK_KDF": "1",
    }
