"""The short who-did-what table ``exchange demo`` prints from the verified audit log.

Rows come from ``exchange.client.audit_report.build_rows`` over a verified
mirror; this module only words them for a prosecutor: actions in plain
language, routine reads counted rather than listed, repeats folded.
"""

from __future__ import annotations

from exchange.client.audit_report import ReportRow

__all__ = ["PLAIN_ACTIONS", "ROUTINE_READS", "report_lines"]

#: The audit actions in words a prosecutor reads (the report table's middle column).
PLAIN_ACTIONS = {
    "log.init": "started the audit log",
    "participant.enrol": "enrolled a participant",
    "participant.show": "looked up a participant's public keys",
    "case.create": "created the case",
    "case.show": "read the case's members and key epochs",
    "case.list": "listed their cases",
    "case.member_add": "added a member (case key shared)",
    "case.member_remove": "removed a member (new case key)",
    "case.epoch_add": "rotated the case key",
    "case.epoch_rotate": "rotated the case key (signed statement)",
    "case.envelope_add": "shared older case keys (signed statement)",
    "case.policy": "set the case policy (signed statement)",
    "case.statements": "checked the case's signed statements",
    "directory.read": "checked the directory's signed statements",
    "participant.key_change": "recorded a participant's new keys",
    "participant.suspend": "suspended a participant",
    "participant.reinstate": "reinstated a participant",
    "participant.role": "changed a participant's role",
    "admin.set": "changed the administrators",
    "server.url": "recorded the server's public URL",
    "case.feed": "followed the case's live feed",
    "envelope.get": "fetched their copy of the case key",
    "envelope.put": "shared an older case key",
    "upload.create": "started an upload",
    "upload.append": "sent encrypted bytes",
    "upload.status": "asked how far an upload got",
    "evidence.commit": "committed evidence (signed manifest)",
    "evidence.list": "listed the evidence",
    "evidence.show": "read an evidence record",
    "evidence.download": "downloaded encrypted evidence",
    "audit.read": "read the audit log",
}
#: Reads the client makes before most operations; the short report counts them instead.
ROUTINE_READS = frozenset({"case.show", "participant.show", "upload.status",
                           "case.statements", "directory.read"})


def report_lines(rows: list[ReportRow]) -> list[str]:
    """Return a short who-did-what table of ``rows`` for a person to read.

    Successful routine reads (:data:`ROUTINE_READS`, which the client makes
    before most operations) are counted rather than listed, and consecutive
    identical rows are folded into one; refusals are always listed.
    """
    folded: list[tuple[int, int, ReportRow, int]] = []
    routine = 0
    for row in rows:
        if row.outcome == "ok" and row.action in ROUTINE_READS:
            routine += 1
            continue
        if folded:
            first, _, last, count = folded[-1]
            if (last.actor, last.action, last.outcome, last.reason) == (
                    row.actor, row.action, row.outcome, row.reason):
                folded[-1] = (first, row.index, last, count + 1)
                continue
        folded.append((row.index, row.index, row, 1))
    lines = [f"{'entry':9} {'UTC':8}  {'who':17} {'did what':44} outcome"]
    for first, last_index, row, count in folded:
        where = f"#{first}" if count == 1 else f"#{first}-{last_index}"
        did = PLAIN_ACTIONS.get(row.action, row.action)
        if count > 1:
            did += f" (x{count})"
        outcome = "ok" if row.outcome == "ok" else f"REFUSED ({row.reason})"
        lines.append(f"{where:9} {row.time[11:19]}  {row.actor:17} {did:44} {outcome}")
    if routine:
        lines.append(f"(and {routine} routine reads of member lists and keys, all ok)")
    return lines
