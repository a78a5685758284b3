"""What the UI's pages share: templates, the common page context, messages, errors.

Pages are rendered on the server with Jinja2 (autoescaped: ids, titles and
file names are untrusted text); every string goes through the translation
layer (``exchange.ui.i18n``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from exchange.client.errors import ClientError, KeySubstituted, VerificationFailed
from exchange.crypto.manifest import HANDLING_CODES
from exchange.ui import i18n
from exchange.ui.i18n import LANGUAGES, format_size, format_time
from exchange.ui.i18n import gettext as _
from exchange.ui.state import UiState, Unlocked

__all__ = ["HOME", "STATE_KEY", "client_failure", "flash", "render", "require_unlocked",
           "state_of"]

HERE = Path(__file__).resolve().parent
STATE_KEY = web.AppKey("ui_state", UiState)

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(HERE / "templates")),
    autoescape=True,
    extensions=["jinja2.ext.i18n"],
    undefined=jinja2.StrictUndefined,
)
_env.install_gettext_callables(  # type: ignore[attr-defined]
    i18n.gettext, i18n.ngettext, newstyle=True)
_env.filters["when"] = format_time
_env.filters["size"] = format_size
#: The uploader's handling code is shown on every evidence row, its meaning on hover.
_env.globals["handling_codes"] = HANDLING_CODES

#: Roles and their home page (the navigation shows the pages of one's role first).
HOME = {"prosecutor": "/cases", "coordinator": "/dashboard", "auditor": "/audit",
        "admin": "/admin"}


def state_of(request: web.Request) -> UiState:
    """Return the UI state of the request's application."""
    return request.app[STATE_KEY]


def flash(request: web.Request, kind: str, text: str) -> None:
    """Queue a message for the next page (kind: ok, error, info)."""
    state_of(request).flash.append((kind, text))


def render(request: web.Request, template: str, *, status: int = 200,
           **context: Any) -> web.Response:
    """Return the page ``template`` with the common context (identity, language, messages)."""
    state = state_of(request)
    unlocked = state.unlocked
    messages, state.flash = state.flash, []
    for text in state.warnings:
        messages.append(("info", text))
    state.warnings.clear()
    role = unlocked.me.role if unlocked is not None and unlocked.me is not None else ""
    page = _env.get_template(template).render(
        me=unlocked.me if unlocked else None,
        my_id=unlocked.client.identity.id if unlocked else None,
        role=role, home=HOME.get(role, "/cases"), messages=messages,
        language=state.language, languages=LANGUAGES, path=request.path,
        idle_lock_min=f"{state.settings.idle_lock_s / 60:g}", **context)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def client_failure(err: ClientError) -> str:
    """Return a library error as one message for the page, its hints after it."""
    if isinstance(err, KeySubstituted):
        lead = _("A key did not match what the log records. Nothing was done.")
    elif isinstance(err, VerificationFailed):
        lead = _("Verification failed. Nothing was accepted.")
    else:
        lead = _("The operation failed.")
    return " ".join([lead, str(err), *err.hints])


def require_unlocked(request: web.Request) -> Unlocked:
    """Return the unlocked identity, or redirect to the unlock page."""
    unlocked = state_of(request).unlocked
    if unlocked is None:
        raise web.HTTPSeeOther("/")
    return unlocked
