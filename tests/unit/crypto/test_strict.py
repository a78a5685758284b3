"""The shared strict decoders: one canonical base64 spelling, strict bounded JSON."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical, loads_json


@given(st.binary(max_size=200))
def test_canonical_base64_round_trips(data: bytes) -> None:
    text = base64.b64encode(data).decode("ascii")
    assert b64decode_canonical(text) == data
    assert b64decode_canonical(text.encode("ascii")) == data


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("QR==", "not canonical"),  # same byte as "QQ==" with non-zero unused bits
        ("QUI=", None),
        ("QUJ=", "not canonical"),
        ("QQ", "not valid"),  # padding missing
        ("QQ=", "not valid"),
        ("QQ==\n", "not valid"),  # whitespace would make the text malleable
        (" QQ==", "not valid"),
        ("QQ==QQ==", "not valid"),
        ("Q-_=", "not valid"),  # url-safe alphabet
        ("QQ\u00e9=", "not valid"),
    ],
)
def test_only_the_canonical_spelling_decodes(text: str, why: str | None) -> None:
    if why is None:
        assert b64decode_canonical(text) == b"AB"
        return
    with pytest.raises(StrictDecodeError, match=why):
        b64decode_canonical(text)


def test_base64_type_is_checked() -> None:
    with pytest.raises(TypeError):
        b64decode_canonical(1234)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (b'{"a": 1, "a": 2}', {}, "duplicate JSON member 'a'"),
        (b'{"a": NaN}', {}, "constant NaN"),
        (b'[Infinity]', {}, "constant Infinity"),
        (b'{"a": 1.5}', {"allow_floats": False}, "floating-point number '1.5'"),
        (b'{"a": 1e3}', {"allow_floats": False}, "floating-point"),
        (b'{"a": "\xff"}', {}, "not valid UTF-8"),
        (b'{"a": ', {}, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, {"max_bytes": 1 << 20}, "nested too deeply"),
        (b'"' + b"x" * 100 + b'"', {"max_bytes": 50}, "102 bytes, expected at most 50"),
    ],
)
def test_strict_json_refusals(data: bytes, kwargs: dict[str, object], message: str) -> None:
    options: dict[str, object] = {"max_bytes": 1024, **kwargs}
    with pytest.raises(StrictDecodeError, match=message) as info:
        loads_json(data, what="thing", **options)  # type: ignore[arg-type]
    assert str(info.value).startswith("thing")


def test_strict_json_accepts_plain_documents() -> None:
    assert loads_json('{"a": [1, "x", null, true], "b": 1.5}', what="t", max_bytes=64) == {
        "a": [1, "x", None, True], "b": 1.5,
    }
    assert loads_json(b'{"n": 10}', what="t", max_bytes=64, allow_floats=False) == {"n": 10}
