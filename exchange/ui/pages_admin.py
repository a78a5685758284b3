"""Administrator pages: enrol from a bundle with the fingerprint comparison, list participants.

Enrolment is the library's ``enrol`` (which reads the participant back and
checks the served keys against the new log entry). The fingerprint shown for
comparison is computed on this machine from the dropped bundle, never taken
from the server. The participant list is the server's own listing, shown as
such (a hint; every participant's keys are checked when they are used).
Suspension and key changes are not offered by the client library yet, so the
page says so instead of reimplementing them here.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from aiohttp import web
from aiohttp.web_request import FileField

from exchange.client.admin import enrol
from exchange.client.errors import ClientError
from exchange.crypto.keys import BundleError, bundle_possession, parse_bundle
from exchange.ui.common import client_failure, flash, render, require_unlocked, state_of
from exchange.ui.i18n import gettext as _

__all__ = ["add_routes"]

ROLES = ("prosecutor", "coordinator", "auditor", "admin")
_MAX_BUNDLE_BYTES = 64 * 1024


async def _admin(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    listing: list[dict[str, Any]] = []
    error = None
    try:
        reply = await unlocked.client.call("GET", "/v1/participants",
                                           doing="listing participants")
        listing = reply.records("participants", "listing participants")
    except ClientError as err:
        error = client_failure(err)
    return render(request, "admin.html", participants=listing, error=error, roles=ROLES)


async def _bundle(request: web.Request) -> web.StreamResponse:
    """Read a dropped bundle and show its fingerprint for comparison."""
    require_unlocked(request)
    state = state_of(request)
    form = await request.post()
    field = form.get("bundle")
    data = field.file.read(_MAX_BUNDLE_BYTES + 1) if isinstance(field, FileField) else b""
    try:
        if not data or len(data) > _MAX_BUNDLE_BYTES:
            raise BundleError("choose the participant's *.bundle.json (at most 64 KiB)")
        bundle = parse_bundle(data)
    except BundleError as err:
        flash(request, "error", _("This is not a valid participant bundle: %(reason)s")
              % {"reason": str(err)})
        raise web.HTTPSeeOther("/admin") from None
    token = secrets.token_urlsafe(16)
    state.pending_bundles = {token: data}  # one comparison at a time
    return render(request, "enrol.html", bundle=bundle, token=token, roles=ROLES)


async def _enrol(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    state = state_of(request)
    form = await request.post()
    data = state.pending_bundles.pop(str(form.get("token", "")), None)
    if data is None:
        flash(request, "error", _("Drop the bundle again: the comparison expired."))
        raise web.HTTPSeeOther("/admin")
    if form.get("confirmed") != "yes":
        flash(request, "error", _("Not enrolled: the fingerprints were not confirmed to match. "
                                  "Ask the participant to read their fingerprint again."))
        raise web.HTTPSeeOther("/admin")
    role = str(form.get("role", ""))
    if role not in ROLES:
        flash(request, "error", _("Choose a role."))
        raise web.HTTPSeeOther("/admin")
    bundle = parse_bundle(data)
    try:
        who = await enrol(unlocked.client, bundle, role,
                          possession=bundle_possession(json.loads(data)),
                          organisation=str(form.get("organisation", "")).strip(),
                          country=str(form.get("country", "")).strip().upper())
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/admin") from None
    flash(request, "ok", _("%(who)s is enrolled as %(role)s (logged at audit index %(index)s, "
                           "fingerprint %(fp)s).")
          % {"who": who.id, "role": role, "index": who.key_index, "fp": who.fingerprint})
    raise web.HTTPSeeOther("/admin")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the administrator pages."""
    router.add_get("/admin", _admin)
    router.add_post("/admin/bundle", _bundle)
    router.add_post("/admin/enrol", _enrol)
