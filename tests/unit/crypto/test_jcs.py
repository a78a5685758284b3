"""RFC 8785 (JCS) canonicalization for the subset we sign: examples from the RFC and properties."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto.jcs import MAX_SAFE_INTEGER, CanonicalizationError, canonicalize


def test_rfc8785_sorting_example() -> None:
    # RFC 8785 §3.2.3: members sorted by UTF-16 code units, so the emoji
    # (surrogate pair D83D DE00) comes before U+FB33 although its code point is larger.
    value = json.loads(
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return", "\\ufb33": "Hebrew Letter Dalet '
        'With Dagesh", "1": "One", "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": '
        '"Control", "\\u00f6": "Latin Small Letter O With Diaeresis"}'
    )
    out = canonicalize(value).decode("utf-8")
    order = [key for key in json.loads(out)]
    assert order == ["\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]
    assert out.startswith('{"\\r":"Carriage Return","1":"One","\u0080":"Control",')


def test_rfc8785_string_and_literal_example() -> None:
    # RFC 8785 §3.2.4 example without its "numbers" member (floats are outside our subset).
    value = json.loads(
        '{"string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = '{"literals":[null,true,false],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    assert canonicalize(value) == expected.encode("utf-8")


def test_escapes_controls_in_lowercase_hex_and_short_forms() -> None:
    assert canonicalize("\x00\x1f\b\f\n\r\t\x7f") == b'"\\u0000\\u001f\\b\\f\\n\\r\\t\x7f"'


def test_non_ascii_is_raw_utf8() -> None:
    assert canonicalize({"é": "日本"}) == '{"é":"日本"}'.encode()


def test_integers_and_safe_range() -> None:
    assert canonicalize([0, -1, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
        b"[0,-1,9007199254740991,-9007199254740991]"
    )
    with pytest.raises(CanonicalizationError, match="outside"):
        canonicalize(MAX_SAFE_INTEGER + 1)


def test_rejects_floats() -> None:
    with pytest.raises(CanonicalizationError, match="floating-point"):
        canonicalize({"a": 1.0})


def test_rejects_non_string_keys() -> None:
    with pytest.raises(CanonicalizationError, match="not a string"):
        canonicalize({1: "x"})


def test_rejects_lone_surrogate() -> None:
    with pytest.raises(CanonicalizationError, match="surrogate"):
        canonicalize("\ud800")


def test_rejects_bytes_and_other_types() -> None:
    for bad in (b"raw", object(), {1, 2}):
        with pytest.raises(CanonicalizationError, match="unsupported type"):
            canonicalize(bad)


def test_canonicalization_error_is_a_value_error() -> None:
    assert issubclass(CanonicalizationError, ValueError)


_text = st.text(st.characters(codec="utf-8"), max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER) | _text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_text, inner, max_size=4),
    max_leaves=20,
)


@given(_json)
def test_output_is_json_for_the_same_value_and_idempotent(value: object) -> None:
    out = canonicalize(value)
    parsed = json.loads(out.decode("utf-8"))
    assert parsed == value
    assert canonicalize(parsed) == out


@given(st.dictionaries(_text, st.integers(0, 9), min_size=2, max_size=8))
def test_member_order_is_utf16_code_unit_order(value: dict[str, int]) -> None:
    keys = list(json.loads(canonicalize(value)))
    assert keys == sorted(value, key=lambda k: k.encode("utf-16-be"))


def test_deep_nesting_is_a_canonicalization_error() -> None:
    value: object = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(CanonicalizationError, match="nested too deeply"):
        canonicalize(value)
