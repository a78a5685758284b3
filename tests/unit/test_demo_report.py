"""``exchange.demo_report.report_lines``: the demo's short who-did-what table."""

from __future__ import annotations

from exchange.client.audit_report import ReportRow
from exchange.demo_report import PLAIN_ACTIONS, report_lines


def _row(index: int, actor: str, action: str, outcome: str = "ok",
         reason: str | None = None) -> ReportRow:
    return ReportRow(index=index, time=f"2026-01-02T03:04:{index:02}.000000Z", actor=actor,
                     actor_role=None, action=action, case="case-1", object=None,
                     outcome=outcome, reason=reason, detail=None)


def test_repeats_fold_routine_reads_are_counted_and_refusals_always_listed() -> None:
    rows = [
        _row(1, "nl", "case.create"),
        _row(2, "nl", "case.show"),
        _row(3, "nl", "case.member_add"),
        _row(4, "nl", "case.show"),
        _row(5, "nl", "case.member_add"),
        _row(6, "de", "case.show", "denied", "not-a-member"),
        _row(7, "de", "evidence.list", "denied", "not-a-member"),
        _row(8, "de", "evidence.list", "denied", "not-a-member"),
    ]
    lines = report_lines(rows)
    assert lines[0].split() == ["entry", "UTC", "who", "did", "what", "outcome"]
    body = lines[1:-1]
    assert body[0].startswith("#1 ") and PLAIN_ACTIONS["case.create"] in body[0]
    assert body[1].startswith("#3-5 ") and "added a member (case key shared) (x2)" in body[1]
    # A refused routine read is a refusal: listed, never folded into the count.
    assert body[2].startswith("#6 ") and body[2].endswith("REFUSED (not-a-member)")
    assert body[3].startswith("#7-8 ") and "(x2)" in body[3] and "03:04:07" in body[3]
    assert len(body) == 4
    assert lines[-1] == "(and 2 routine reads of member lists and keys, all ok)"


def test_unknown_actions_show_their_name_and_no_count_line_without_routine_reads() -> None:
    lines = report_lines([_row(9, "aud", "future.action")])
    assert len(lines) == 2 and "future.action" in lines[1] and lines[1].endswith("ok")
