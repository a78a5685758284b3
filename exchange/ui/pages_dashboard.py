"""Coordination-centre dashboard: live evidence from the server's feeds, "pull all", badges.

While the dashboard is open the UI follows the live feed of every case the
participant belongs to (``exchange.client.follow``), and the membership feed
(``exchange.client.follow_memberships``) so a case shared meanwhile is followed
too, once its signed statements confirm the membership; a new evidence event is
opened and its manifest verified with the client library
(``open_evidence``), then pushed to the page over the UI's own event stream,
so it appears within about a second of the commit. "Pull all" runs the
library's ``pull`` (every check before a file is kept, custody records
beside the files) with a progress bar per file; each pulled file gets a
badge saying what was verified, each failure says why.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp import web

from exchange.client.cases import CaseSummary, list_cases
from exchange.client.download import Evidence, PulledFile, list_evidence, open_evidence
from exchange.client.errors import ClientError
from exchange.client.feed import FeedEvent, follow, follow_memberships
from exchange.client.pull import pull
from exchange.client.session import Client
from exchange.ui.common import client_failure, flash, render, require_unlocked, state_of
from exchange.ui.i18n import format_size, format_time
from exchange.ui.i18n import gettext as _
from exchange.ui.state import Job, UiState

__all__ = ["add_routes", "evidence_row"]


def evidence_row(evidence: Evidence, title: str | None) -> dict[str, Any]:
    """Return what the page shows of one verified evidence record."""
    m = evidence.manifest
    return {"type": "evidence", "evidence_id": evidence.evidence_id, "case_id": m.case_id,
            "case_title": title or m.case_id, "file_name": m.file_name,
            "size": format_size(m.plaintext_size), "uploader": m.uploader,
            "fingerprint": evidence.uploader.fingerprint,
            "uploaded_at": format_time(m.uploaded_at),
            "plaintext_sha256": m.plaintext_sha256,
            "badge": "signed", "badge_text": _("signature verified")}


async def _rows(client: Client) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for case in await list_cases(client):
        try:
            for item in await list_evidence(client, case.case_id):
                rows.append(evidence_row(item, case.title))
        except ClientError as err:
            problems.append(f"{case.case_id}: {client_failure(err)}")
    return rows, problems


def _follow_all(state: UiState, client: Client, cases: list[CaseSummary]) -> None:
    """Follow the feed of each case not followed yet (events go to the page)."""
    titles = {case.case_id: case.title for case in cases}

    async def on_event(event: FeedEvent) -> None:
        if event.kind != "evidence":
            state.publish({"type": "membership", "case_id": event.case_id})
            return
        evidence_id = str(event.data.get("evidence_id", ""))[:64]
        try:
            reply = await client.call("GET", f"/v1/evidence/{evidence_id}",
                                      doing=f"reading evidence {evidence_id}")
            evidence = await open_evidence(client, reply.object("the evidence record"))
        except ClientError as err:
            state.publish({"type": "evidence-failed", "evidence_id": evidence_id,
                           "case_id": event.case_id, "message": client_failure(err)})
            return
        state.publish(evidence_row(evidence, titles.get(event.case_id)))

    for cid in titles:
        task = state.followed.get(cid)
        if task is not None and not task.done():
            continue

        async def run(cid: str = cid) -> None:
            try:
                await follow(client, cid, on_event)
            except ClientError as err:
                state.publish({"type": "feed-failed", "case_id": cid,
                               "message": client_failure(err)})

        state.followed[cid] = state.spawn(run)


#: ``UiState.followed`` key of the membership feed (no case id is empty).
_MEMBERSHIPS = ""


def _follow_memberships(state: UiState, client: Client) -> None:
    """Follow the membership events naming this participant (once per unlock).

    A case shared while the dashboard is open is followed at once and its
    evidence shown. The event is only the server's word: ``list_cases`` replays
    each listed case's signed statements and leaves out one that does not make
    this participant a member, so only a verified membership is followed.
    """
    task = state.followed.get(_MEMBERSHIPS)
    if task is not None and not task.done():
        return

    async def on_change(event: FeedEvent) -> None:
        try:
            cases = await list_cases(client)
            _follow_all(state, client, cases)  # feeds first: nothing new falls in between
            for case in cases:
                if case.case_id == event.case_id:
                    for item in await list_evidence(client, case.case_id):
                        state.publish(evidence_row(item, case.title))
        except ClientError as err:
            state.publish({"type": "feed-failed", "case_id": event.case_id,
                           "message": client_failure(err)})
            return
        state.publish({"type": "membership", "case_id": event.case_id})

    async def run() -> None:
        try:
            await follow_memberships(client, on_change)
        except ClientError as err:
            state.publish({"type": "feed-failed", "case_id": "", "message": client_failure(err)})

    state.followed[_MEMBERSHIPS] = state.spawn(run)


async def _dashboard(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    state = state_of(request)
    client = unlocked.client
    try:
        _follow_memberships(state, client)
        cases = await list_cases(client)
        _follow_all(state, client, cases)
        rows, problems = await _rows(client)
    except ClientError as err:
        cases, rows, problems = [], [], [client_failure(err)]
    return render(request, "dashboard.html", cases=cases, rows=rows, problems=problems,
                  pull_dir=str(state.settings.pull_dir))


async def _rows_json(request: web.Request) -> web.StreamResponse:
    """The dashboard's rows as JSON: the page merges them after (re)connecting its stream."""
    unlocked = require_unlocked(request)
    try:
        rows, problems = await _rows(unlocked.client)
    except ClientError as err:
        rows, problems = [], [client_failure(err)]
    return web.json_response({"rows": rows, "problems": problems})


async def _pull(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    state = state_of(request)
    form = await request.post()
    dest = Path(str(form.get("dest", "")).strip() or state.settings.pull_dir).expanduser()
    if not dest.is_absolute():
        flash(request, "error", _("Give the destination folder as a full path."))
        raise web.HTTPSeeOther("/dashboard")
    overall = state.new_job("pull-all", str(dest))
    state.spawn(lambda: _pull_all(state, overall, unlocked.client, dest))
    if request.headers.get("Accept", "").startswith("application/json"):
        return web.json_response({"job": overall.id})
    flash(request, "info", _("Pulling into %(dest)s.") % {"dest": str(dest)})
    raise web.HTTPSeeOther("/dashboard")


async def _pull_all(state: UiState, overall: Job, client: Client, dest: Path) -> None:
    per_file: dict[str, Job] = {}

    def progress(evidence: Evidence) -> Any:
        job = state.new_job("pull", evidence.manifest.file_name,
                            total=evidence.manifest.ciphertext_size)
        job.result = {"evidence_id": evidence.evidence_id}
        per_file[evidence.evidence_id] = job
        return lambda done, total: state.progress(job, done, total)

    def on_file(pulled: PulledFile) -> None:
        job = per_file.get(pulled.evidence_id)
        result = {"evidence_id": pulled.evidence_id, "path": str(pulled.path),
                  "custody": str(pulled.custody_path)}
        state.publish({"type": "pulled", **result, "badge": "verified",
                       "badge_text": _("verified: signature, both hashes, custody record")})
        if job is not None:
            state.finish(job, ok=True, message=_("verified and kept"), result=result)

    async with state.pull_lock:
        try:
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
            report = await pull(client, None, dest, progress=progress, on_file=on_file)
        except (ClientError, OSError) as err:
            message = client_failure(err) if isinstance(err, ClientError) else str(err)
            state.finish(overall, ok=False, message=message)
            return
    for evidence_id, failure in report.failed:
        text = client_failure(failure)
        state.publish({"type": "evidence-failed", "evidence_id": evidence_id, "message": text})
        job = per_file.get(evidence_id)
        if job is not None:
            state.finish(job, ok=False, message=text)
    summary = _("%(pulled)d pulled, %(skipped)d already pulled, %(failed)d failed") % {
        "pulled": len(report.pulled), "skipped": report.skipped, "failed": len(report.failed)}
    state.finish(overall, ok=not report.failed, message=summary,
                 result={"pulled": len(report.pulled), "failed": len(report.failed)})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the coordination-centre pages."""
    router.add_get("/dashboard", _dashboard)
    router.add_get("/dashboard/rows", _rows_json)
    router.add_post("/pull", _pull)
