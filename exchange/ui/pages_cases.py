"""Prosecutor pages: cases, members (with verified keys), dropped uploads, evidence lists.

Everything goes through the client library: ``create_case``, ``show_case``,
``add_member``/``remove_member`` (which check the newcomer's keys against the
log and re-key the case), ``upload_file`` (encrypts, signs, resumes) and
``list_evidence`` (opens and verifies each manifest). This module only
stages dropped bytes on disk and shows results.
"""

from __future__ import annotations

import asyncio
import os
import urllib.parse
from pathlib import Path
from typing import Any

from aiohttp import web

from exchange.client.cases import add_member, create_case, list_cases, remove_member, show_case
from exchange.client.deliveries import deliveries
from exchange.client.download import list_evidence
from exchange.client.errors import ClientError
from exchange.client.session import Client
from exchange.client.trust import VerifiedParticipant
from exchange.client.upload import upload_file
from exchange.ui import paths
from exchange.ui.common import client_failure, flash, render, require_unlocked, state_of
from exchange.ui.i18n import gettext as _
from exchange.ui.state import Job, UiState

__all__ = ["add_routes"]

_CASE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789._-")
_COPY_PIECE = 1024 * 1024


def case_id_of(request: web.Request) -> str:
    """Return the case id in the URL, refusing anything that is not a plain id."""
    cid = request.match_info["cid"]
    if not cid or len(cid) > 64 or not set(cid) <= _CASE_ID_CHARS:
        raise web.HTTPNotFound
    return cid


async def _cases(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    error = None
    try:
        found = await list_cases(unlocked.client)
    except ClientError as err:
        found, error = [], client_failure(err)
    return render(request, "cases.html", cases=found, error=error)


async def _create(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    title = str((await request.post()).get("title", "")).strip()
    try:
        case = await create_case(unlocked.client, title)
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/cases") from None
    flash(request, "ok", _("Case created. Its title is encrypted: the server cannot read it."))
    raise web.HTTPSeeOther(f"/cases/{case.case_id}")


async def member_rows(unlocked_client: Client, members: tuple[dict[str, Any], ...]
                      ) -> list[dict[str, Any]]:
    """Return the case's members, each with its keys as checked against the log."""
    rows = []
    for member in members:
        pid = str(member.get("participant", ""))
        row: dict[str, Any] = {"id": pid, "case_role": member.get("role", ""),
                               "removed": bool(member.get("removed")), "who": None,
                               "problem": None}
        if not row["removed"]:
            try:
                who: VerifiedParticipant = await unlocked_client.participant(pid)
                row["who"] = who
            except ClientError as err:
                row["problem"] = client_failure(err)
        rows.append(row)
    return rows


async def _case(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    cid = case_id_of(request)
    client = unlocked.client
    try:
        case = await show_case(client, cid)
        members = await member_rows(client, case.members)
    except ClientError as err:
        flash(request, "error", client_failure(err))
        raise web.HTTPSeeOther("/cases") from None
    evidence, evidence_error = [], None
    try:
        evidence = await list_evidence(client, cid)
    except ClientError as err:
        evidence_error = client_failure(err)
    report, deliveries_error = None, None
    if evidence:
        try:
            report = await deliveries(client, cid, evidence=evidence)
        except ClientError as err:
            deliveries_error = client_failure(err)
    by_id = {} if report is None else {d.upload.evidence_id: d for d, _ in report.items}
    return render(request, "case.html", case=case, members=members, evidence=evidence,
                  evidence_error=evidence_error, paths=paths.remembered_paths(client.state),
                  deliveries=by_id, delivery_report=report, deliveries_error=deliveries_error)


async def _add(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    cid = case_id_of(request)
    participant = str((await request.post()).get("participant", "")).strip()
    try:
        result = await add_member(unlocked.client, cid, participant)
        who = await unlocked.client.participant(participant)
    except ClientError as err:
        flash(request, "error", client_failure(err))
    else:
        flash(request, "ok", _("%(who)s was added. Their key (fingerprint %(fp)s) was checked "
                               "against the log, and the case key of epoch %(epoch)s was "
                               "sealed to it on this computer.")
              % {"who": participant, "fp": who.fingerprint, "epoch": result.get("epoch")})
    raise web.HTTPSeeOther(f"/cases/{cid}")


async def _remove(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    cid = case_id_of(request)
    participant = request.match_info["pid"]
    try:
        result = await remove_member(unlocked.client, cid, participant)
    except ClientError as err:
        flash(request, "error", client_failure(err))
    else:
        flash(request, "ok", _("%(who)s was removed. A new case key (epoch %(epoch)s) was made "
                               "on this computer and shared only with the remaining members; "
                               "files uploaded from now on are encrypted to it.")
              % {"who": participant, "epoch": result.get("epoch")})
    raise web.HTTPSeeOther(f"/cases/{cid}")


async def _receive(request: web.Request) -> web.StreamResponse:
    """Stage one dropped file (raw body) and start its upload; answer with the job."""
    unlocked = require_unlocked(request)
    cid = case_id_of(request)
    state = state_of(request)
    try:
        relative = paths.clean_relative_path(
            urllib.parse.unquote(request.headers.get("X-Relative-Path", "")))
        last_modified = int(request.headers.get("X-Last-Modified", "0"))
        size = int(request.headers.get("Content-Length", "-1"))
        if size < 0:
            raise ValueError("the upload needs a Content-Length")
    except ValueError as err:
        return web.json_response({"error": str(err)}, status=400)
    client = unlocked.client
    staged = paths.staged_path(client.state, cid, relative, size, last_modified)
    if staged in state.staging:
        return web.json_response({"error": _("this file is already being uploaded")},
                                 status=409)
    state.staging.add(staged)
    try:
        received = await _stage(request, staged)
        if received != size:
            paths.discard_staged(staged)
            return web.json_response({"error": _("the file did not arrive whole")},
                                     status=400)
        paths.set_mtime(staged, last_modified)
    except BaseException:
        state.staging.discard(staged)
        raise
    job = state.new_job("upload", relative, total=size)
    state.spawn(lambda: _upload(state, job, client, cid, relative=relative, staged=staged))
    return web.json_response({"job": job.id})


async def _stage(request: web.Request, staged: Path) -> int:
    """Write the request body to ``staged`` (0600), piece by piece; return its length."""
    received = 0
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        while piece := await request.content.read(_COPY_PIECE):
            received += len(piece)
            await asyncio.to_thread(_write_all, fd, piece)
    finally:
        os.close(fd)
    return received


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


async def _upload(state: UiState, job: Job, client: Client, cid: str, *, relative: str,
                  staged: Path) -> None:
    try:
        await _upload_staged(state, job, client, cid, relative=relative, staged=staged)
    finally:
        state.staging.discard(staged)


async def _upload_staged(state: UiState, job: Job, client: Client, cid: str, *,
                         relative: str, staged: Path) -> None:
    async with state.upload_lock:  # one upload at a time: bounded CPU and memory
        try:
            result = await upload_file(client, cid, staged,
                                       progress=lambda done, total: state.progress(
                                           job, done, total))
        except (ClientError, OSError) as err:
            message = client_failure(err) if isinstance(err, ClientError) else \
                _("The staged file cannot be read: %(reason)s") % {
                    "reason": (err.strerror or "error").lower()}
            state.finish(job, ok=False, message=message)
            return
        paths.remember_path(client.state, result.evidence_id, relative)
        paths.discard_staged(staged)
        resumed = result.resumed_from
        state.finish(job, ok=True, message=_("encrypted, signed and uploaded")
                     + (_(" (resumed)") if resumed else ""),
                     result={"evidence_id": result.evidence_id, "case_id": cid,
                             "plaintext_sha256": result.plaintext_sha256,
                             "resumed_from": result.resumed_from})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the prosecutor pages."""
    router.add_get("/cases", _cases)
    router.add_post("/cases", _create)
    router.add_get("/cases/{cid}", _case)
    router.add_post("/cases/{cid}/members", _add)
    router.add_post("/cases/{cid}/members/{pid}/remove", _remove)
    router.add_post("/cases/{cid}/files", _receive)
