"""Auditor pages: verify the log with progress, a filtered timeline, exports, receipts.

Verification is the library's ``verify_mirror`` (the mirror lives where the
CLI keeps it, ``<state>/audit``), the rows are ``build_rows`` over the
verified mirror, exports are ``render_html``/``report_json`` of the rows on
screen, receipts come from ``fetch_receipt`` and dropped receipts (or the
receipts inside a dropped custody record, completed with their entry from the
verified mirror) are checked with ``check_receipt`` against the pinned log
key, never a key found in the dropped file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from exchange.audit.checkpoint import Checkpoint
from exchange.client.audit import ClientLogFetcher, Progress, verify_mirror, verify_offline
from exchange.client.audit_mirror import AUDIT_SUBDIR, AuditMirror
from exchange.client.audit_receipt import (
    check_receipt,
    complete_receipt,
    describe_entry,
    fetch_receipt,
)
from exchange.client.audit_report import (
    ReportFilter,
    ReportRow,
    build_rows,
    parse_time_bound,
    render_html,
    report_json,
)
from exchange.client.custody import CUSTODY_FORMATS
from exchange.client.errors import ClientError
from exchange.errors import ExchangeError
from exchange.ui.common import client_failure, render, require_unlocked, state_of
from exchange.ui.i18n import gettext as _
from exchange.ui.state import Job, UiState, Unlocked

__all__ = ["add_routes"]

_MAX_DROP_BYTES = 1024 * 1024
_OUTCOMES = ("ok", "denied")


@dataclass(frozen=True, slots=True)
class View:
    """The timeline's filters, read from the query string."""

    case: str = ""
    actor: str = ""
    action: str = ""
    outcome: str = ""
    since: str = ""
    until: str = ""

    @classmethod
    def from_query(cls, query: Any) -> View:
        """Return the filters in ``query`` (unknown outcomes are ignored)."""
        values = {name: str(query.get(name, "")).strip()[:200] for name in cls.__slots__}
        if values["outcome"] not in _OUTCOMES:
            values["outcome"] = ""
        return cls(**values)

    def report_filter(self) -> ReportFilter:
        """Return the library's filter (case and time); raises ClientError for a bad time."""
        return ReportFilter(case=self.case or None,
                            since=parse_time_bound(self.since) if self.since else None,
                            until=parse_time_bound(self.until) if self.until else None)

    def keep(self, row: ReportRow) -> bool:
        """Whether ``row`` matches the actor, action and outcome filters."""
        return ((not self.actor or self.actor in row.actor)
                and (not self.action or self.action in row.action)
                and (not self.outcome or row.outcome == self.outcome))

    def query(self) -> str:
        """Return the filters as a query string (for export links)."""
        return urlencode({k: getattr(self, k) for k in self.__slots__ if getattr(self, k)})


def _mirror(state: UiState, unlocked: Unlocked) -> AuditMirror:
    return AuditMirror(state.settings.state_dir(unlocked.client.identity.id) / AUDIT_SUBDIR)


def _log_key(state: UiState) -> str:
    if not state.settings.log_key:
        raise ClientError(_("No trust anchor is pinned."),
                          _("Start the interface with --trust or EXCHANGE_TRUST."))
    return state.settings.log_key.strip()


def _verified(mirror: AuditMirror, log_key: str) -> tuple[Checkpoint, list[ReportRow]] | None:
    """Return the mirror's checkpoint and all rows, re-verified offline (None: no mirror yet)."""
    if mirror.checkpoint() is None:
        return None
    checkpoint, findings = verify_offline(mirror, log_key)
    if findings:
        raise ClientError(_("The local copy of the audit log does not verify."),
                          _("Verify the log again."))
    return checkpoint, build_rows(mirror.entries(checkpoint.size, committed=True),
                                  ReportFilter())


def _selected(request: web.Request) -> tuple[View, Checkpoint | None, list[ReportRow],
                                             ReportFilter]:
    state = state_of(request)
    unlocked = require_unlocked(request)
    view = View.from_query(request.query)
    flt = view.report_filter()
    found = _verified(_mirror(state, unlocked), _log_key(state))
    if found is None:
        return view, None, [], flt
    checkpoint, rows = found
    return view, checkpoint, [r for r in rows if flt.matches(r.case, r.time) and view.keep(r)], \
        flt


async def _audit(request: web.Request) -> web.StreamResponse:
    error = None
    try:
        view, checkpoint, rows, _flt = _selected(request)
    except ClientError as err:
        view, checkpoint, rows, error = View.from_query(request.query), None, [], \
            client_failure(err)
    actors = sorted({r.actor for r in rows})
    return render(request, "audit.html", view=view, checkpoint=checkpoint, rows=rows,
                  error=error, actors=actors, refused=sum(r.outcome != "ok" for r in rows),
                  export_query=view.query())


async def _verify(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    state = state_of(request)
    job = state.new_job("verify", _("Verify the audit log"))
    state.spawn(lambda: _run_verify(state, job, unlocked))
    return web.json_response({"job": job.id})


async def _run_verify(state: UiState, job: Job, unlocked: Unlocked) -> None:
    client = unlocked.client
    mirror = _mirror(state, unlocked)

    def stage(text: str) -> None:
        state.progress(job, job.done, job.total, message=text)

    try:
        log_key = _log_key(state)
        client.trusted_checkpoint()  # checks the pinned log key first, as the CLI does
        run = await verify_mirror(
            ClientLogFetcher(client), mirror, log_key,
            progress=Progress(stage=stage,
                              advance=lambda done, total: state.progress(job, done, total)))
        if run.ok and mirror.checkpoint() is not None:
            await client.verify_checkpoint(mirror.checkpoint() or b"")
    except (ClientError, ExchangeError) as err:
        text = client_failure(err) if isinstance(err, ClientError) else str(err)
        state.finish(job, ok=False, message=text)
        return
    if not run.ok:
        findings = "; ".join(str(f) for f in run.findings[:5])
        state.finish(job, ok=False, message=_("The audit log failed verification: %(n)d "
                                              "problem(s). %(findings)s")
                     % {"n": len(run.findings), "findings": findings})
        return
    state.finish(job, ok=True, message=_("%(n)d entries verified; no errors were found.")
                 % {"n": run.entries}, result={"entries": run.entries})


def _attachment(body: bytes, name: str, content_type: str) -> web.Response:
    return web.Response(body=body, content_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{name}"'})


async def _export(request: web.Request) -> web.StreamResponse:
    state = state_of(request)
    kind = request.match_info["kind"]
    try:
        _view, checkpoint, rows, flt = _selected(request)
    except ClientError as err:
        return web.Response(status=409, text=client_failure(err))
    if checkpoint is None:
        return web.Response(status=409, text=_("Verify the log first."))
    log_key = _log_key(state)
    if kind == "html":
        generated = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        page = render_html(rows, checkpoint, log_key, flt, generated=generated)
        return _attachment(page.encode(), "audit-report.html", "text/html")
    doc = report_json(rows, checkpoint, log_key, flt)
    return _attachment(json.dumps(doc, indent=2, ensure_ascii=False).encode(),
                       "audit-report.json", "application/json")


async def _receipt(request: web.Request) -> web.StreamResponse:
    unlocked = require_unlocked(request)
    state = state_of(request)
    index = int(request.match_info["index"])
    try:
        data, _checked = await fetch_receipt(ClientLogFetcher(unlocked.client), index,
                                             _log_key(state), mirror=_mirror(state, unlocked))
    except ClientError as err:
        return web.Response(status=409, text=client_failure(err))
    return _attachment(data, f"entry-{index}.receipt", "text/plain")


def _check_one(data: bytes, log_key: str, mirror: AuditMirror) -> dict[str, Any]:
    try:
        checked = check_receipt(complete_receipt(data, mirror), log_key)
    except ClientError as err:
        return {"ok": False, "message": client_failure(err)}
    return {"ok": True, "index": checked.index, "size": checked.checkpoint.size,
            "origin": checked.checkpoint.origin, "lines": describe_entry(checked.entry),
            "outcome": checked.entry.outcome}


async def _check(request: web.Request) -> web.StreamResponse:
    """Check a dropped receipt, or the receipts inside a dropped custody record."""
    unlocked = require_unlocked(request)
    state = state_of(request)
    mirror = _mirror(state, unlocked)
    data = await request.content.read(_MAX_DROP_BYTES + 1)
    if len(data) > _MAX_DROP_BYTES:
        return web.json_response({"results": [{"ok": False, "message": _(
            "The file is larger than 1 MiB: it is neither a receipt nor a custody record.")}]})
    try:
        log_key = _log_key(state)
    except ClientError as err:
        return web.json_response({"results": [{"ok": False, "message": client_failure(err)}]})
    results = []
    if data.lstrip().startswith(b"{"):
        try:
            record = json.loads(data)
        except ValueError:
            record = None
        if not isinstance(record, dict) or record.get("format") not in CUSTODY_FORMATS:
            return web.json_response({"results": [{"ok": False, "message": _(
                "This JSON file is not a custody record.")}]})
        for part in ("upload", "download"):
            found = record.get(part)
            receipt = found.get("receipt") if isinstance(found, dict) else None
            if not isinstance(receipt, str):
                results.append({"ok": False, "what": part,
                                "message": _("The record holds no receipt for this step.")})
                continue
            results.append({"what": part, **_check_one(receipt.encode(), log_key, mirror)})
    else:
        results.append(_check_one(data, log_key, mirror))
    return web.json_response({"results": results})


def add_routes(router: web.UrlDispatcher) -> None:
    """Register the auditor pages."""
    router.add_get("/audit", _audit)
    router.add_post("/audit/verify", _verify)
    router.add_get("/audit/export.{kind:html|json}", _export)
    router.add_get(r"/audit/receipt/{index:\d{1,12}}", _receipt)
    router.add_post("/audit/check", _check)

