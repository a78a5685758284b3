"""The local UI's aiohttp application: guards, templates, the event stream, unlock and lock.

Pages are rendered on the server with Jinja2 (autoescaped: ids, titles and
file names are untrusted text) and enhanced by one plain script
(``static/app.js``) for drag and drop, progress and live updates. Each
role's pages live in their own module (``pages_*``), all over the client
library; ``common`` holds what they share.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from exchange.client.errors import ClientError
from exchange.crypto.keystore import KeystoreError
from exchange.ui import i18n, pages_admin, pages_audit, pages_cases, pages_dashboard
from exchange.ui.common import HERE, HOME, STATE_KEY, client_failure, flash, render, state_of
from exchange.ui.i18n import LANGUAGES
from exchange.ui.i18n import gettext as _
from exchange.ui.security import Guard
from exchange.ui.state import UiState

__all__ = ["build_app"]

GUARD_KEY = web.AppKey("ui_guard", Guard)
_HEARTBEAT_S = 15.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Apply the chosen language; count page requests as activity (idle lock)."""
    state = state_of(request)
    i18n.set_language(state.language)
    if request.path != "/events" and not request.path.startswith("/static/"):
        state.touch()
    return await handler(request)


async def _home(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    if state.unlocked is None:
        return render(request, "unlock.html", keystores=state.keystore_choices(),
                      demo_passphrase=state.settings.demo_passphrase,
                      server=state.settings.url)
    raise web.HTTPSeeOther(HOME.get(state.unlocked.me.role if state.unlocked.me else "",
                                    "/cases"))


async def _unlock(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    form = await request.post()
    try:
        index = int(str(form.get("keystore", "0")))
        if not 0 <= index < len(state.settings.keystores):
            raise ValueError
    except ValueError:
        flash(request, "error", _("Choose one of the listed keystores."))
        raise web.HTTPSeeOther("/") from None
    passphrase = str(form.get("passphrase", ""))
    try:
        unlocked = await state.unlock(index, passphrase)
    except KeystoreError:
        flash(request, "error", _("The keystore did not open: check the passphrase."))
        raise web.HTTPSeeOther("/") from None
    except OSError as err:
        flash(request, "error", _("The keystore cannot be read: %(reason)s")
              % {"reason": (err.strerror or "error").lower()})
        raise web.HTTPSeeOther("/") from None
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/") from None
    if unlocked.me is None:
        flash(request, "info", _("You are not enrolled on this server yet: send your public "
                                 "bundle to the administrator and compare fingerprints."))
    raise web.HTTPSeeOther("/")


async def _lock(request: web.Request) -> web.StreamResponse:
    await state_of(request).lock()
    flash(request, "info", _("Locked. Your keys were removed from memory."))
    raise web.HTTPSeeOther("/")


async def _language(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    form = await request.post()
    choice = str(form.get("language", ""))
    if choice in LANGUAGES:
        state.language = choice
    back = str(form.get("back", "/"))
    raise web.HTTPSeeOther(back if back.startswith("/") and not back.startswith("//") else "/")


async def _events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for the page: job progress, live evidence, lock."""
    state = state_of(request)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-store"})
    await response.prepare(request)
    queue = state.subscribe()
    try:
        await response.write(b": open\n\n")
        while True:
            try:
                text = await asyncio.wait_for(queue.get(), _HEARTBEAT_S)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            await response.write(f"data: {text}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        state.unsubscribe(queue)
    return response


async def _job(request: web.Request) -> web.StreamResponse:
    job = state_of(request).jobs.get(request.match_info["jid"])
    if job is None:
        raise web.HTTPNotFound
    return web.json_response(job.to_json())


async def _on_startup(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.spawn(state.idle_watch)


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE_KEY]
    await state.lock()
    for task in list(state.background):
        task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.gather(*state.background, return_exceptions=True)


def build_app(state: UiState, guard: Guard) -> web.Application:
    """Return the UI application for ``state``, behind ``guard``."""
    app = web.Application(middlewares=[guard.middleware, _context],
                          client_max_size=4 * 1024 * 1024)
    app[STATE_KEY] = state
    app[GUARD_KEY] = guard
    app.router.add_get("/", _home)
    app.router.add_post("/unlock", _unlock)
    app.router.add_post("/lock", _lock)
    app.router.add_post("/language", _language)
    app.router.add_get("/events", _events)
    app.router.add_get("/jobs/{jid}", _job)
    app.router.add_static("/static/", HERE / "static", append_version=False)
    for module in (pages_cases, pages_dashboard, pages_audit, pages_admin):
        module.add_routes(app.router)
    app.on_startup.append(_on_startup)
    app.on_cleanup.append(_on_cleanup)
    return app
