"""Hostile-input fuzzing of the tus 1.0 header parsers (``exchange.wire.tus``):
Tus-Resumable, Upload-Length / Upload-Offset, Upload-Metadata and Upload-Expires.

Only :class:`TusError` leaves may escape; numbers are bounded before conversion,
metadata round-trips, and huge declared lengths are refused, never allocated.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from exchange.wire.tus import (
    MAX_METADATA_BYTES,
    TusError,
    UploadState,
    UploadTooLarge,
    format_expires,
    parse_decimal,
    parse_expires,
    parse_metadata,
    require_tus_version,
)
from tests.fuzz._fuzz import (
    FUZZ,
    HOSTILE_NUMBERS,
    hostile_text,
    mutated_text,
    only,
    peak_python_memory,
)

MAXIMUM = 1 << 40
METADATA = ("filename ZXhoaWJpdC03LnBkZg==,is_confidential,media dGV4dC9wbGFpbg==",
            "a YQ==", "k")
EXPIRES = (format_expires(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)),
           "Wed, 21 Oct 2015 07:28:00 GMT")


def _encode_metadata(pairs: dict[str, bytes]) -> str:
    return ",".join(f"{k} {base64.b64encode(v).decode()}" if v else k for k, v in pairs.items())


@FUZZ
@given(value=st.one_of(st.none(), st.sampled_from(HOSTILE_NUMBERS), hostile_text,
                       st.integers(0, 2**70).map(str)))
def test_decimal_headers(value: str | None) -> None:
    number = only(TusError, parse_decimal, "Upload-Length", value, maximum=MAXIMUM)
    if number is not None:
        assert str(number) == value and 0 <= number <= MAXIMUM


@FUZZ
@given(value=st.one_of(hostile_text, st.sampled_from(["1.0.0", "1.0.0 ", "1.0", "1.0.0\x00"])))
def test_tus_resumable(value: str) -> None:
    only(TusError, require_tus_version, value)


@FUZZ
@given(data=st.data())
def test_metadata_random_and_mutated(data: st.DataObject) -> None:
    value = data.draw(st.one_of(
        hostile_text, mutated_text(data.draw(st.sampled_from(METADATA)), METADATA),
        st.sampled_from(["a " + "QUFB" * 2000, "a,a", "a YQ", "a YR==", " a YQ==", "a  YQ==",
                         ",", "a\tYQ==", "a YQ==,", "x" * 65 + " YQ==", "a " + "=" * 8]),
    ))
    pairs = only(TusError, parse_metadata, value)
    if pairs is not None:
        assert parse_metadata(_encode_metadata(pairs)) == pairs
        assert sum(len(v) for v in pairs.values()) <= MAX_METADATA_BYTES


@FUZZ
@given(pairs=st.dictionaries(st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
                             st.binary(max_size=50), max_size=5))
def test_metadata_round_trip(pairs: dict[str, bytes]) -> None:
    assert parse_metadata(_encode_metadata(pairs)) == pairs


@FUZZ
@given(data=st.data())
def test_expires(data: st.DataObject) -> None:
    value = data.draw(st.one_of(hostile_text,
                                mutated_text(data.draw(st.sampled_from(EXPIRES)), EXPIRES)))
    moment = only(TusError, parse_expires, value)
    if moment is not None:
        assert moment.tzinfo is not None


def test_expires_round_trip() -> None:
    moment = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert parse_expires(format_expires(moment)) == moment


def test_huge_declared_length_is_refused_before_any_allocation() -> None:
    """A hostile Upload-Length is a number compared with the limit, never a buffer size."""
    digits, metadata = "9" * 100_000, "a " + "QUFB" * 100_000
    state = UploadState.create(upload_id="u", length=10,
                               expires_at=datetime(2100, 1, 1, tzinfo=UTC))
    # Memory follows the header text (error messages repr it before cutting), never the
    # size a header claims.
    with peak_python_memory(256 * 1024):
        assert only(UploadTooLarge, parse_decimal, "Upload-Length", str(2**63),
                    maximum=MAXIMUM) is None
        assert only(TusError, parse_decimal, "Upload-Length", digits, maximum=MAXIMUM) is None
        assert only(UploadTooLarge, parse_metadata, metadata) is None
        assert only(UploadTooLarge, state.check_append, offset=0, content_length=2**62,
                    now=datetime(2030, 1, 1, tzinfo=UTC)) is None
