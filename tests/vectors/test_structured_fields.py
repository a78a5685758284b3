"""The HTTP working group's structured-field test corpus (RFC 9651) against our parser.

Read in place from ``$EXCHANGE_VECTORS/structured-fields`` (see its FORMAT.md).
Every case must behave as the corpus says (parse to ``expected`` and serialise
to the canonical form, or fail when ``must_fail``; ``can_fail`` cases may
fail), except the deliberate deviations in :data:`DEVIATIONS`, each listed by
file and case name with the reason (the reasons are in :data:`REASONS`). A
deviation that stops deviating fails too, so the table stays exact.
"""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from functools import cache
from typing import Any

import pytest

from exchange.errors import CryptoError
from exchange.wire._sfv import (
    InnerList,
    Item,
    Token,
    parse_dictionary,
    parse_item,
    parse_list,
    serialize_dictionary,
    serialize_inner_list,
    serialize_item,
)
from tests.support import vectors_dir

#: Why we deviate. The parser serves RFC 9421 and RFC 9530 fields, where an
#: ambiguity becomes a security question, so it is stricter than RFC 9651.
REASONS = {
    "date": "Dates (@...) are refused: no field we read carries one",
    "display": "Display Strings (%\"...\") are refused: no field we read carries one",
    "duplicate": "A repeated Dictionary or Parameter key is refused; RFC 9651 lets the last "
                 "one win, so a proxy and we could disagree on which sig1 or sha-256 counts",
}


@cache
def _cases() -> list[tuple[str, dict[str, Any]]]:
    folder = vectors_dir("structured-fields")
    out: list[tuple[str, dict[str, Any]]] = []
    for path in sorted(folder.glob("*.json")):
        for case in json.loads(path.read_text("utf-8")):
            out.append((f"{path.name}::{case['name']}", case))
    return out


def _case_ids() -> list[str]:
    try:
        return [name for name, _ in _cases()]
    except pytest.skip.Exception:
        return ["corpus-missing"]


def _json_bare(value: object) -> object:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Token):
        return {"__type": "token", "value": value.value}
    if isinstance(value, bytes):
        return {"__type": "binary", "value": base64.b32encode(value).decode("ascii")}
    return value


def _json_params(params: dict[str, Any]) -> list[list[object]]:
    return [[key, _json_bare(value)] for key, value in params.items()]


def _json_member(member: Item | InnerList) -> list[object]:
    if isinstance(member, InnerList):
        return [[_json_member(item) for item in member.items], _json_params(member.params)]
    return [_json_bare(member.value), _json_params(member.params)]


def _parse(case: dict[str, Any]) -> tuple[object, str]:
    """Return (the JSON form, our serialisation) of the case's field lines."""
    value = ", ".join(case["raw"])
    kind = case["header_type"]
    if kind == "item":
        item = parse_item(value)
        return _json_member(item), serialize_item(item)
    if kind == "list":
        members = parse_list(value)
        return [_json_member(m) for m in members], ", ".join(
            serialize_inner_list(m) if isinstance(m, InnerList) else serialize_item(m)
            for m in members)
    dictionary = parse_dictionary(value)
    return ([[key, _json_member(m)] for key, m in dictionary.items()],
            serialize_dictionary(dictionary))


def _outcome(case: dict[str, Any]) -> str | None:
    """Return None when we behave as the corpus says, else what differs."""
    try:
        parsed, serialised = _parse(case)
    except CryptoError as err:
        if case.get("must_fail") or case.get("can_fail"):
            return None
        return f"refused: {err}"
    if case.get("must_fail"):
        return "parsed a value that must fail"
    if parsed != case["expected"]:
        return f"parsed {parsed!r}, expected {case['expected']!r}"
    canonical = case.get("canonical", case["raw"])
    if serialised != ", ".join(canonical):
        return f"serialised {serialised!r}, canonical {canonical!r}"
    return None


#: Every corpus case we deliberately answer differently, by file and case name.
#: (Non-canonical base64 is refused too, but the corpus marks those cases
#: ``can_fail``, so they are not deviations.)
DEVIATIONS: dict[str, str] = {
    "date.json::date - 1970-01-01 00:00:00": "date",
    "date.json::date - 2022-08-04 01:57:13": "date",
    "date.json::date - 1917-05-30 22:02:47": "date",
    "date.json::date - 2^31": "date",
    "date.json::date - 2^32": "date",
    "date.json::interoperability max date - 9999-12-31 00:00:00": "date",
    "date.json::interoperability min date - 0001-01-01 00:00:00": "date",
    "date.json::date with negative zero": "date",
    "dictionary.json::duplicate key dictionary": "duplicate",
    "display-string.json::basic display string (ascii content)": "display",
    "display-string.json::all printable ascii": "display",
    "display-string.json::non-ascii display string (lowercase escaping)": "display",
    "display-string.json::display string quoting": "display",
    "display-string.json::BOM in display string": "display",
    "display-string.json::over-encoded display string": "display",
    "key-generated.json::0x2c in dictionary key": "duplicate",
    "key-generated.json::0x3b in parameterised list key": "duplicate",
    "param-list.json::duplicate parameter with different positions": "duplicate",
}


@pytest.mark.parametrize("name", _case_ids())
def test_structured_field_case(name: str) -> None:
    case = dict(_cases())[name]
    problem = _outcome(case)
    reason = DEVIATIONS.get(name)
    if reason is None:
        assert problem is None, problem
    else:
        assert reason in REASONS
        assert problem is not None, f"{name} is listed as a deviation ({reason}) but passes"


def test_deviation_table_names_real_cases() -> None:
    names = {name for name, _ in _cases()}
    assert set(DEVIATIONS) <= names
    assert set(DEVIATIONS.values()) <= set(REASONS)
