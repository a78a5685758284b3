"""The tus 1.0 state machine and header parsers."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.wire import tus

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
LATER = NOW + timedelta(hours=1)


def new(length: int = 10) -> tus.UploadState:
    return tus.UploadState.create(upload_id="u1", length=length, expires_at=LATER)


def test_appends_until_complete_then_commits() -> None:
    state = new(10)
    assert state.check_append(offset=0, content_length=4, now=NOW) == 10
    state = state.appended(4)
    assert (state.offset, state.status) == (4, tus.UploadStatus.RECEIVING)
    state = state.appended(6)
    assert state.status is tus.UploadStatus.COMPLETE
    assert state.committed().status is tus.UploadStatus.COMMITTED


def test_zero_length_upload_is_complete_at_once() -> None:
    assert new(0).status is tus.UploadStatus.COMPLETE


def test_rejects_wrong_offset_with_409() -> None:
    state = new(10).appended(3)
    with pytest.raises(tus.UploadOffsetMismatch) as err:
        state.check_append(offset=0, content_length=1, now=NOW)
    assert (err.value.expected, err.value.found, err.value.http_status) == (3, 0, 409)


def test_rejects_body_past_declared_length() -> None:
    with pytest.raises(tus.UploadTooLarge):
        new(10).check_append(offset=0, content_length=11, now=NOW)


def test_rejects_append_after_expiry_and_termination() -> None:
    with pytest.raises(tus.UploadGone, match="expired"):
        new().check_append(offset=0, content_length=1, now=LATER)
    with pytest.raises(tus.UploadGone, match="terminated"):
        new().terminated().check_append(offset=0, content_length=1, now=NOW)


def test_rejects_append_to_complete_upload_and_commit_of_partial() -> None:
    with pytest.raises(tus.UploadNotWritable):
        new(2).appended(2).check_append(offset=2, content_length=0, now=NOW)
    with pytest.raises(tus.UploadNotWritable):
        new(2).appended(1).committed()
    with pytest.raises(tus.UploadNotWritable):
        new(1).appended(1).committed().terminated()


def test_appended_refuses_overflow() -> None:
    with pytest.raises(ValueError, match="cannot append"):
        new(2).appended(3)


@pytest.mark.parametrize(
    "value", ["", "-1", "01", "1.0", " 1", "0x10", "1e3", "99999999999999999999"]
)
def test_parse_decimal_rejects_non_canonical(value: str) -> None:
    with pytest.raises(tus.TusError):
        tus.parse_decimal("Upload-Length", value, maximum=2**62)


def test_parse_decimal_enforces_maximum() -> None:
    assert tus.parse_decimal("Upload-Length", "100", maximum=100) == 100
    with pytest.raises(tus.UploadTooLarge):
        tus.parse_decimal("Upload-Length", "101", maximum=100)


def test_parse_metadata() -> None:
    value = f"filename {base64.b64encode(b'a.bin').decode()},is_confidential"
    assert tus.parse_metadata(value) == {"filename": b"a.bin", "is_confidential": b""}
    assert tus.parse_metadata(None) == {}


@pytest.mark.parametrize("value", ["a b c", "k !!!", "k YQ==,k YQ==", "ke/y YQ==", "k  YQ=="])
def test_parse_metadata_rejects_malformed(value: str) -> None:
    with pytest.raises(tus.TusError):
        tus.parse_metadata(value)


def test_tus_version_required() -> None:
    tus.require_tus_version("1.0.0")
    with pytest.raises(tus.TusVersionMismatch):
        tus.require_tus_version("0.2.2")
    with pytest.raises(tus.TusVersionMismatch):
        tus.require_tus_version(None)


def test_expires_round_trip() -> None:
    assert tus.parse_expires(tus.format_expires(NOW)) == NOW
    with pytest.raises(tus.TusError):
        tus.parse_expires("tomorrow")


@given(st.lists(st.integers(min_value=0, max_value=50), max_size=20))
def test_offset_never_passes_length(chunks: list[int]) -> None:
    state = new(100)
    for size in chunks:
        if state.status is not tus.UploadStatus.RECEIVING:
            break
        try:
            state.check_append(offset=state.offset, content_length=size, now=NOW)
        except tus.UploadTooLarge:
            assert state.offset + size > state.length
            continue
        state = state.appended(size)
        assert 0 <= state.offset <= state.length
