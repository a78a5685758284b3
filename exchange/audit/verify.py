"""Offline verifier for an exchange audit log (DESIGN.md §7; RFC 6962, C2SP tlog-checkpoint).

Theory of operation: one streaming pass over the entries (flat memory apart
from the enrolled-key table, a set of seen request signatures and a small
record per committed item for the retention checks) that
recomputes the Merkle tree, the ``prev`` chain and each entry's canonical
form, replays enrolments and key changes so every ``ok`` request signature is
checked against the actor's key *as enrolled in the log itself*, checks that
each signed request is one that logs the entry's action for the entry's case
and object (``exchange.audit.actions``: method, route, bound fields; one
server URL for the whole log), and compares
the recomputed roots with the latest checkpoint and every trusted older one
(fork and rollback detection). Problems become :class:`Finding` values that
name the entry index and field; nothing is reported as just "invalid".

With the trust anchor the auditor pinned (issue 10), keys, roles and case
memberships are no longer taken from what entries say about them: the
signed statements the entries carry are replayed from the anchor's
administrators on (``exchange.audit._replay``), each entry is compared with
its statement (``exchange.audit._statements``), every ok entry is checked
against what its actor could do at that position, every signature is
checked with the key valid at that position, refusals included, and a
broken trust rule is a finding whose ``rule`` names it. Without an anchor
the report says, as a warning, that none of this was done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.bindings
import nacl.exceptions

from exchange.audit._entrycheck import entry_json_ok, entry_json_text
from exchange.audit._replay import Replay
from exchange.audit._retention import Retention
from exchange.audit._sigparse import SignatureSyntaxError, parse_signature, parse_signature_input
from exchange.audit._statements import bundle_json, check_carried
from exchange.audit.actions import check_binding, request_target
from exchange.audit.checkpoint import (
    Checkpoint,
    open_checkpoint,
    open_transition,
    open_under_any,
)
from exchange.audit.entry import (
    LOG_INIT,
    LOG_KEY_ROTATE,
    PARTICIPANT_ENROL,
    PARTICIPANT_KEY_CHANGE,
    SERVER_ACTIONS,
    UNKNOWN_ACTOR,
    ZERO_PREV,
    EntryError,
    check_entry_json,
    parse_entry,
)
from exchange.audit.note import Ed25519Verifier, parse_verifier_key
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency
from exchange.audit.tree import LEAF_PREFIX, MerkleTree
from exchange.crypto._strict import b64decode_canonical
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.keys import BundleError, bundle_from_json_obj
from exchange.crypto.statement import STATEMENT_TYPES, SignedStatement
from exchange.errors import AuditError, ExchangeError
from exchange.wire.httpsig import signature_base

_ENROLMENT_ACTIONS = (PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE)
_UNSIGNED_ALLOWED = {0: LOG_INIT, 1: PARTICIPANT_ENROL}  # server-originated bootstrap entries


@dataclass(frozen=True, slots=True)
class Finding:
    """One precise problem: entry ``index`` (None for log-wide), the field, expected vs found.

    ``rule`` is the stable short name of the trust rule broken (``ChainError.rule``,
    ``unsigned-statement``, ``not-member``…), empty for the structural checks.
    """

    index: int | None
    field: str
    expected: str
    found: str
    message: str
    rule: str = ""

    def __str__(self) -> str:
        where = "log" if self.index is None else f"entry {self.index}"
        rule = f"[{self.rule}] " if self.rule else ""
        return (
            f"{where}: {self.field}: {rule}{self.message} "
            f"(expected {self.expected}, found {self.found})"
        )


class LogVerificationError(AuditError):
    """The log failed verification; ``findings`` lists every problem found."""

    http_status = 422
    problem_type = "audit-log-invalid"

    def __init__(self, findings: Sequence[Finding]) -> None:
        super().__init__(f"{len(findings)} problem(s), first: {findings[0]}")
        self.findings = tuple(findings)


@dataclass(frozen=True, slots=True)
class TrustedCheckpoint:
    """A signed checkpoint the auditor trusted earlier, and optionally the server's
    consistency proof from it to the latest checkpoint."""

    note: bytes
    proof: Sequence[bytes] | None = None


NO_ANCHOR = Finding(
    None, "trust anchor", "a pinned trust anchor", "none",
    "no trust anchor was given, so roles, memberships and keys could not be replayed from "
    "signed statements: signatures were checked against the keys the log's own entries "
    "name, and who may do what was not checked", "no-anchor")


@dataclass(slots=True)
class VerifyReport:
    """What the verifier found; ``ok`` only when there are no findings.

    ``warnings`` are limits of the run that are not problems of the log (no
    trust anchor given); ``anchor`` is the fingerprint of the anchor replayed from.
    """

    findings: list[Finding] = field(default_factory=list)
    entries: int = 0
    root: bytes = b""
    checkpoint: Checkpoint | None = None
    truncated: bool = False
    warnings: list[Finding] = field(default_factory=list)
    anchor: str | None = None

    @property
    def ok(self) -> bool:
        """Whether the log verified with no findings."""
        return not self.findings

    def raise_for_findings(self) -> None:
        """Raise :class:`LogVerificationError` when there is any finding."""
        if self.findings:
            raise LogVerificationError(self.findings)


@dataclass(slots=True)
class _Participant:
    signing_key: bytes
    fingerprint: str


class _Stop(Exception):
    """Internal: the finding limit was reached."""


@dataclass(slots=True)
class _State:
    report: VerifyReport
    max_findings: int
    participants: dict[str, _Participant] = field(default_factory=dict)
    seen_signatures: dict[bytes, int] = field(default_factory=dict)
    index_offset: int = 0
    server_url: str | None = None  # scheme://authority requests must be signed for now
    server_url_index: int = 0
    server_url_moved: bool = False  # set by a server.url statement (at server_url_index)
    rotations: dict[int, str] = field(default_factory=dict)  # size -> key it introduces
    replay: Replay | None = None  # with a trust anchor: the statements replayed so far
    retention: Retention | None = None  # commits, downloads and erasures so far

    def add(self, index: int | None, where: str, expected: str, found: str, message: str, *,
            rule: str = "") -> None:
        self.report.findings.append(Finding(index, where, expected, found, message, rule))
        if len(self.report.findings) >= self.max_findings:
            self.report.truncated = True
            raise _Stop

    def key_of(self, actor: str) -> _Participant | None:
        """The actor's key at this position: replayed from statements when there is an
        anchor (else, or for participants only old unsigned entries enrolled, the
        keys those entries name)."""
        if self.replay is not None:
            found = self.replay.key(actor)
            if found is not None:
                return _Participant(*found)
        return self.participants.get(actor)


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


_raw_decode = json.JSONDecoder().raw_decode
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode


def _decode_valid(state: _State, index: int, data: bytes,
                  prev_hex: str) -> dict[str, Any] | None:
    """Return entry ``index`` decoded and checked, or None after recording why it is not.

    Fast path: json.loads, :func:`entry_json_ok` and the fixed-schema RFC 8785
    writer. Whatever it is unsure of takes the exact route of the general
    checks (``_fast_decode``, ``check_entry_json``, ``parse_entry``), so the
    findings do not depend on which path ran.
    """
    try:
        text = data.decode("utf-8")
        obj, _ = _raw_decode(text)  # trailing text fails the canonical comparison
    except (ValueError, UnicodeError, RecursionError):
        obj = text = None
    if type(obj) is dict and entry_json_ok(obj, prev_hex) and entry_json_text(obj) == text:
        return obj
    obj = _fast_decode(data)
    if obj is None or not _cheap_shape_ok(obj):
        try:
            return parse_entry(data).to_json()
        except EntryError as err:
            state.add(index, err.field, "a valid canonical entry", _short(str(err)),
                      "the entry cannot be parsed")
            return None
    try:
        check_entry_json(obj)
    except EntryError as err:
        state.add(index, err.field, "a valid entry", _short(str(err)),
                  "the entry breaks the entry format")
        return None
    return obj


def _fast_decode(data: bytes) -> dict[str, Any] | None:
    """Return the decoded entry when it is certainly canonical, else None (slow path decides).

    For our entries (ASCII member names, no floats) Python's sorted compact
    JSON equals RFC 8785, so one dumps() replaces the JCS re-encoding.
    """
    try:
        text = data.decode("utf-8")
        obj = json.loads(text)
        if isinstance(obj, dict) and _dumps(obj) == text:
            return obj
    except (ValueError, UnicodeError, RecursionError):
        pass
    return None


def _check_request(state: _State, index: int, obj: dict[str, Any]) -> None:
    """Check an ok entry's request evidence against the actor's enrolled key."""
    if obj["request"] is None:
        if obj["action"] in SERVER_ACTIONS and obj["actor"] == UNKNOWN_ACTOR:
            # The server's own entries: erasures and shreds (judged from the log by
            # exchange.audit._retention) and its record of an administrator's decision.
            return
        if _UNSIGNED_ALLOWED.get(index) != obj["action"]:
            state.add(index, "request", "signed request evidence", "null",
                      f"{obj['action']} with outcome ok carries no request signature; only the "
                      "server's log.init (0) and first participant.enrol (1) may")
        return
    _check_signature(state, index, obj, spent=True)


def _check_refusal(state: _State, index: int, obj: dict[str, Any]) -> None:
    """A refusal naming a participant must carry that participant's valid signature.

    The server names the actor of a refusal only after the request's
    signature verified; without this check an operator could log "X tried
    to read Y and was refused" with any signature and frame X.
    """
    if "statement" in obj["details"]:
        state.add(index, "details.statement", "no statement (a refusal changes nothing)",
                  "a statement", "a refused request carries a statement: whatever it says "
                  "was not accepted, yet it stands in the log", rule="statement-mismatch")
    if obj["actor"] == UNKNOWN_ACTOR:
        return
    if obj["request"] is None:
        state.add(index, "request", f"the signed request of {_short(obj['actor'])}", "null",
                  "a refusal naming a participant carries no request signature: nothing "
                  "shows the participant asked (a fabricated refusal)")
        return
    _check_signature(state, index, obj, spent=False)
    _check_binding(state, index, obj)


def _check_signature(state: _State, index: int, obj: dict[str, Any], *, spent: bool) -> None:
    """Verify the entry's request signature with the actor's key at this position.

    ``spent``: the signature must not back another ok entry (a refused
    request may be logged again as a replay, so refusals do not spend it).
    """
    actor = obj["actor"]
    request = obj["request"]
    participant = state.key_of(actor)
    if participant is None:
        state.add(index, "actor", "a participant enrolled earlier in this log", _short(actor),
                  f"the actor of an {obj['outcome']} entry is not enrolled, so its signature "
                  "cannot be checked")
        return
    if obj["actor_key"] and participant.fingerprint and (
            obj["actor_key"] != participant.fingerprint):
        state.add(index, "actor_key", participant.fingerprint, _short(obj["actor_key"]),
                  "the actor key differs from the fingerprint enrolled for the actor")
    try:
        parsed = parse_signature_input(request["signature_input"])
        label, signature = parse_signature(request["signature"])
    except SignatureSyntaxError as err:
        state.add(index, "request.signature_input", "RFC 9421 members", _short(str(err)),
                  "the stored request signature cannot be parsed")
        return
    if label != parsed.label:
        state.add(index, "request.signature", f"label {parsed.label}", f"label {label}",
                  "signature and signature input labels differ")
        return
    keyid = parsed.string_param("keyid")
    if keyid != actor:
        state.add(index, "request.keyid", _short(actor), _short(keyid),
                  "the request was signed under a key id other than the actor")
        return
    covered = request["covered"]
    identifiers = tuple(pair[0] for pair in covered)
    if identifiers != parsed.components:
        state.add(index, "request.covered", " ".join(parsed.components), " ".join(identifiers),
                  "covered components differ from those listed in the signature input")
        return
    if spent:
        earlier = state.seen_signatures.get(signature)
        if earlier is not None:
            state.add(index, "request.signature", "a signature not used by another entry",
                      f"the signature of entry {earlier}",
                      "one signed request was logged twice (replayed or fabricated access)")
            return
        state.seen_signatures[signature] = index
    try:
        base = signature_base(covered, parsed.signature_params)  # checked [name, value] pairs
        if len(signature) != 64:
            raise nacl.exceptions.BadSignatureError
        nacl.bindings.crypto_sign_open(signature + base, participant.signing_key)
    except (ValueError, nacl.exceptions.BadSignatureError):
        state.add(index, "request.signature", f"an Ed25519 signature by {_short(actor)}",
                  "a signature that does not verify",
                  "the request signature does not verify with the actor's enrolled key: "
                  "the entry's request evidence was altered or forged")


def _check_binding(state: _State, index: int, obj: dict[str, Any]) -> None:
    """Check that the entry's signed request is the one that logged this entry.

    A valid signature proves the actor asked for *something*; this proves it
    asked for this action on this case and object (see ``exchange.audit.actions``).
    The server URL part of ``@target-uri`` is the URL of the first request
    until a ``server.url`` statement records another (a server move): from
    the entry after it on, requests must be signed for the recorded URL. Any
    other change is a finding naming the URL in force and since when.
    """
    target = request_target(obj["request"]["covered"])
    if target is None:
        state.add(index, "request", '"@method" and an absolute "@target-uri" covered',
                  _short(" ".join(pair[0] for pair in obj["request"]["covered"])),
                  "the request evidence does not say which request was signed")
        return
    method, server_url, path, query = target
    if server_url != state.server_url:
        if state.server_url_moved:
            assert state.server_url is not None
            state.add(index, "request", f"{_short(state.server_url)} (recorded by the "
                      f"server.url statement at entry {state.server_url_index})",
                      _short(server_url),
                      "the request was signed for another URL than the server's public URL "
                      "in force at this entry")
        elif state.server_url is not None:
            state.add(index, "request", f"{_short(state.server_url)} (as from entry "
                      f"{state.server_url_index})", _short(server_url),
                      "the request was signed for another server URL than earlier entries, "
                      "and no server.url statement recorded a move")
        if state.server_url is None:
            state.server_url, state.server_url_index = server_url, index
    problem = check_binding(obj, method, path, query)
    if problem is not None:
        state.add(index, "request", problem.expected, problem.found, problem.message)


def _statement_keys(signed: SignedStatement | None) -> tuple[str, bytes, str] | None:
    """(participant, signing key, fingerprint) of an enrolment or key change statement."""
    bundle = None if signed is None else bundle_json(signed)
    if bundle is None:
        return None
    try:
        parsed = bundle_from_json_obj(dict(bundle))
    except BundleError:
        return None
    return parsed.id, parsed.signing_key, parsed.fingerprint


def _apply_enrolment(state: _State, index: int, obj: dict[str, Any],
                     signed: SignedStatement | None = None) -> None:
    """Take the keys an enrolment or key change names into the table of enrolled keys.

    Without a trust anchor this is the key table (keys as the log names
    them, from the carried statement when there is one); with an anchor it
    holds only participants that old entries enrolled without statements.
    """
    details = obj["details"]
    participant = details.get("participant")
    key_text = details.get("signing_key")
    fingerprint = details.get("fingerprint")
    keys = _statement_keys(signed)
    try:
        if keys is not None:
            participant, key, fingerprint = keys
        elif not isinstance(participant, str) or not participant:
            raise ValueError("details.participant")
        elif not isinstance(fingerprint, str):
            raise ValueError("details.fingerprint")
        elif not isinstance(key_text, str):
            raise ValueError("details.signing_key")
        else:
            key = b64decode_canonical(key_text)
            if len(key) != 32:
                raise ValueError("details.signing_key")
    except ValueError as err:
        where = str(err) if str(err).startswith("details.") else "details.signing_key"
        state.add(index, where, "participant id, base64 Ed25519 key and fingerprint",
                  _short(details.get(where.split(".", 1)[1])),
                  f"{obj['action']} does not carry the enrolled participant's keys")
        return
    if obj["action"] == PARTICIPANT_KEY_CHANGE and participant not in state.participants:
        state.add(index, "details.participant", "an enrolled participant", _short(participant),
                  "key change for a participant never enrolled in this log")
    if obj["action"] == PARTICIPANT_ENROL and participant in state.participants:
        # A second enrolment would swap the key without the participant's own
        # signed key change: exactly the substitution the log must expose. The
        # first key stays in force, so what is signed with the new one shows too.
        state.add(index, "details.participant", "a participant not enrolled yet",
                  _short(participant),
                  "participant enrolled twice; key changes must be participant.key_change")
        return
    state.participants[participant] = _Participant(key, fingerprint)


def _check_entry(state: _State, index: int, obj: dict[str, Any], log_origin: str | None,
                 log_vkey: str) -> None:
    offset = obj["index"] - index
    if offset != state.index_offset:
        # Reported once per discontinuity, not for every later entry it shifts.
        state.index_offset = offset
        state.add(index, "index", str(index), _short(obj["index"]),
                  "sequence number does not match the position in the log: entries were "
                  "removed, inserted or reordered here")
    action = obj["action"]
    if (index == 0) != (action == LOG_INIT):
        state.add(index, "action", LOG_INIT if index == 0 else "not log.init", action,
                  "the log must start with exactly one log.init entry")
    if index == 0 and action == LOG_INIT:
        details = obj["details"]
        if log_origin is not None and details.get("origin") != log_origin:
            state.add(0, "details.origin", log_origin, _short(details.get("origin")),
                      "log.init names another origin than the checkpoint")
        if details.get("log_key") != log_vkey:
            state.add(0, "details.log_key", log_vkey, _short(details.get("log_key")),
                      "log.init names another log key than the one verified against")
    if obj["outcome"] != "ok":
        _check_refusal(state, index, obj)
        return
    if obj["actor"] == UNKNOWN_ACTOR and obj["request"] is not None:
        state.add(index, "actor", "an identified participant", UNKNOWN_ACTOR,
                  "an ok entry with request evidence must name its actor")
        return
    signed = None
    if state.replay is None and (action in STATEMENT_TYPES or "statement" in obj["details"]):
        # The anchor-free part: the entry against its statement (the replay does it too).
        signed, problems = check_carried(obj)
        for problem in problems:
            state.add(index, problem.field, problem.expected, problem.found, problem.message,
                      rule=problem.rule)
        _first_seen_issuer(state, obj, signed)
    _check_request(state, index, obj)
    if obj["request"] is not None:
        _check_binding(state, index, obj)
    if state.replay is not None:
        if state.replay.check_ok(index, obj):
            _apply_enrolment(state, index, obj)
    elif action in _ENROLMENT_ACTIONS:
        _apply_enrolment(state, index, obj, signed)
    if state.retention is not None:
        state.retention.note_ok(index, obj)
    if action == "server.url":
        _apply_move(state, index, signed)
    elif action == LOG_KEY_ROTATE:
        _check_rotation(state, index, obj)


def _apply_move(state: _State, index: int, signed: SignedStatement | None) -> None:
    """Make the URL a ``server.url`` statement records the one later requests must use.

    With an anchor, the URL the replayed directory holds (only a statement
    the rules accepted changes it); without one, the carried statement's.
    """
    if state.replay is not None:
        url = state.replay.trust.directory.server_url
    else:
        body = None if signed is None else signed.statement.body
        url = body.get("url") if isinstance(body, dict) else None
    if isinstance(url, str) and (url.rstrip("/") != state.server_url
                                 or not state.server_url_moved):
        state.server_url, state.server_url_index = url.rstrip("/"), index
        state.server_url_moved = True


def _first_seen_issuer(state: _State, obj: dict[str, Any],
                       signed: SignedStatement | None) -> None:
    """Without an anchor, learn an unknown issuer's key from its statement signature.

    The first administrators of a log made with a trust anchor are enrolled
    by no entry (the anchor names them). Without the anchor, the verifier can
    only do what it did with the server-originated first enrolment: take the
    key the log itself shows, here the one the issuer signed its first
    statement with. The report's no-anchor warning says so.
    """
    if signed is None:
        return
    issuer = signed.statement.issuer
    keys = signed.signer_keys(issuer)
    if issuer == obj["actor"] and issuer not in state.participants and keys:
        state.participants[issuer] = _Participant(keys[0], "")


def _open_trusted(state: _State, position: int, trusted: TrustedCheckpoint,
                  keys: Sequence[Ed25519Verifier], origin: str | None) -> Checkpoint | None:
    """Open a checkpoint the auditor kept: signed by any of the log's keys (its time's)."""
    try:
        return open_under_any(trusted.note, keys, origin=origin)
    except ExchangeError as err:
        state.add(None, f"trusted[{position}].signature", "a checkpoint signed by the log key",
                  _short(str(err)), "a trusted checkpoint does not verify")
        return None


def verify_log(
    entries: Iterable[bytes],
    log_key: Ed25519Verifier | str,
    checkpoint: bytes,
    *,
    trusted: Sequence[TrustedCheckpoint] = (),
    origin: str | None = None,
    max_findings: int = 100,
    anchor: TrustAnchor | None = None,
    rotations: Sequence[bytes] = (),
) -> VerifyReport:
    """Verify a whole log (entries from index 0, in order) against its latest checkpoint.

    ``log_key`` is the log's first key (the one ``log.init`` names);
    ``rotations`` are the key-transition notes, oldest first, each signed by
    the key in force and the next one (``exchange.audit.checkpoint``). Each
    must match a ``log.key_rotate`` entry at its tree size and the root of
    the entries there; the latest checkpoint must be signed by the last key.

    ``trusted`` are checkpoints the auditor accepted earlier: each must be
    consistent with the latest (its server proof is checked when given) and
    its root must equal the root recomputed from the entries at its size,
    which detects rollback and forks. ``anchor`` is the trust anchor the
    auditor pinned: with it, the signed statements in the log are replayed
    from the anchor's administrators on (``exchange.audit._replay``), keys
    and rights come from them, and every statement, refusal and commit is
    checked against them; without it the report carries a warning that this
    was not done. Stops after ``max_findings``. Returns a
    :class:`VerifyReport`; call ``raise_for_findings()`` to turn it into an error.
    """
    verifier = parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
    if not isinstance(verifier, Ed25519Verifier):
        raise TypeError("log_key must be an Ed25519 (type 0x01) verifier key")
    report = VerifyReport()
    state = _State(report=report, max_findings=max_findings)
    if anchor is None:
        report.warnings.append(NO_ANCHOR)
    else:
        state.replay = Replay(anchor, state.add)
        report.anchor = anchor.fingerprint
    state.retention = Retention(state.add, state.replay)
    with contextlib.suppress(_Stop):
        _verify(state, entries, verifier, checkpoint_note=checkpoint, trusted=trusted,
                origin=origin, rotations=rotations)
    return report


def _key_chain(state: _State, first: Ed25519Verifier, rotations: Sequence[bytes],
               checks: dict[int, list[tuple[str, Checkpoint]]]) -> list[Ed25519Verifier]:
    """Return the log keys in order, from ``first`` through every valid transition.

    Each transition's tree is compared with the entries' root at its size;
    the entries' ``log.key_rotate`` at that index is expected (``state.rotations``).
    """
    keys = [first]
    for position, note in enumerate(rotations):
        try:
            checkpoint, new = open_transition(note, keys[-1])
        except ExchangeError as err:
            state.add(None, f"rotations[{position}]",
                      "a note signed by the log key in force and the new key", _short(str(err)),
                      "a log-key transition does not verify: later keys are not accepted")
            break
        checks.setdefault(checkpoint.size, []).append((f"rotations[{position}]", checkpoint))
        state.rotations[checkpoint.size] = new.vkey()
        keys.append(new)
    return keys


def _check_rotation(state: _State, index: int, obj: dict[str, Any]) -> None:
    """A ``log.key_rotate`` entry must be one of the verified transitions, at its size."""
    expected = state.rotations.pop(index, None)
    found = obj["details"].get("new_key")
    if expected != found:
        state.add(index, "details.new_key", _short(expected or "no rotation at this index"),
                  _short(found), "a log-key rotation no dual-signed transition introduces")


def _verify(state: _State, entries: Iterable[bytes], log_key: Ed25519Verifier, *,
            checkpoint_note: bytes, trusted: Sequence[TrustedCheckpoint],
            origin: str | None, rotations: Sequence[bytes]) -> None:
    report = state.report
    latest: Checkpoint | None = None
    checks: dict[int, list[tuple[str, Checkpoint]]] = {}
    keys = _key_chain(state, log_key, rotations, checks)
    try:
        latest = open_checkpoint(checkpoint_note, keys[-1], origin=origin).checkpoint
        report.checkpoint = latest
    except ExchangeError as err:
        state.add(None, "checkpoint.signature", "a checkpoint signed by the log key in force",
                  _short(str(err)), "the latest checkpoint does not verify (a log key no "
                  "dual-signed transition introduced, or a forged checkpoint)")
    for position, item in enumerate(trusted):
        old = _open_trusted(state, position, item, keys, origin)
        if old is None:
            continue
        checks.setdefault(old.size, []).append((f"trusted[{position}]", old))
        if latest is not None and old.size > latest.size:
            state.add(None, "checkpoint.size", f">= {old.size} (trusted[{position}])",
                      str(latest.size), "the log rolled back below a trusted checkpoint")
        elif latest is not None and item.proof is not None:
            try:
                verify_consistency(old.size, latest.size, item.proof, old.root, latest.root)
            except (ProofError, RootMismatch) as err:
                state.add(None, f"trusted[{position}].consistency",
                          "a valid consistency proof", _short(str(err)),
                          "the latest checkpoint is not consistent with a trusted one (fork)")
    if latest is not None:
        checks.setdefault(latest.size, []).append(("checkpoint", latest))
    log_origin = latest.origin if latest is not None else origin
    log_vkey = log_key.vkey()
    replay = state.replay
    if replay is not None:
        replay.check_log(log_vkey, log_origin)
    tree = MerkleTree()
    sha256 = hashlib.sha256
    prev = ZERO_PREV
    index = -1
    for index, data in enumerate(entries):
        if checks:
            _compare_roots(state, tree, checks.pop(tree.size, ()))
        tree.extend((sha256(LEAF_PREFIX + data).digest(),))
        prev_hex = prev.hex()
        obj = _decode_valid(state, index, data, prev_hex)
        if replay is not None:
            replay.note_actor(UNKNOWN_ACTOR if obj is None else obj["actor"])
        if obj is None:
            prev = sha256(data).digest()
            continue
        if obj["prev"] != prev_hex:
            state.add(index, "prev", prev_hex, _short(obj["prev"]),
                      f"prev does not equal the hash of entry {index - 1}: that entry was "
                      "altered, or entries were removed, inserted or reordered here")
        _check_entry(state, index, obj, log_origin, log_vkey)
        prev = sha256(data).digest()
    report.entries = index + 1
    for size in sorted(state.rotations):
        state.add(size, "action", "log.key_rotate", "no such entry at the transition's size",
                  "a log-key transition the log does not record")
    report.root = tree.root()
    _compare_roots(state, tree, checks.pop(tree.size, ()))
    for size, pending in sorted(checks.items()):
        for name, _ in pending:
            state.add(None, f"{name}.size", f"at least {size} entries", str(report.entries),
                      "the entries end before the checkpoint's tree size (truncated log)")
    if latest is not None and report.entries > latest.size:
        state.add(latest.size, "checkpoint.size", str(report.entries), str(latest.size),
                  "entries beyond the latest checkpoint are not covered by any signature")


def _cheap_shape_ok(obj: dict[str, Any]) -> bool:
    return isinstance(obj.get("details"), dict) and "prev" in obj


def _compare_roots(state: _State, tree: MerkleTree,
                   pending: Iterable[tuple[str, Checkpoint]]) -> None:
    for name, checkpoint in pending:
        root = tree.root()
        if root != checkpoint.root:
            state.add(tree.size - 1 if tree.size else None, f"{name}.root",
                      checkpoint.root.hex(),
                      root.hex(),
                      f"the first {tree.size} entries do not hash to the checkpoint root: "
                      "the log was rewritten or forked at or before this entry")
