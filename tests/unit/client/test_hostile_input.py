"""Pure checks of what the server sends: ids, manifest file names, the live feed's parser."""

from __future__ import annotations

import pytest

from exchange.client.errors import MalformedReply
from exchange.client.feed import MAX_EVENT_BYTES, EventParser, _parse
from exchange.client.ids import (
    CUSTODY_SUFFIX,
    check_case_id,
    check_evidence_id,
    check_participant_id,
    check_upload_id,
    local_file_name,
    local_key,
)
from exchange.client.problems import printable
from exchange.crypto.manifest import safe_file_name


@pytest.mark.parametrize("value", [
    "", ".", "..", "../x", "/etc/passwd", "a/b", "a\\b", "%2e%2e", "ev 1", "ev\x00", "ev\n",
    "ev-\x1b[2J", "\u202eev", "x" * 65, None, 7, ["ev"], "évidence", ".hidden", "-dash",
])
def test_ids_that_are_not_well_formed_are_refused(value: object) -> None:
    for check in (check_evidence_id, check_case_id, check_upload_id, check_participant_id):
        if check is check_upload_id and value in ("-dash",):
            continue  # upload ids are base64url tokens: a leading dash is theirs
        with pytest.raises(MalformedReply) as refused:
            check(value, "testing")
        assert str(refused.value).isprintable() and len(str(refused.value)) < 300


def test_well_formed_ids_pass() -> None:
    assert check_evidence_id("ev-0123456789abcdef01234567") == "ev-0123456789abcdef01234567"
    assert check_case_id("case-0123456789abcdef01234567").startswith("case-")
    assert check_upload_id("aB3_-x" * 5) == "aB3_-x" * 5
    assert check_participant_id("alice.fr@om") == "alice.fr@om"


def test_local_keys_are_hashes_never_the_id() -> None:
    key = local_key("evidence", "../../etc/passwd")
    assert len(key) == 32 and all(c in "0123456789abcdef" for c in key)


@pytest.mark.parametrize(("name", "expected"), [
    ("report.pdf", "report.pdf"),
    ("../../etc/passwd", "_.._etc_passwd"),
    ("/abs/path.txt", "_abs_path.txt"),
    ("..", "ev-1"),
    (".bashrc", "bashrc"),
    ("a\x1b[2Jb\u202ec.txt", "a_[2Jb_c.txt"),
    ("x.custody.json", "x.custody.json_"),
    ("   ", "ev-1"),
    ("é" * 200, "é" * 85),
])
def test_manifest_file_names_are_made_safe(name: str, expected: str) -> None:
    local = local_file_name(name, "ev-1")
    assert local == expected
    assert safe_file_name(local) == local and not local.endswith(CUSTODY_SUFFIX)
    assert len(local.encode()) <= 170


def test_the_feed_parser_joins_data_lines_and_ignores_the_rest() -> None:
    parser = EventParser("test")
    events = parser.feed(b": keep-alive\nid: 5\nevent: evidence\ndata: {\"a\":\ndata: 1}\n"
                         b"retry: 10\nunknown: x\n\nid: 6\r\ndata: {}\r\n")
    assert events == [{"id": "5", "event": "evidence", "data": "{\"a\":\n1}"}]
    assert parser.feed(b"\r\n") == [{"id": "6", "data": "{}"}]
    event = _parse("case-1", events[0])
    assert event is not None and event.data == {"a": 1} and event.kind == "evidence"


@pytest.mark.parametrize("fields", [
    {"id": "1" * 20, "data": "{}"}, {"id": "-1", "data": "{}"}, {"id": "١", "data": "{}"},
    {"id": "1", "data": "[1]"}, {"id": "1", "data": "[" * 100_000}, {"data": "{}"},
])
def test_feed_events_with_bad_ids_or_data_are_dropped(fields: dict[str, str]) -> None:
    assert _parse("case-1", fields) is None


@pytest.mark.parametrize("stream", [
    b"data: " + b"x" * MAX_EVENT_BYTES + b"\n",  # one huge line
    b"data: x\n" * (MAX_EVENT_BYTES // 8 + 1),  # endless data lines, no blank line
    b"x" * (MAX_EVENT_BYTES + 1),  # no newline at all
])
def test_the_feed_parser_refuses_events_past_the_bound(stream: bytes) -> None:
    parser = EventParser("following case 'c'")
    with pytest.raises(MalformedReply, match="larger than 65536 bytes"):
        for start in range(0, len(stream), 4096):
            parser.feed(stream[start:start + 4096])


def test_printable_escapes_terminal_controls_and_keeps_text() -> None:
    text = "Opération \x1b]0;t\x07\x1b[2J\x9b1m\u202e\u2028 fin"
    shown = printable(text)
    assert shown.isprintable() and "Opération" in shown and "fin" in shown
    assert "\\x1b" in shown and "\\x9b" in shown and "\\u202e" in shown
