"""Secrets never reach the logs."""

from __future__ import annotations

import io
import json

import structlog

from exchange.logsetup import REDACTED, configure_logging


def test_redacts_secret_fields_and_bytes() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.get_logger("t").info(
        "request_completed",
        route="/v1/cases",
        keyid="prosecutor-nl-01",
        passphrase="hunter2",
        signing_key="c2VjcmV0",
        signature="sig1=:AAAA:",
        body=b"\x00plaintext",
        headers={"Authorization": "x", "Content-Type": "application/json"},
        status=200,
    )
    line = json.loads(out.getvalue())
    assert line["event"] == "request_completed"
    assert line["route"] == "/v1/cases" and line["status"] == 200
    assert line["keyid"] == "prosecutor-nl-01"
    for field in ("passphrase", "signing_key", "signature", "body"):
        assert line[field] == REDACTED, field
    assert line["headers"] == {"Authorization": REDACTED, "Content-Type": "application/json"}
    assert "hunter2" not in out.getvalue() and "c2VjcmV0" not in out.getvalue()


class _Writes(io.StringIO):
    """A stream that records each ``write`` call it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        return super().write(text)


def test_each_line_is_one_write_with_its_newline() -> None:
    # Several server processes may append to one file: a line written in two calls
    # (text, then newline) can be split by another process's line.
    out = _Writes()
    configure_logging(stream=out)
    structlog.get_logger("t").info("request_handled", status=200)
    structlog.get_logger("t").info("request_handled", status=404)
    assert len(out.calls) == 2
    assert all(call.endswith("\n") and call.count("\n") == 1 for call in out.calls)
    assert [json.loads(call)["status"] for call in out.calls] == [200, 404]
