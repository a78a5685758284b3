"""Request bodies are decoded by the same strict rules as the signed formats.

``exchange.service.jsonbody`` used to carry its own JSON and base64 readers;
now it must accept exactly what ``exchange.crypto._strict`` accepts (plus its
own object, media-type and container-count rules), with ``InvalidRequest`` and
``RequestTooLarge`` as the only errors.
"""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical, loads_json
from exchange.service.errors import InvalidRequest, RequestTooLarge, UnsupportedMediaType
from exchange.service.jsonbody import decode_b64, parse_object

HOSTILE = [
    b'{"a": 1, "a": 2}', b'{"a": NaN}', b'{"a": -Infinity}', b"\xff{}", b"{", b"",
    b'{"a": "\\ud800"}', b"[" * 5_000 + b"]" * 5_000, b'{"n": ' + b"9" * 5_000 + b"}",
    b'{"n": ' + b"9" * 80 + b"}", b'{"a": 1} x', b"\xef\xbb\xbf{}",
]


def _strict_verdict(body: bytes) -> object:
    try:
        return loads_json(body, what="request body", max_bytes=len(body))
    except StrictDecodeError as err:
        return err


@pytest.mark.parametrize("body", HOSTILE)
def test_hostile_bodies_get_the_shared_verdict(body: bytes) -> None:
    verdict = _strict_verdict(body)
    if isinstance(verdict, StrictDecodeError):
        with pytest.raises(InvalidRequest) as caught:
            parse_object(body)
        assert str(caught.value) == str(verdict)
    else:
        assert parse_object(body) == verdict


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner,
                                                                 max_size=3),
    max_leaves=10,
)


@given(obj=st.dictionaries(st.text(max_size=5), _json, max_size=4), noise=st.binary(max_size=3))
def test_any_body_gets_the_shared_verdict(obj: dict[str, object], noise: bytes) -> None:
    for body in (json.dumps(obj).encode(), json.dumps(obj).encode() + noise):
        verdict = _strict_verdict(body)
        if isinstance(verdict, dict):
            assert parse_object(body) == verdict
        else:
            with pytest.raises(InvalidRequest):
                parse_object(body)


def test_media_type_and_container_count() -> None:
    with pytest.raises(UnsupportedMediaType):
        parse_object(b"{}", content_type="text/plain")
    assert parse_object(b"{}", content_type="Application/JSON; charset=utf-8") == {}
    with pytest.raises(InvalidRequest, match="nested or repeated too much"):
        parse_object(b'{"a": [' + b"[], " * 10_000 + b"[]]}")
    with pytest.raises(InvalidRequest, match="must be a JSON object, found list"):
        parse_object(b"[]")


@given(data=st.binary(max_size=40), edit=st.sampled_from(["", "\n", " ", "=", "é", "-"]))
def test_base64_gets_the_shared_verdict(data: bytes, edit: str) -> None:
    text = base64.b64encode(data).decode()
    for candidate in (text, text + edit, edit + text, text.rstrip("=")):
        try:
            expected = b64decode_canonical(candidate)
        except StrictDecodeError as err:
            with pytest.raises(InvalidRequest) as caught:
                decode_b64(candidate, "field", max_bytes=100)
            assert str(caught.value) == f"field is {err}"
        else:
            assert decode_b64(candidate, "field", max_bytes=100) == expected


def test_base64_size_and_type() -> None:
    with pytest.raises(RequestTooLarge):
        decode_b64(base64.b64encode(bytes(13)).decode(), "field", max_bytes=12)
    assert decode_b64(base64.b64encode(bytes(12)).decode(), "field", max_bytes=12) == bytes(12)
    with pytest.raises(InvalidRequest, match="must be a base64 string, found bytes"):
        decode_b64(b"AA==", "field", max_bytes=12)
