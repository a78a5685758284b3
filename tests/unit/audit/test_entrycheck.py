"""The verifier's fast entry path agrees with the full rules (exchange.audit._entrycheck).

``entry_json_ok`` may only say True where ``check_entry_json`` accepts, and
``entry_json_text`` must equal RFC 8785 on what it accepted; the stored-member
reader in ``_sigparse`` accepts exactly what the wire parser reads in canonical form.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.audit import _entrycheck
from exchange.audit._entrycheck import entry_json_ok, entry_json_text
from exchange.audit._sigparse import SignatureSyntaxError, parse_signature_input
from exchange.audit.entry import (
    _ACTION,
    KNOWN_ACTIONS,
    MAX_STATEMENT_TEXT,
    AuditEntry,
    EntryError,
    check_entry_json,
)
from exchange.crypto.jcs import canonicalize
from exchange.errors import CryptoError
from exchange.wire.httpsig import parse_signature_input as wire_parse
from tests.unit.audit.test_entry import entries

_odd_text = st.sampled_from(["", "a\nb", "\x7f", "\ud800", "x" * 4097, "é", "\\n", '"q"', "ok"])
_odd_values = st.one_of(st.none(), st.booleans(), st.integers(-(2**60), 2**60), _odd_text,
                        st.lists(_odd_text, max_size=2), st.just(1.5),
                        st.dictionaries(_odd_text, _odd_text, max_size=2))


def _accepts(obj: dict[str, object]) -> bool:
    try:
        check_entry_json(obj)
    except EntryError:
        return False
    return True


@given(entries())
def test_every_valid_entry_takes_the_fast_path(entry: AuditEntry) -> None:
    data = entry.encode()
    obj = json.loads(data)
    assert entry_json_ok(obj)
    assert entry_json_ok(obj, obj["prev"])
    assert entry_json_text(obj) == data.decode("utf-8") == canonicalize(obj).decode("utf-8")


@given(entries(), st.data())
def test_fast_check_never_accepts_what_the_rules_refuse(entry: AuditEntry,
                                                        data: st.DataObject) -> None:
    obj = json.loads(entry.encode())
    target = obj
    if obj["request"] is not None and data.draw(st.booleans()):
        target = obj["request"]
        if target["covered"] and data.draw(st.booleans()):
            target = {"pair": target["covered"][0]}  # mutate one pair in place below
    key = data.draw(st.sampled_from(sorted(target)))
    if key == "pair":
        target[key][data.draw(st.integers(0, 1))] = data.draw(_odd_values)
    elif data.draw(st.booleans()):
        target[key] = data.draw(_odd_values)
    else:
        del target[key]
    fast = entry_json_ok(obj)
    assert not fast or _accepts(obj), obj
    if fast:
        assert entry_json_text(obj) == canonicalize(obj).decode("utf-8")


@pytest.mark.parametrize(("member", "value"), [
    ("actor", "a\x00b"), ("actor", ""), ("actor_key", "\x7f"), ("case", ""), ("object", 1),
    ("reason", "r"), ("outcome", "denied"), ("v", True), ("index", True), ("index", -1),
    ("time", "2025-02-30T00:00:00.000000Z"), ("action", "Evidence.x"), ("action", ["x"]),
    ("details", {"Bad": 1}), ("details", {"k": 2**53}), ("details", {"k": 1.5}),
    ("details", {"k": "\ud800"}), ("prev", "AB" * 32), ("prev", "0" * 63), ("request", {}),
])
def test_fast_check_refuses_each_broken_member(member: str, value: object) -> None:
    obj = json.loads(_sample().encode())
    obj[member] = value
    assert not entry_json_ok(obj)
    assert not _accepts(obj)


def test_prev_equal_to_the_expected_hash_skips_only_the_pattern() -> None:
    obj = json.loads(_sample().encode())
    assert entry_json_ok(obj, obj["prev"])
    obj["prev"] = "f" * 64
    assert entry_json_ok(obj, "0" * 64)  # still valid hex, just not the expected one
    obj["prev"] = "F" * 64
    assert not entry_json_ok(obj, "f" * 64)


def test_overlong_text_is_refused_even_when_the_whole_is_printable() -> None:
    obj = json.loads(_sample().encode())
    obj["details"] = {"a": "x" * 4096, "b": "y"}
    assert entry_json_ok(obj)
    obj["details"] = {"a": "x" * 4097}
    assert not entry_json_ok(obj)
    assert not _accepts(obj)


def test_only_the_statement_detail_may_exceed_the_text_bound() -> None:
    obj = json.loads(_sample().encode())
    obj["details"] = {"statement": "A" * MAX_STATEMENT_TEXT, "s": "y" * 4096}
    assert entry_json_ok(obj) and _accepts(obj)
    for details in ({"statement": "A" * (MAX_STATEMENT_TEXT + 1)}, {"other": "A" * 4097},
                    {"statement": "A" * 5000 + "\x01"}, {"statement": "A", "s": "y" * 4097}):
        obj["details"] = details
        assert not entry_json_ok(obj), details
        assert not _accepts(obj), details


def test_known_actions_are_valid_action_names() -> None:
    assert all(_ACTION.fullmatch(action) for action in KNOWN_ACTIONS)


def test_detail_key_cache_is_bounded() -> None:
    for i in range(3000):
        assert _entrycheck._detail_key_ok(f"k{i}")
    assert len(_entrycheck._GOOD_DETAIL_KEYS) <= _entrycheck._GOOD_KEYS_MAX
    assert not _entrycheck._detail_key_ok("Bad")
    assert "Bad" not in _entrycheck._GOOD_DETAIL_KEYS


def _sample() -> AuditEntry:
    return AuditEntry(
        index=3, time="2025-01-01T00:00:00.000000Z", actor="p1", actor_key="fp", action="x.y",
        case="c", object="o", outcome="ok", reason=None, request=None,
        details={"n": 1, "s": "v", "b": True, "z": None}, prev=bytes(range(32)),
    )


# -- _sigparse reads stored members with the one wire parser ------------------------------

_fragments = st.sampled_from([
    ";a", ";a=1", ";b=\"x;y\"", ';c="q\\"', ";d=tok:/x", ";e=:AA==:", ";f=?0", ";a=2",
    "=", ";", '"', "1234567890123456", ";g=-5", " ", ";h=\"", "x", ";Upper=1", ";i=*t",
    ";created=1", ";keyid=\"k\"", ";nonce=\"n\"", ";created=2",
])


@given(st.lists(_fragments, max_size=6))
def test_stored_member_reader_agrees_with_the_wire_parser(parts: list[str]) -> None:
    """Whatever the text, the audit reader accepts exactly the canonical single members
    the wire parser reads, and reports the same components and parameters."""
    member = 'sig1=("@method" "@path")' + "".join(parts)
    try:
        wire = wire_parse(member)
    except CryptoError:
        wire = None
    if wire is None or len(wire) != 1 or wire["sig1"].serialize() != member:
        with pytest.raises(SignatureSyntaxError):
            parse_signature_input(member)
        return
    parsed = parse_signature_input(member)
    assert parsed.components == ('"@method"', '"@path"')
    assert parsed.params == wire["sig1"].params
