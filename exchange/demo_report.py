"""The short who-did-what table ``exchange demo`` prints from the verified audit log.

Rows come from ``exchange.client.audit_report.build_rows`` over a verified
mirror; this module only words them for a prosecutor: actions in plain
language, routine reads counted rather than listed, repeats folded.
"""

from __future__ import annotations

from exchange.client.audit_report import PLAIN_ACTIONS, ReportRow, fold_rows

__all__ = ["PLAIN_ACTIONS", "ROUTINE_READS", "report_lines"]

#: Reads the client makes before most operations; the short report counts them instead.
ROUTINE_READS = frozenset({"case.show", "participant.show", "upload.status",
                           "case.statements", "directory.read"})


def report_lines(rows: list[ReportRow]) -> list[str]:
    """Return a short who-did-what table of ``rows`` for a person to read.

    Successful routine reads (:data:`ROUTINE_READS`, which the client makes
    before most operations) are counted rather than listed, and consecutive
    identical rows are folded into one; refusals are always listed.
    """
    kept: list[ReportRow] = []
    routine = 0
    for row in rows:
        if row.outcome == "ok" and row.action in ROUTINE_READS:
            routine += 1
            continue
        kept.append(row)
    lines = [f"{'entry':9} {'UTC':8}  {'who':17} {'did what':44} outcome"]
    for item in fold_rows(kept, contiguous=False):
        lines.append(f"{item.entries:9} {item.row.time[11:19]}  {item.row.actor:17} "
                     f"{item.did:44} {item.outcome}")
    if routine:
        lines.append(f"(and {routine} routine reads of member lists and keys, all ok)")
    return lines
