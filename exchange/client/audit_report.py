"""Who did what, when: the audit report as a table, JSON, or one self-contained HTML page.

Input is the entries of a *verified* log (the mirror after ``verify_offline``
or ``verify_mirror``), so every row is backed by a signed checkpoint. Entries
are still untrusted text for rendering purposes: a participant chooses its
own id and case ids, so every value is escaped in HTML (``html.escape``) and
made printable in the terminal table. The page has inline CSS only, no
scripts, and a Content-Security-Policy that forbids loading anything.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from exchange.audit.checkpoint import Checkpoint
from exchange.audit.deliveries import Recipient
from exchange.audit.entry import PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE
from exchange.client.deliveries import DeliveryReport
from exchange.client.errors import ClientError

__all__ = [
    "PLAIN_ACTIONS",
    "FoldedRow",
    "ReportFilter",
    "ReportRow",
    "build_rows",
    "deliveries_html",
    "deliveries_page",
    "fold_rows",
    "parse_time_bound",
    "render_deliveries",
    "render_html",
    "render_human",
    "render_table",
    "report_json",
]

#: The audit actions in words a person reads (the CLI's and the demo's reports).
PLAIN_ACTIONS = {
    "log.init": "started the audit log",
    "participant.enrol": "enrolled a participant",
    "participant.list": "listed the participants",
    "participant.show": "looked up a participant's public keys",
    "participant.suspend": "suspended a participant",
    "participant.key_change": "changed a participant's keys",
    "case.create": "created the case",
    "case.show": "read the case's members and key epochs",
    "case.list": "listed their cases",
    "case.member_add": "added a member (case key shared)",
    "case.member_remove": "removed a member (new case key)",
    "case.epoch_add": "rotated the case key",
    "case.epoch_rotate": "rotated the case key (signed statement)",
    "case.envelope_add": "shared older case keys (signed statement)",
    "case.policy": "set the case policy (signed statement)",
    "case.erase": "asked to erase evidence now (owner)",
    "evidence.erase": "erased evidence (retention policy or an owner's request)",
    "envelope.shred": "deleted an old case key's envelopes (crypto-shredding)",
    "case.statements": "checked the case's signed statements",
    "directory.read": "checked the directory's signed statements",
    "participant.reinstate": "reinstated a participant",
    "participant.role": "changed a participant's role",
    "admin.set": "changed the administrators",
    "server.url": "recorded the server's public URL",
    "case.feed": "followed the case's live feed",
    "membership.feed": "followed the changes of their memberships",
    "envelope.get": "fetched their copy of the case key",
    "envelope.put": "shared an older case key",
    "upload.options": "asked what uploads the server supports",
    "upload.create": "started an upload",
    "upload.append": "sent encrypted bytes",
    "upload.status": "asked how far an upload got",
    "upload.terminate": "cancelled an upload",
    "evidence.commit": "committed evidence (signed manifest)",
    "evidence.list": "listed the evidence",
    "evidence.show": "read an evidence record",
    "evidence.download": "downloaded encrypted evidence",
    "audit.read": "read the audit log",
}

COLUMNS = ("index", "time", "actor", "action", "case", "object", "outcome", "reason")
_MAX_CELL = 48  # terminal table cells beyond this are cut with an ellipsis
_NO_CASE = "(no case)"


@dataclass(frozen=True, slots=True)
class ReportFilter:
    """Which entries to report: one case, times as entry-format strings [since, until),
    one actor, actions (a code such as ``evidence.download`` or a family such as
    ``evidence``) and one outcome (``ok`` or ``denied``)."""

    case: str | None = None
    since: str | None = None
    until: str | None = None
    actor: str | None = None
    action: str | None = None
    outcome: str | None = None

    def matches(self, case: str | None, time: str, *, actor: str = "", action: str = "",
                outcome: str = "") -> bool:
        """Whether an entry with these fields is in the report."""
        if self.case is not None and case != self.case:
            return False
        if self.actor is not None and actor != self.actor:
            return False
        if self.action is not None and action != self.action and not action.startswith(
                self.action + "."):
            return False
        if self.outcome is not None and outcome != self.outcome:
            return False
        if self.since is not None and time < self.since:
            return False
        return self.until is None or time < self.until


@dataclass(frozen=True, slots=True)
class ReportRow:
    """One entry, as the report shows it."""

    index: int
    time: str
    actor: str
    actor_role: str | None
    action: str
    case: str | None
    object: str | None
    outcome: str
    reason: str | None
    detail: str | None


def parse_time_bound(text: str) -> str:
    """Return an ISO 8601 date or date-time as the entries' UTC format, for comparisons.

    A date means its midnight UTC; a date-time without offset is UTC.
    Raises :class:`~exchange.client.errors.ClientError` naming the expected form.
    """
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ClientError(f"cannot read {text[:40]!r} as a time: expected an ISO 8601 date "
                          "such as 2025-03-01 or a date-time such as 2025-03-01T14:00:00Z"
                          ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_rows(entries: Iterable[bytes], flt: ReportFilter) -> list[ReportRow]:
    """Return the report rows for verified ``entries`` (all of the log, in order).

    Roles come from the enrolment and key-change entries seen on the way,
    which is why the whole log is read even when a filter selects a part.
    """
    roles: dict[str, str] = {}
    rows: list[ReportRow] = []
    for data in entries:
        entry = json.loads(data)
        details = entry["details"]
        if entry["outcome"] == "ok" and entry["action"] in (PARTICIPANT_ENROL,
                                                            PARTICIPANT_KEY_CHANGE):
            participant, role = details.get("participant"), details.get("role")
            if isinstance(participant, str) and isinstance(role, str):
                roles[participant] = role
        if not flt.matches(entry["case"], entry["time"], actor=entry["actor"],
                           action=entry["action"], outcome=entry["outcome"]):
            continue
        actor = entry["actor"]
        claimed = details.get("claimed_keyid")
        if actor == "-" and isinstance(claimed, str):
            actor = f"- (claimed {claimed})"
        detail = details.get("detail")
        rows.append(ReportRow(
            index=entry["index"], time=entry["time"], actor=actor,
            actor_role=roles.get(entry["actor"]), action=entry["action"], case=entry["case"],
            object=entry["object"], outcome=entry["outcome"], reason=entry["reason"],
            detail=detail if isinstance(detail, str) else None,
        ))
    return rows


def _printable(text: str) -> str:
    """Return ``text`` with anything a terminal could interpret shown as an escape."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii")
                   for c in text)


def _cell(row: ReportRow, column: str) -> str:
    if column == "actor" and row.actor_role:
        value = f"{row.actor} ({row.actor_role})"
    elif column == "time":
        value = row.time[:19].replace("T", " ")
    elif column == "reason" and row.reason is not None:
        value = row.reason + (f": {row.detail}" if row.detail else "")
    else:
        value = getattr(row, column)
    text = "" if value is None else _printable(str(value))
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 1] + "…"


def render_table(rows: Sequence[ReportRow]) -> str:
    """Return the rows as an aligned plain-text table (time in UTC), one line per entry."""
    cells = [[_cell(row, column) for column in COLUMNS] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(COLUMNS)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)).rstrip()]
    lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                 for r in cells)
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class FoldedRow:
    """Consecutive rows with the same actor, action, case, outcome and reason, as one."""

    first: int
    last: int
    row: ReportRow
    count: int

    @property
    def entries(self) -> str:
        """``#12`` or ``#12-40``."""
        return f"#{self.first}" if self.count == 1 else f"#{self.first}-{self.last}"

    @property
    def did(self) -> str:
        """The action in plain words, with ``(xN)`` for a folded run."""
        text = PLAIN_ACTIONS.get(self.row.action, self.row.action)
        return text + (f" (x{self.count})" if self.count > 1 else "")

    @property
    def outcome(self) -> str:
        """``ok`` or ``REFUSED (reason)``."""
        return "ok" if self.row.outcome == "ok" else f"REFUSED ({self.row.reason})"


def fold_rows(rows: Iterable[ReportRow], *, contiguous: bool = True) -> list[FoldedRow]:
    """Return ``rows`` with runs of identical actions folded into one.

    A client makes the same read many times in a row (an auditor's verify
    run reads the log hundreds of times): one line says it all. With
    ``contiguous`` a run must have consecutive indexes (in a filtered report,
    ``#9-29`` must not hide entries 10 to 28); without it, rows the caller
    dropped on purpose (routine reads) do not break a run.
    """
    folded: list[FoldedRow] = []
    for row in rows:
        if folded:
            last = folded[-1]
            if (row.index == last.last + 1 or not contiguous) and (
                    last.row.actor, last.row.action, last.row.case, last.row.outcome,
                    last.row.reason) == (row.actor, row.action, row.case, row.outcome,
                                         row.reason):
                folded[-1] = FoldedRow(last.first, row.index, last.row, last.count + 1)
                continue
        folded.append(FoldedRow(row.index, row.index, row, 1))
    return folded


def _fit(text: str, width: int) -> str:
    text = _printable(text)
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_human(rows: Sequence[ReportRow], *, width: int = 100) -> str:
    """Return the rows as a table for people: plain actions, runs folded, ``width`` columns.

    A line with the date (UTC) opens each day; then one line per folded
    run: entries, time, who, what they did (with the case or object, and the
    reason of a refusal), ``ok`` or ``REFUSED``. No line is wider than
    ``width`` (at least 60); long cells end in "…".
    """
    width = max(width, 60)
    folded = fold_rows(rows)
    where_w = max([len("entry")] + [len(f.entries) for f in folded])
    who = [(f.row.actor + (f" ({f.row.actor_role})" if f.row.actor_role else ""))
           for f in folded]
    who_w = min(max([len("who")] + [len(w) for w in who]), 20)
    did_w = width - where_w - 8 - who_w - len("REFUSED") - 8
    lines = [f"{'entry':<{where_w}}  {'time':<8}  {'who':<{who_w}}  {'did what':<{did_w}}  "
             "outcome"]
    day = ""
    for item, actor in zip(folded, who, strict=True):
        if item.row.time[:10] != day:
            day = item.row.time[:10]
            lines.append(f"{day} (UTC)")
        # A folded run shares its case; its objects may differ, so none is shown.
        target = item.row.case or (item.row.object if item.count == 1 else None)
        # The reason of a refusal comes before the target: a long object name (a tile
        # path) is what gets cut at the column's end, never why the request was refused.
        did = item.did + (f": {item.row.reason}" if item.row.outcome != "ok" else "")
        did += f" [{target}]" if target else ""
        outcome = "ok" if item.row.outcome == "ok" else "REFUSED"
        lines.append(f"{item.entries:<{where_w}}  {item.row.time[11:19]:<8}  "
                     f"{_fit(actor, who_w):<{who_w}}  {_fit(did, did_w):<{did_w}}  {outcome}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _log_json(checkpoint: Checkpoint, log_key: str) -> dict[str, object]:
    return {"origin": checkpoint.origin, "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode("ascii"), "log_key": log_key}


def report_json(rows: Sequence[ReportRow], checkpoint: Checkpoint, log_key: str,
                flt: ReportFilter) -> dict[str, object]:
    """Return the report as one JSON object: the verified checkpoint, filters and entries."""
    return {
        "checkpoint": _log_json(checkpoint, log_key),
        "filter": asdict(flt),
        "entries": [asdict(row) for row in rows],
        "refused": sum(1 for row in rows if row.outcome != "ok"),
    }


_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:2em auto;
max-width:70em;padding:0 1em;color:#1b1b1b}
h1{font-size:1.5em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:2em;
border-bottom:1px solid #ccc;padding-bottom:.2em}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:.15em 1em}
dl.meta dt{font-weight:600}dl.meta dd{margin:0;font-family:ui-monospace,monospace;
word-break:break-all}
ol.timeline{list-style:none;padding-left:0;border-left:3px solid #8aa;margin-left:.5em}
ol.timeline li{position:relative;padding:.3em 0 .5em 1.2em}
ol.timeline li::before{content:"";position:absolute;left:-.5em;top:.75em;width:.7em;
height:.7em;border-radius:50%;background:#8aa}
ol.timeline li.denied::before{background:#c0392b}
li.denied .outcome{color:#c0392b;font-weight:600}
.time{font-family:ui-monospace,monospace;color:#555}.idx{color:#888;font-size:.9em}
.action{font-weight:600}code{font-family:ui-monospace,monospace;word-break:break-all}
.summary{color:#444}
@media print{ol.timeline li{break-inside:avoid}}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _item(row: ReportRow) -> str:
    actor = _e(row.actor) + (f" <span class=summary>({_e(row.actor_role)})</span>"
                             if row.actor_role else "")
    parts = [
        f'<span class=time>{_e(row.time)}</span> <span class=idx>#{row.index}</span><br>',
        f"{actor} &middot; <span class=action>{_e(row.action)}</span>",
    ]
    if row.object is not None:
        parts.append(f" on <code>{_e(row.object)}</code>")
    if row.outcome == "ok":
        parts.append(" &middot; <span class=outcome>ok</span>")
    else:
        parts.append(f" &middot; <span class=outcome>refused: {_e(row.reason)}</span>")
        if row.detail:
            parts.append(f"<br><span class=summary>{_e(row.detail)}</span>")
    css = "denied" if row.outcome != "ok" else "ok"
    return f"<li class={css}>{''.join(parts)}</li>"


def _page_head(title: str) -> list[str]:
    """Return the opening lines of a self-contained page (no scripts, nothing loaded)."""
    return [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta http-equiv="Content-Security-Policy" '
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1>",
    ]


def render_html(rows: Sequence[ReportRow], checkpoint: Checkpoint, log_key: str,
                flt: ReportFilter, *, generated: str) -> str:
    """Return one self-contained HTML page: the verified checkpoint, then a timeline per case."""
    by_case: dict[str, list[ReportRow]] = {}
    for row in rows:
        by_case.setdefault(row.case if row.case is not None else _NO_CASE, []).append(row)
    refused = sum(1 for row in rows if row.outcome != "ok")
    scope = [f"case {flt.case}" if flt.case else "all cases"]
    if flt.since:
        scope.append(f"from {flt.since}")
    if flt.until:
        scope.append(f"before {flt.until}")
    meta = [
        ("log", checkpoint.origin), ("tree size", str(checkpoint.size)),
        ("root hash (base64)", base64.b64encode(checkpoint.root).decode("ascii")),
        ("log key", log_key), ("scope", ", ".join(scope)), ("generated", generated),
    ]
    out = [
        *_page_head(f"Audit report: {checkpoint.origin}"),
        f"<p class=summary>{len(rows)} entries, {refused} refused attempts, "
        f"{len(by_case)} timelines. Every entry below was verified against the signed "
        "checkpoint shown here (signature, hash chain, Merkle tree, request signatures).</p>",
        "<dl class=meta>",
        *(f"<dt>{_e(name)}</dt><dd>{_e(value)}</dd>" for name, value in meta),
        "</dl>",
    ]
    for case in sorted(by_case, key=lambda c: (c == _NO_CASE, c)):
        items = by_case[case]
        denied = sum(1 for row in items if row.outcome != "ok")
        title = "Not tied to a case" if case == _NO_CASE else f"Case {case}"
        out.append(f"<section><h2>{_e(title)}</h2>")
        out.append(f"<p class=summary>{len(items)} entries, {denied} refused</p>")
        out.append("<ol class=timeline>")
        out.extend(_item(row) for row in items)
        out.append("</ol></section>")
    if not rows:
        out.append("<p>No entries match.</p>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _recipient_state(r: Recipient, *, visible: bool) -> str:
    """Return one recipient's delivery state in words (UTC times, entry indexes)."""
    if r.pulled:
        text = f"pulled {(r.pulled_at or '')[:19].replace('T', ' ')} UTC (#{r.pulled_index})"
    elif visible:
        text = "not pulled" + (f" (served in part, {r.downloads} download(s))"
                               if r.downloads else "")
    else:
        text = "not visible to you"
    if r.removed:
        where = f", #{r.removed_index}" if r.removed_index is not None else ""
        text += f"; removed from the case{where}"
    return text


def render_deliveries(report: DeliveryReport) -> str:
    """Return the deliveries as text: one block per item, one line per recipient.

    When the report is not complete, only the reader's own pulls are
    visible; the others are said to be not visible (never "not pulled").
    """
    lines: list[str] = []
    for delivery, evidence in report.items:
        u = delivery.upload
        name = "" if evidence is None else "  " + _printable(
            f"{evidence.manifest.folder}/{evidence.manifest.file_name}"
            if evidence.manifest.folder else evidence.manifest.file_name)
        where = f"#{u.index}" if u.position_verified else f"#{u.index}, named by the server"
        lines.append(f"{_printable(u.evidence_id)}{name}")
        lines.append(f"    uploaded {(u.time or '')[:19].replace('T', ' ')} UTC by "
                     f"{_printable(u.uploader)} ({where}); "
                     f"{len(delivery.recipients)} intended recipient(s)")
        for r in delivery.recipients:
            visible = report.visible(r.participant)
            who = _printable(r.participant) + (f" ({r.role})" if r.role else "")
            lines.append(f"    {who:<32} {_recipient_state(r, visible=visible)}")
        for r in delivery.others:
            who = _printable(r.participant) + (f" ({r.role})" if r.role else "")
            lines.append(f"    {who:<32} {_recipient_state(r, visible=True)}; not an "
                         "intended recipient (joined after the upload)")
    return "\n".join(lines) + ("\n" if lines else "")


def deliveries_html(report: DeliveryReport) -> str:
    """Return the deliveries as an HTML section (every value escaped)."""
    out = [f"<section><h2>Deliveries: case {_e(report.case_id)}</h2>"]
    if not report.complete:
        out.append(f"<p class=summary>Incomplete: {_e(report.limits)}</p>")
    out.append("<table><tr><th>evidence</th><th>uploaded</th><th>recipient</th>"
               "<th>state</th></tr>")
    for delivery, _ in report.items:
        u = delivery.upload
        for r in (*delivery.recipients, *delivery.others):
            state = _recipient_state(r, visible=report.visible(r.participant))
            if not r.intended:
                state += "; not an intended recipient"
            out.append(f"<tr><td><code>{_e(u.evidence_id)}</code></td><td>{_e(u.time)} "
                       f"by {_e(u.uploader)}</td><td>{_e(r.participant)}</td>"
                       f"<td>{_e(state)}</td></tr>")
    out.append("</table></section>")
    return "\n".join(out)


def deliveries_page(report: DeliveryReport, checkpoint: Checkpoint) -> str:
    """Return one self-contained HTML page with the deliveries of one case."""
    out = [*_page_head(f"Deliveries: {checkpoint.origin}"),
           f"<p class=summary>From the audit log verified at tree size {checkpoint.size}; "
           "recipients are the case's members at upload time by its signed statements.</p>",
           deliveries_html(report), "</body></html>"]
    return "\n".join(out) + "\n"
