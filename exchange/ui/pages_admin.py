"""Administrator pages: enrol, suspend, reinstate and record key changes; list participants.

Every change is the client library's (``exchange.client.admin``), exactly as
``exchange participant ...`` makes it: a directory statement signed on this
machine. The fingerprint shown for comparison is computed on this machine
from the dropped bundle, never taken from the server; the keys recorded now
and the participant list are the verified directory (replayed from the
signed statements), not the server's listing.

Enrolments and key changes take two steps (read the bundle, then confirm
that the participant read out the same fingerprint); the dropped bundle
waits in memory under a one-time token bound to the step it was read for.
Suspension and reinstatement have a confirmation page that says what they
do in plain words.
"""

from __future__ import annotations

import json
import secrets

from aiohttp import web
from aiohttp.web_request import FileField

from exchange.client import admin
from exchange.client.errors import ClientError
from exchange.client.trust import VerifiedParticipant
from exchange.crypto.keys import (
    BundleError,
    PublicBundle,
    bundle_possession,
    parse_bundle,
    validate_participant_id,
)
from exchange.ui.common import client_failure, flash, render, require_unlocked, state_of
from exchange.ui.i18n import gettext as _
from exchange.ui.state import Unlocked

__all__ = ["add_routes"]

ROLES = ("prosecutor", "coordinator", "auditor", "admin")
_MAX_BUNDLE_BYTES = 64 * 1024
#: The chain's limit on a logged reason (exchange.crypto.chains).
_MAX_REASON_CHARS = 500
_ENROL, _KEY_CHANGE = "enrol", "key-change"


async def _admin(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    listing: list[dict[str, object]] = []
    error = None
    try:
        listing = await admin.list_participants(unlocked.client)
    except ClientError as err:
        error = client_failure(err)
    return render(request, "admin.html", participants=listing, error=error, roles=ROLES)


async def _read_bundle(request: web.Request, purpose: str) -> tuple[PublicBundle, str]:
    """Read the dropped bundle; keep it under a fresh token for ``purpose``'s next step."""
    require_unlocked(request)
    state = state_of(request)
    form = await request.post()
    field = form.get("bundle")
    data = field.file.read(_MAX_BUNDLE_BYTES + 1) if isinstance(field, FileField) else b""
    try:
        if not data or len(data) > _MAX_BUNDLE_BYTES:
            raise BundleError("choose the participant's *.bundle.json (at most 64 KiB)")
        bundle = parse_bundle(data)
        bundle_possession(json.loads(data))  # a malformed proof is refused here, not later
    except (BundleError, ValueError) as err:
        flash(request, "error", _("This is not a valid participant bundle: %(reason)s")
              % {"reason": str(err)})
        raise web.HTTPSeeOther("/admin") from None
    token = secrets.token_urlsafe(16)
    state.pending_bundles = {token: (purpose, data)}  # one comparison at a time
    return bundle, token


async def _confirmed_bundle(request: web.Request, purpose: str) -> tuple[
        PublicBundle, bytes | None, dict[str, str]]:
    """Return the bundle read for ``purpose``, its proof of possession and the form,
    once the administrator confirmed that the fingerprints match (else back to /admin)."""
    state = state_of(request)
    form = {key: str(value) for key, value in (await request.post()).items()}
    pending = state.pending_bundles.pop(form.get("token", ""), None)
    if pending is None or pending[0] != purpose:
        flash(request, "error", _("Drop the bundle again: the comparison expired."))
        raise web.HTTPSeeOther("/admin")
    if form.get("confirmed") != "yes":
        flash(request, "error", _("Nothing was recorded: the fingerprints were not confirmed "
                                  "to match. Ask the participant to read their fingerprint "
                                  "again."))
        raise web.HTTPSeeOther("/admin")
    data = pending[1]
    return parse_bundle(data), bundle_possession(json.loads(data)), form


async def _bundle(request: web.Request) -> web.StreamResponse:
    """Read a bundle to enrol and show its fingerprint for comparison."""
    bundle, token = await _read_bundle(request, _ENROL)
    return render(request, "enrol.html", bundle=bundle, token=token, roles=ROLES)


async def _enrol(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    bundle, possession, form = await _confirmed_bundle(request, _ENROL)
    role = form.get("role", "")
    if role not in ROLES:
        flash(request, "error", _("Choose a role."))
        raise web.HTTPSeeOther("/admin")
    try:
        who = await admin.enrol(unlocked.client, bundle, role, possession=possession,
                                organisation=form.get("organisation", "").strip(),
                                country=form.get("country", "").strip().upper())
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/admin") from None
    flash(request, "ok", _("%(who)s is enrolled as %(role)s (logged at audit index %(index)s, "
                           "fingerprint %(fp)s).")
          % {"who": who.id, "role": role, "index": who.key_index, "fp": who.fingerprint})
    raise web.HTTPSeeOther("/admin")


async def _key_change_bundle(request: web.Request) -> web.StreamResponse:
    """Read a participant's new bundle; show the new fingerprint beside the recorded one."""
    unlocked = require_unlocked(request)
    bundle, token = await _read_bundle(request, _KEY_CHANGE)
    try:
        current = await unlocked.client.participant(bundle.id)
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/admin") from None
    return render(request, "key_change.html", bundle=bundle, token=token, current=current,
                  max_reason=_MAX_REASON_CHARS)


async def _key_change(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    bundle, possession, form = await _confirmed_bundle(request, _KEY_CHANGE)
    reason = _reason(request, form)
    try:
        who = await admin.change_keys(unlocked.client, bundle, possession=possession,
                                      reason=reason)
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/admin") from None
    flash(request, "ok", _("The new keys of %(who)s are recorded (logged at audit index "
                           "%(index)s, fingerprint %(fp)s). Requests signed with the old keys "
                           "are refused. The prosecutors who own their cases must now re-key "
                           "them (exchange case rekey).")
          % {"who": who.id, "index": who.key_index, "fp": who.fingerprint})
    raise web.HTTPSeeOther("/admin")


def _reason(request: web.Request, form: dict[str, str]) -> str:
    """Return the form's reason (logged in the clear, as the CLI's ``--reason``)."""
    reason = form.get("reason", "").strip()
    if not reason or len(reason) > _MAX_REASON_CHARS:
        flash(request, "error", _("Give a reason (at most %(n)s characters): it is logged.")
              % {"n": _MAX_REASON_CHARS})
        raise web.HTTPSeeOther("/admin")
    return reason


async def _participant(request: web.Request, unlocked: Unlocked) -> VerifiedParticipant:
    """Return the participant named in the path as verified, or go back to /admin."""
    try:
        return await unlocked.client.participant(
            validate_participant_id(request.match_info["pid"]))
    except BundleError as err:
        flash(request, "error", str(err))
    except ClientError as err:
        flash(request, "error", client_failure(err))
    raise web.HTTPSeeOther("/admin")


async def _status_page(request: web.Request) -> web.StreamResponse:
    """The confirmation page of a suspension or reinstatement."""
    unlocked = require_unlocked(request)
    who = await _participant(request, unlocked)
    return render(request, "participant_status.html", who=who,
                  action=request.match_info["action"], max_reason=_MAX_REASON_CHARS)


async def _status(request: web.Request) -> web.StreamResponse:
    """Suspend or reinstate (confirmed on the page above), as ``exchange participant ...``."""
    unlocked = require_unlocked(request)
    pid = (await _participant(request, unlocked)).id
    suspend = request.match_info["action"] == "suspend"
    form = {key: str(value) for key, value in (await request.post()).items()}
    reason = _reason(request, form)
    try:
        change = admin.suspend if suspend else admin.reinstate
        result = await change(unlocked.client, pid, reason=reason)
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/admin") from None
    values = {"who": pid, "index": result.get("audit_index")}
    if suspend:
        flash(request, "ok", _("%(who)s is suspended (logged at audit index %(index)s): their "
                               "requests are refused from now on.") % values)
    else:
        flash(request, "ok", _("%(who)s is reinstated (logged at audit index %(index)s): their "
                               "requests are accepted again.") % values)
    raise web.HTTPSeeOther("/admin")


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the administrator pages."""
    router.add_get("/admin", _admin)
    router.add_post("/admin/bundle", _bundle)
    router.add_post("/admin/enrol", _enrol)
    router.add_post("/admin/key-change/bundle", _key_change_bundle)
    router.add_post("/admin/key-change", _key_change)
    status = "/admin/participants/{pid}/{action:suspend|reinstate}"
    router.add_get(status, _status_page)
    router.add_post(status, _status)
