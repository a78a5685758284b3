"""The fixed-schema entry encoder is byte-identical to the generic RFC 8785 canonicalizer."""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.entry import ZERO_PREV, AuditEntry, RequestEvidence, parse_entry
from exchange.crypto.jcs import canonicalize

# Text the entry format accepts, biased towards what needs escaping or sorts oddly:
# quotes, backslashes, DEL's neighbours, non-ASCII, astral (UTF-16 surrogate pair) characters.
_chars = st.one_of(
    st.sampled_from(['"', "\\", "/", "~", "é", "\u2028", "\ufeff", "😀", "𝄞", "a", " "]),
    st.characters(min_codepoint=0x20, exclude_categories=("Cs",)).filter(lambda c: c != "\x7f"),
)
_text = st.text(_chars, min_size=1, max_size=24)
_maybe_empty = _text | st.just("")
_detail_keys = st.one_of(
    st.sampled_from(["a", "a_", "a0", "ab", "count", "z", "z9_"]),
    st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True),
)
_detail_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1), _maybe_empty,
)


@st.composite
def _entries(draw: st.DrawFn) -> AuditEntry:
    index = draw(st.integers(0, 2**53 - 1))
    denied = draw(st.booleans())
    request = draw(st.none() | st.builds(
        RequestEvidence, signature_input=_text, signature=_text,
        covered=st.lists(st.tuples(_text, _maybe_empty), max_size=5).map(tuple),
    ))
    return AuditEntry(
        index=index,
        time=draw(st.datetimes(min_value=datetime(1000, 1, 1))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=draw(_text), actor_key=draw(_maybe_empty),
        action=draw(st.sampled_from(["case.list", "evidence.download", "a.b", "x.y_z.w9"])),
        case=draw(st.none() | _text), object=draw(st.none() | _text),
        outcome="denied" if denied else "ok", reason=draw(_text) if denied else None,
        request=request,
        details=draw(st.dictionaries(_detail_keys, _detail_values, max_size=6)),
        prev=ZERO_PREV if index == 0 else draw(st.binary(min_size=32, max_size=32)),
    )


@given(_entries())
def test_encode_equals_generic_canonicalize(entry: AuditEntry) -> None:
    assert entry.encode() == canonicalize(entry.to_json())


@given(_entries())
def test_encoding_parses_back_to_the_entry(entry: AuditEntry) -> None:
    data = entry.encode()
    assert json.loads(data) == entry.to_json()
    assert parse_entry(data) == entry


def test_encoding_of_a_known_entry() -> None:
    entry = AuditEntry(
        index=7, time="2026-01-02T03:04:05.000006Z", actor="p\"1\\", actor_key="fp",
        action="case.list", case=None, object="é😀", outcome="denied", reason="r",
        request=RequestEvidence(signature_input='sig=("@method");created=1',
                                signature="sig=:AA==:", covered=(('"@method"', "GET"),)),
        details={"z": None, "count": 2, "a_": True, "a": "x"}, prev=bytes(range(32)),
    )
    expected = (
        '{"action":"case.list","actor":"p\\"1\\\\","actor_key":"fp","case":null,'
        '"details":{"a":"x","a_":true,"count":2,"z":null},"index":7,"object":"é😀",'
        '"outcome":"denied","prev":"' + bytes(range(32)).hex() + '","reason":"r",'
        '"request":{"covered":[["\\"@method\\"","GET"]],"signature":"sig=:AA==:",'
        '"signature_input":"sig=(\\"@method\\");created=1"},'
        '"time":"2026-01-02T03:04:05.000006Z","v":1}'
    ).encode("utf-8")
    assert entry.encode() == expected
    assert canonicalize(entry.to_json()) == expected
