"""Verifier fast path for decoded audit entries (DESIGN.md §7; RFC 8785 for the encoding).

The offline verifier checks every entry of a log that may hold millions, so
the per-entry Python around the one Ed25519 verification matters. Two
helpers serve it:

* :func:`entry_json_ok` says whether a decoded entry object certainly obeys
  every rule of :func:`exchange.audit.entry.check_entry_json`. It is only an
  accelerator: False means "not sure", and the caller then runs the full
  check, which raises the precise :class:`EntryError`. So findings are
  unchanged; a property test holds ``entry_json_ok`` ⇒ ``check_entry_json``.
  The saving comes from one control-character scan over all the texts
  instead of one per member, and from exact type tests.
* :func:`entry_json_text` writes the RFC 8785 form of an object that
  passed the check, for the fixed member set, as
  ``AuditEntry.encode`` does for entry objects (a property test holds it to
  ``jcs.canonicalize``); comparing it with the stored text is the
  canonical-form check.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from exchange.audit.entry import (
    _ACTION,
    _CONTROL,
    _DETAIL_KEY,
    _HEX64,
    _TIME,
    ENTRY_KEYS,
    ENTRY_VERSION,
    KNOWN_ACTIONS,
    MAX_STATEMENT_TEXT,
    MAX_TEXT,
    REQUEST_KEYS,
    STATEMENT_DETAIL,
    fixed_entry_text,
)
from exchange.crypto.jcs import MAX_SAFE_INTEGER

_ZERO_HEX = "0" * 64
# Detail keys already matched against _DETAIL_KEY: a log repeats a handful of
# keys millions of times. Bounded, so hostile keys cannot grow it without end.
_GOOD_DETAIL_KEYS: set[str] = set()
_GOOD_KEYS_MAX = 1024


def _detail_key_ok(key: object) -> bool:
    if key in _GOOD_DETAIL_KEYS:
        return True
    if type(key) is not str or _DETAIL_KEY.fullmatch(key) is None:
        return False
    if len(_GOOD_DETAIL_KEYS) < _GOOD_KEYS_MAX:
        _GOOD_DETAIL_KEYS.add(key)
    return True


def entry_json_ok(obj: dict[str, Any], expected_prev: str = "") -> bool:
    """Return True only when ``check_entry_json(obj)`` would accept ``obj``.

    False is not a verdict: the caller must then run ``check_entry_json``.
    ``expected_prev``, when given, must be 64 lowercase hex digits (the
    verifier's hash of the previous entry): a ``prev`` equal to it needs no
    pattern match.
    """
    if obj.keys() != ENTRY_KEYS:
        return False
    version, index, time = obj["v"], obj["index"], obj["time"]
    if type(version) is not int or version != ENTRY_VERSION:
        return False
    if type(index) is not int or not 0 <= index <= MAX_SAFE_INTEGER:
        return False
    if type(time) is not str or _TIME.fullmatch(time) is None:
        return False
    try:
        datetime.fromisoformat(time)
    except ValueError:
        return False
    actor, actor_key, action = obj["actor"], obj["actor_key"], obj["action"]
    if type(actor) is not str or not actor or type(actor_key) is not str:
        return False
    if type(action) is not str or (action not in KNOWN_ACTIONS
                                   and _ACTION.fullmatch(action) is None):
        return False
    texts = [actor, actor_key]
    case, object_, outcome, reason = obj["case"], obj["object"], obj["outcome"], obj["reason"]
    if case is not None:
        if type(case) is not str or not case:
            return False
        texts.append(case)
    if object_ is not None:
        if type(object_) is not str or not object_:
            return False
        texts.append(object_)
    if outcome == "denied" and type(reason) is str and reason:
        texts.append(reason)
    elif outcome != "ok" or reason is not None:
        return False
    details = obj["details"]
    if type(details) is not dict:
        return False
    statement = details.get(STATEMENT_DETAIL)
    for key, value in details.items():
        if not _detail_key_ok(key):
            return False
        kind = type(value)
        if kind is str:
            if key != STATEMENT_DETAIL:  # the one longer text, bounded on its own below
                texts.append(value)
        elif kind is int:
            if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
                return False
        elif value is not None and kind is not bool:
            return False
    request = obj["request"]
    if request is not None:
        if type(request) is not dict or request.keys() != REQUEST_KEYS:
            return False
        signature_input, signature = request["signature_input"], request["signature"]
        covered = request["covered"]
        if type(signature_input) is not str or not signature_input:
            return False
        if type(signature) is not str or not signature or type(covered) is not list:
            return False
        texts += (signature_input, signature)
        for pair in covered:
            if type(pair) is not list or len(pair) != 2:
                return False
            name, value = pair
            if type(name) is not str or not name or type(value) is not str:
                return False
            texts += pair
    prev = obj["prev"]
    if prev != expected_prev and (type(prev) is not str or _HEX64.fullmatch(prev) is None):
        return False
    if index == 0 and prev != _ZERO_HEX:
        return False
    joined = "".join(texts)
    if len(joined) > MAX_TEXT and any(len(text) > MAX_TEXT for text in texts):
        return False
    if type(statement) is str:
        if len(statement) > MAX_STATEMENT_TEXT:
            return False
        joined += statement
    # Printable ASCII (the usual case) has no control character: two C scans
    # instead of the regex, which costs several times more per character.
    return (joined.isascii() and joined.isprintable()) or _CONTROL.search(joined) is None


def entry_json_text(obj: dict[str, Any]) -> str:
    """Return the RFC 8785 text of an entry object that :func:`entry_json_ok` accepted.

    Written by the one fixed-schema writer, ``exchange.audit.entry.fixed_entry_text``.
    """
    request = obj["request"]
    return fixed_entry_text(
        action=obj["action"], actor=obj["actor"], actor_key=obj["actor_key"],
        case=obj["case"], details=obj["details"], index=obj["index"], object_=obj["object"],
        outcome=obj["outcome"], prev_hex=obj["prev"], reason=obj["reason"],
        request=None if request is None else (request["covered"], request["signature"],
                                              request["signature_input"]),
        time=obj["time"],
    )
