"""Audit entries: validation, canonical encoding round trips, strict parsing."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.entry import (
    ZERO_PREV,
    AuditEntry,
    EntryError,
    RequestEvidence,
    check_entry_json,
    entry_hash,
    log_init_entry,
    parse_entry,
)
from exchange.audit.tiles import MAX_ENTRY_BYTES
from exchange.audit.verify import _fast_decode
from exchange.crypto.jcs import canonicalize

_text = st.text(st.characters(min_codepoint=0x20, exclude_categories=("Cs",)).filter(
    lambda c: c != "\x7f"), min_size=1, max_size=30)
_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**53) + 1, 2**53 - 1),
                    st.text(max_size=20).filter(lambda s: all(" " <= c != "\x7f" for c in s)
                                                and not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))


@st.composite
def entries(draw: st.DrawFn) -> AuditEntry:
    index = draw(st.integers(0, 2**53 - 1))
    denied = draw(st.booleans())
    request = draw(st.none() | st.builds(
        RequestEvidence, signature_input=_text, signature=_text,
        covered=st.lists(st.tuples(_text, _text | st.just("")), max_size=4).map(tuple)))
    return AuditEntry(
        index=index,
        time=draw(st.datetimes(min_value=datetime(1000, 1, 1))).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=draw(_text), actor_key=draw(_text | st.just("")),
        action=draw(st.sampled_from(["evidence.download", "case.create", "x.y_z"])),
        case=draw(st.none() | _text), object=draw(st.none() | _text),
        outcome="denied" if denied else "ok", reason=draw(_text) if denied else None,
        request=request,
        details=draw(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True),
                                     _values, max_size=5)),
        prev=ZERO_PREV if index == 0 else draw(st.binary(min_size=32, max_size=32)),
    )


@given(entries())
def test_round_trip_is_byte_exact(entry: AuditEntry) -> None:
    data = entry.encode()
    parsed = parse_entry(data)
    assert parsed == entry
    assert parsed.encode() == data
    assert data == canonicalize(json.loads(data))
    # The verifier's fast canonical check agrees with RFC 8785 on every valid entry.
    obj = _fast_decode(data)
    assert obj is not None
    check_entry_json(obj)


@given(entries(), st.data())
def test_any_noncanonical_variant_is_rejected(entry: AuditEntry, data: st.DataObject) -> None:
    encoded = entry.encode()
    variant = data.draw(st.sampled_from([
        encoded.replace(b":", b": ", 1),
        b" " + encoded,
        encoded + b"\n",
        json.dumps(json.loads(encoded), sort_keys=False).encode(),
        encoded.replace(b'"v":1', b'"v":1.0'),
    ]))
    if variant != encoded:
        with pytest.raises(EntryError):
            parse_entry(variant)
        obj = _fast_decode(variant)
        if obj is not None:  # Python's JSON may call a float variant canonical; the rules don't
            with pytest.raises(EntryError):
                check_entry_json(obj)


def _base() -> AuditEntry:
    return log_init_entry(time="2025-01-01T00:00:00.000000Z", origin="o", log_key="k")


def _replace(**changes: object) -> AuditEntry:
    fields = {f: getattr(_base(), f) for f in AuditEntry.__dataclass_fields__}
    fields.update(changes)
    return AuditEntry(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(("changes", "field"), [
    ({"index": -1}, "index"),
    ({"index": True}, "index"),
    ({"time": "2025-01-01T00:00:00Z"}, "time"),
    ({"time": "2025-02-30T00:00:00.000000Z"}, "time"),
    ({"actor": ""}, "actor"),
    ({"actor": "a\nb"}, "actor"),
    ({"action": "Evidence"}, "action"),
    ({"outcome": "maybe"}, "outcome"),
    ({"outcome": "denied"}, "reason"),
    ({"reason": "why"}, "reason"),
    ({"details": {"Bad": 1}}, "details"),
    ({"details": {"n": 2**60}}, "details.n"),
    ({"details": {"f": 1.5}}, "details.f"),
    ({"prev": b"\x01" * 32}, "prev"),
    ({"prev": b"short"}, "prev"),
])
def test_invalid_fields_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(EntryError) as info:
        _replace(**changes)
    assert info.value.field == field


def test_rejects_oversized_entry() -> None:
    entry = _replace(details={f"k{i}": "y" * 4000 for i in range(17)})
    with pytest.raises(EntryError, match="65535"):
        entry.encode()
    assert MAX_ENTRY_BYTES == 65535


@pytest.mark.parametrize("mutate", [
    lambda o: o.update(extra=1),
    lambda o: o.pop("details"),
    lambda o: o.update(v=2),
    lambda o: o.update(prev="AB" * 32),
    lambda o: o.update(request={"signature": "s"}),
])
def test_parse_rejects_wrong_members(mutate: object) -> None:
    obj = _base().to_json()
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(EntryError):
        parse_entry(canonicalize(obj))
    with pytest.raises(EntryError):
        check_entry_json(obj)


def test_parse_rejects_duplicates_floats_and_non_utf8() -> None:
    data = _base().encode()
    with pytest.raises(EntryError, match="duplicate"):
        parse_entry(data.replace(b'{"action"', b'{"actor":"x","action"', 1))
    with pytest.raises(EntryError):
        parse_entry(b"\xff" + data)
    with pytest.raises(EntryError, match="JSON"):
        parse_entry(data[:-1])


def test_entry_hash_is_sha256_and_entries_are_frozen() -> None:
    entry = _base()
    data = entry.encode()
    assert len(entry_hash(data)) == 32
    with pytest.raises(AttributeError):
        entry.index = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        entry.details["x"] = 1  # type: ignore[index]
