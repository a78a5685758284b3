"""Audit log entries: the leaf data of the exchange transparency log (DESIGN.md §7).

Canonical encoding: RFC 8785 JCS (``exchange.crypto.jcs``) of one JSON object
with exactly these members: ``v`` (format version, 1), ``index``, ``time``,
``actor``, ``actor_key``, ``action``, ``case``, ``object``, ``outcome``,
``reason``, ``request`` (null or {``signature_input``, ``signature``,
``covered``: [[identifier, value], …]}), ``details`` (flat object of string,
integer, boolean or null) and ``prev`` (lowercase hex of SHA-256 of the
previous entry's encoding; 64 zeros for index 0). At most 65535 bytes, the
tlog-tiles entry-bundle limit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from json.encoder import encode_basestring
from types import MappingProxyType
from typing import Any, Literal

from exchange.audit.tiles import MAX_ENTRY_BYTES
from exchange.crypto._strict import StrictDecodeError, loads_json
from exchange.crypto.jcs import MAX_SAFE_INTEGER
from exchange.errors import AuditError

ENTRY_VERSION = 1
PREV_SIZE = 32
ZERO_PREV = bytes(PREV_SIZE)
UNKNOWN_ACTOR = "-"  # the requester could not be identified, or the server itself
MAX_TEXT = 4096  # generous bound on one identifier or header value
#: The ``statement`` detail: standard base64 of a signed statement (at most 40 KiB,
#: ``exchange.crypto.statement``), the one detail allowed beyond MAX_TEXT.
STATEMENT_DETAIL = "statement"
MAX_STATEMENT_TEXT = 56_000

LOG_INIT = "log.init"
PARTICIPANT_ENROL = "participant.enrol"
PARTICIPANT_KEY_CHANGE = "participant.key_change"
#: Server-originated entries an administrator's decision on the server itself causes
#: (no participant signs them): continuing from a restored, older log (issue 14).
LOG_ROLLBACK_ACCEPTED = "log.rollback_accepted"
#: ... and rotating the log's checkpoint key (the entry carries the dual-signed note).
LOG_KEY_ROTATE = "log.key_rotate"
#: Entries the server writes on its own (actor "-", no request): an administrator's decision
#: on the server (rollback accepted, log key rotated) and retention's erasures and shreds.
SERVER_ACTIONS = frozenset({LOG_ROLLBACK_ACCEPTED, LOG_KEY_ROTATE,
                            "evidence.erase", "envelope.shred"})
KNOWN_ACTIONS = frozenset({
    LOG_ROLLBACK_ACCEPTED, LOG_KEY_ROTATE,
    LOG_INIT, PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE, "participant.suspend",
    "case.create", "case.member_add", "case.member_remove", "case.epoch_add",
    "envelope.put", "envelope.get", "upload.create", "upload.append",
    "evidence.commit", "evidence.download", "evidence.list", "case.list", "audit.read",
    "participant.list", "participant.show", "case.show", "case.feed",
    "upload.options", "upload.status", "upload.terminate", "evidence.show",
    # signed statements (issue 10)
    "participant.reinstate", "participant.role", "admin.set", "server.url",
    "case.epoch_rotate", "case.envelope_add", "case.policy", "case.statements",
    "directory.read", "membership.feed",
    # retention and erasure (issue 19)
    "case.erase", "evidence.erase", "envelope.shred",
})
#: Actions of logs made before signed statements (issue 10); no route produces them now,
#: the verifier still reads them (and reports them as unsigned).
LEGACY_ACTIONS = frozenset({"case.epoch_add", "envelope.put"})
ENTRY_KEYS = frozenset({
    "v", "index", "time", "actor", "actor_key", "action", "case", "object", "outcome",
    "reason", "request", "details", "prev",
})
REQUEST_KEYS = frozenset({"signature_input", "signature", "covered"})

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
# Lone surrogates are not Unicode scalar values: JSON can spell them (\ud800) but
# RFC 8785 cannot encode them, so they are refused with the control characters.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")

DetailValue = str | int | bool | None


class EntryError(AuditError, ValueError):
    """An audit entry breaks the entry format; ``field`` names the offending member."""

    def __init__(self, entry_field: str, message: str) -> None:
        super().__init__(f"{entry_field}: {message}")
        self.field = entry_field


def _text(entry_field: str, value: object, *, empty: bool = False, limit: int = MAX_TEXT) -> str:
    if not isinstance(value, str):
        raise EntryError(entry_field, f"want a string, found {type(value).__name__}")
    if not value and not empty:
        raise EntryError(entry_field, "must not be empty")
    if len(value) > limit:
        raise EntryError(entry_field, f"is {len(value)} characters, more than {limit}")
    if _CONTROL.search(value):
        raise EntryError(
            entry_field, f"contains a control character or lone surrogate: {value[:40]!r}"
        )
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestEvidence:
    """The requester's RFC 9421 signature material, enough to re-verify it offline.

    ``signature_input`` is the Signature-Input member (``label=(...);params``),
    ``signature`` the Signature member (``label=:base64:``), ``covered`` the
    ordered (serialized component identifier, value) pairs of the signature base.
    """

    signature_input: str
    signature: str
    covered: tuple[tuple[str, str], ...]

    def __post_init__(self) -> None:
        _text("request.signature_input", self.signature_input)
        _text("request.signature", self.signature)
        if not isinstance(self.covered, tuple):
            raise EntryError("request.covered", "want a tuple of (identifier, value) pairs")
        for pair in self.covered:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise EntryError("request.covered", "want (identifier, value) pairs")
            _text("request.covered", pair[0])
            _text("request.covered", pair[1], empty=True)

    def to_json(self) -> dict[str, object]:
        """Return the JSON object form used in the encoding."""
        return {
            "signature_input": self.signature_input,
            "signature": self.signature,
            "covered": [list(pair) for pair in self.covered],
        }


def _check_details(details: Mapping[str, object]) -> None:
    for key, value in details.items():
        if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
            raise EntryError("details", f"invalid key {str(key)[:40]!r}")
        if value is None or isinstance(value, bool):
            continue
        if isinstance(value, int):
            if abs(value) > MAX_SAFE_INTEGER:
                raise EntryError(f"details.{key}", "integer outside ±(2**53 - 1)")
        elif isinstance(value, str):
            _text(f"details.{key}", value, empty=True,
                  limit=MAX_STATEMENT_TEXT if key == STATEMENT_DETAIL else MAX_TEXT)
        else:
            raise EntryError(f"details.{key}", f"unsupported type {type(value).__name__}")


def _check_time(value: object) -> None:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise EntryError("time", f"want RFC 3339 UTC with microseconds, found {str(value)[:40]!r}")
    try:
        datetime.fromisoformat(value)
    except ValueError:
        raise EntryError("time", f"not a real date and time: {value!r}") from None


def _check_fields(
    *,
    index: object, time: object, actor: object, actor_key: object, action: object,
    case: object, object_: object, outcome: object, reason: object, details: object,
) -> None:
    """Validate the members shared by the object and the JSON form (one source of rules)."""
    if isinstance(index, bool) or not isinstance(index, int):
        raise EntryError("index", "want an integer")
    if not 0 <= index <= MAX_SAFE_INTEGER:
        raise EntryError("index", f"{index} is outside 0..2**53-1")
    _check_time(time)
    _text("actor", actor)
    _text("actor_key", actor_key, empty=True)
    if not isinstance(action, str) or not _ACTION.fullmatch(action):
        raise EntryError("action", f"want a dotted lowercase name, found {action!r:.60}")
    if case is not None:
        _text("case", case)
    if object_ is not None:
        _text("object", object_)
    if outcome == "denied":
        _text("reason", reason)
    elif outcome != "ok":
        raise EntryError("outcome", f"want 'ok' or 'denied', found {outcome!r:.40}")
    elif reason is not None:
        raise EntryError("reason", "must be null when the outcome is ok")
    if not isinstance(details, Mapping):
        raise EntryError("details", "want a mapping")
    _check_details(details)


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One access to the exchange, as logged; always valid once constructed."""

    index: int
    time: str
    actor: str
    actor_key: str
    action: str
    case: str | None
    object: str | None
    outcome: Literal["ok", "denied"]
    reason: str | None
    request: RequestEvidence | None
    details: Mapping[str, DetailValue] = field(hash=False)
    prev: bytes

    def __post_init__(self) -> None:
        _check_fields(
            index=self.index, time=self.time, actor=self.actor, actor_key=self.actor_key,
            action=self.action, case=self.case, object_=self.object, outcome=self.outcome,
            reason=self.reason, details=self.details,
        )
        if self.request is not None and not isinstance(self.request, RequestEvidence):
            raise EntryError("request", "want RequestEvidence or None")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))
        if not isinstance(self.prev, bytes) or len(self.prev) != PREV_SIZE:
            raise EntryError("prev", f"want {PREV_SIZE} bytes")
        if self.index == 0 and self.prev != ZERO_PREV:
            raise EntryError("prev", "entry 0 must have an all-zero prev")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object whose JCS form is the encoding."""
        return {
            "v": ENTRY_VERSION,
            "index": self.index,
            "time": self.time,
            "actor": self.actor,
            "actor_key": self.actor_key,
            "action": self.action,
            "case": self.case,
            "object": self.object,
            "outcome": self.outcome,
            "reason": self.reason,
            "request": None if self.request is None else self.request.to_json(),
            "details": dict(self.details),
            "prev": self.prev.hex(),
        }

    def encode(self) -> bytes:
        """Return the canonical encoding; raises EntryError above 65535 bytes.

        Byte for byte ``canonicalize(self.to_json())`` (a property test holds
        the two together), written by :func:`_encode_fields` because the
        member set is fixed: every server request appends an entry, and the
        generic canonicalizer was a tenth of the request's CPU time.
        """
        data = _encode_fields(self)
        if len(data) > MAX_ENTRY_BYTES:
            raise EntryError("entry", f"encoding is {len(data)} bytes, more than {MAX_ENTRY_BYTES}")
        return data


def _jcs_string(value: str) -> str:
    """Return ``value`` as an RFC 8785 string (§3.2.2.2).

    The stdlib's non-ASCII JSON string encoder escapes exactly ``"``, ``\\``
    and U+0000..U+001F, with the short forms for \\b \\f \\n \\r \\t and
    lowercase ``\\u00xx`` otherwise, which is what RFC 8785 prescribes.
    Lone surrogates pass through and make the final UTF-8 encoding fail,
    but validated entry text cannot contain them.
    """
    return encode_basestring(value)


def _jcs_scalar(value: DetailValue) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)  # validated to lie within ±(2**53 - 1)
    return _jcs_string(value)


def _encode_fields(entry: AuditEntry) -> bytes:
    """Return the JCS encoding of ``entry.to_json()`` (see :func:`fixed_entry_text`)."""
    request = entry.request
    return fixed_entry_text(
        action=entry.action, actor=entry.actor, actor_key=entry.actor_key, case=entry.case,
        details=entry.details, index=entry.index, object_=entry.object,
        outcome=entry.outcome, prev_hex=entry.prev.hex(), reason=entry.reason,
        request=None if request is None else (request.covered, request.signature,
                                              request.signature_input),
        time=entry.time,
    ).encode("utf-8")


def fixed_entry_text(
    *, action: str, actor: str, actor_key: str, case: str | None,
    details: Mapping[str, DetailValue], index: int, object_: str | None, outcome: str,
    prev_hex: str, reason: str | None,
    request: tuple[Any, str, str] | None, time: str,
) -> str:
    """Return the RFC 8785 text of an entry with these (validated) members.

    The one fixed-schema RFC 8785 writer: ``AuditEntry.encode`` and the
    verifier's ``entry_json_text`` both use it, and property tests hold it
    equal to the general ``exchange.crypto.jcs.canonicalize``. Members appear
    in RFC 8785 order (UTF-16 code units; all names are ASCII, so plain
    string order): action, actor, actor_key, case, details, index, object,
    outcome, prev, reason, request, time, v; request members: covered,
    signature, signature_input. Detail keys are ASCII by validation.
    ``request`` is (covered [name, value] pairs, signature, signature_input).
    """
    s, opt = _jcs_string, _jcs_scalar
    if details:
        detail_text = "{" + ",".join(
            f"{s(key)}:{opt(details[key])}" for key in sorted(details)
        ) + "}"
    else:
        detail_text = "{}"
    if request is None:
        request_text = "null"
    else:
        pairs, signature, signature_input = request
        covered = ",".join(f"[{s(name)},{s(value)}]" for name, value in pairs)
        request_text = (
            f'{{"covered":[{covered}],"signature":{s(signature)},'
            f'"signature_input":{s(signature_input)}}}'
        )
    return (
        f'{{"action":{s(action)},"actor":{s(actor)},'
        f'"actor_key":{s(actor_key)},"case":{opt(case)},'
        f'"details":{detail_text},"index":{index!s},"object":{opt(object_)},'
        f'"outcome":{s(outcome)},"prev":"{prev_hex}",'
        f'"reason":{opt(reason)},"request":{request_text},'
        f'"time":{s(time)},"v":{ENTRY_VERSION}}}'
    )


def entry_hash(encoded: bytes) -> bytes:
    """Return SHA-256(encoded): the value the next entry stores in ``prev``."""
    return hashlib.sha256(encoded).digest()


def decode_json(data: bytes) -> dict[str, Any]:
    """Return the JSON object in ``data`` (strict UTF-8, no duplicates, no floats)."""
    if len(data) > MAX_ENTRY_BYTES:
        raise EntryError("entry", f"is {len(data)} bytes, more than {MAX_ENTRY_BYTES}")
    try:
        obj = loads_json(data, what="entry", max_bytes=MAX_ENTRY_BYTES, allow_floats=False)
    except StrictDecodeError as err:
        raise EntryError("entry", str(err).removeprefix("entry ")) from None
    if not isinstance(obj, dict):
        raise EntryError("entry", "is not a JSON object")
    return obj


def check_entry_json(obj: Mapping[str, Any]) -> None:
    """Validate a decoded entry object without building an :class:`AuditEntry` (verifier path).

    Applies exactly the rules of :func:`entry_from_json`; raises :class:`EntryError`.
    """
    if obj.keys() != ENTRY_KEYS:
        keys = set(obj)
        missing, extra = sorted(ENTRY_KEYS - keys), sorted(keys - ENTRY_KEYS)
        raise EntryError("entry", f"wrong members: missing {missing}, unexpected {extra}")
    if type(obj["v"]) is not int or obj["v"] != ENTRY_VERSION:
        raise EntryError("v", f"unsupported version {obj['v']!r:.20}, want {ENTRY_VERSION}")
    _check_fields(
        index=obj["index"], time=obj["time"], actor=obj["actor"], actor_key=obj["actor_key"],
        action=obj["action"], case=obj["case"], object_=obj["object"], outcome=obj["outcome"],
        reason=obj["reason"], details=obj["details"],
    )
    request = obj["request"]
    if request is not None:
        if not isinstance(request, dict) or request.keys() != REQUEST_KEYS:
            raise EntryError("request", f"want an object with members {sorted(REQUEST_KEYS)}")
        _text("request.signature_input", request["signature_input"])
        _text("request.signature", request["signature"])
        covered = request["covered"]
        if not isinstance(covered, list):
            raise EntryError("request.covered", "want a list of [identifier, value] pairs")
        for pair in covered:
            if not isinstance(pair, list) or len(pair) != 2:
                raise EntryError("request.covered", "want [identifier, value] pairs")
            _text("request.covered", pair[0])
            _text("request.covered", pair[1], empty=True)
    prev = obj["prev"]
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise EntryError("prev", f"want 64 lowercase hex digits, found {str(prev)[:70]!r}")
    if obj["index"] == 0 and prev != "0" * 64:
        raise EntryError("prev", "entry 0 must have an all-zero prev")


def entry_from_json(obj: Mapping[str, Any]) -> AuditEntry:
    """Return the entry for a decoded JSON object; exact member set, validated."""
    keys = set(obj)
    if keys != ENTRY_KEYS:
        missing, extra = sorted(ENTRY_KEYS - keys), sorted(keys - ENTRY_KEYS)
        raise EntryError("entry", f"wrong members: missing {missing}, unexpected {extra}")
    if type(obj["v"]) is not int or obj["v"] != ENTRY_VERSION:
        raise EntryError("v", f"unsupported version {obj['v']!r:.20}, want {ENTRY_VERSION}")
    raw_request = obj["request"]
    request: RequestEvidence | None = None
    if raw_request is not None:
        if not isinstance(raw_request, dict) or set(raw_request) != REQUEST_KEYS:
            raise EntryError("request", f"want an object with members {sorted(REQUEST_KEYS)}")
        covered = raw_request["covered"]
        if not isinstance(covered, list) or not all(
            isinstance(p, list) and len(p) == 2 for p in covered
        ):
            raise EntryError("request.covered", "want a list of [identifier, value] pairs")
        request = RequestEvidence(
            signature_input=raw_request["signature_input"],
            signature=raw_request["signature"],
            covered=tuple((p[0], p[1]) for p in covered),
        )
    prev = obj["prev"]
    if not isinstance(prev, str) or not _HEX64.fullmatch(prev):
        raise EntryError("prev", f"want 64 lowercase hex digits, found {str(prev)[:70]!r}")
    details = obj["details"]
    if not isinstance(details, dict):
        raise EntryError("details", "want an object")
    return AuditEntry(
        index=obj["index"], time=obj["time"], actor=obj["actor"], actor_key=obj["actor_key"],
        action=obj["action"], case=obj["case"], object=obj["object"], outcome=obj["outcome"],
        reason=obj["reason"], request=request, details=details, prev=bytes.fromhex(prev),
    )


def parse_entry(data: bytes) -> AuditEntry:
    """Return the entry encoded in ``data``; it must re-encode to identical bytes."""
    entry = entry_from_json(decode_json(data))
    if entry.encode() != data:
        raise EntryError("entry", "encoding is not canonical (RFC 8785)")
    return entry


def log_init_entry(*, time: str, origin: str, log_key: str,
                   anchor: str | None = None) -> AuditEntry:
    """Return entry 0 of a log: ``log.init`` by the server, naming the origin and log vkey.

    ``anchor`` is the trust anchor's fingerprint (logs made since signed statements).
    """
    details: dict[str, DetailValue] = {"origin": origin, "log_key": log_key}
    if anchor is not None:
        details["anchor"] = anchor
    return AuditEntry(
        index=0, time=time, actor=UNKNOWN_ACTOR, actor_key="", action=LOG_INIT, case=None,
        object=None, outcome="ok", reason=None, request=None, details=details, prev=ZERO_PREV,
    )
