"""Tamper tests: a real signed log of a few thousand entries; every alteration is detected
and pinpointed (entry index + field) by the offline verifier."""

from __future__ import annotations

import json
from functools import cache

import pytest
from nacl.signing import SigningKey

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.entry import entry_hash
from exchange.audit.note import Ed25519Signer
from exchange.audit.proof import consistency_proof, hashes_from_leaves
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.audit.verify import (
    Finding,
    LogVerificationError,
    TrustedCheckpoint,
    verify_log,
)
from exchange.crypto.jcs import canonicalize
from tests.unit.audit.logfactory import ORIGIN, Actor, SyntheticLog, build_log, enrol_details

SIZE = 2500


@cache
def _log() -> tuple[SyntheticLog, tuple[Actor, ...]]:
    log, actors = build_log(SIZE)
    return log, tuple(actors)


def _sign(entries: list[bytes], signer: Ed25519Signer) -> bytes:
    tree = MerkleTree()
    tree.extend(leaf_hash(e) for e in entries)
    return sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), signer)


def _edit(data: bytes, **changes: object) -> bytes:
    obj = json.loads(data)
    obj.update(changes)
    return canonicalize(obj)


def _rechain(entries: list[bytes], start: int) -> list[bytes]:
    """What a compromised server does after editing entry ``start``: fix every later prev/index."""
    out = list(entries[:start + 1])
    for i in range(start + 1, len(entries)):
        out.append(_edit(entries[i], prev=entry_hash(out[-1]).hex(), index=i))
    return out


def _fields(findings: list[Finding]) -> set[tuple[int | None, str]]:
    return {(f.index, f.field) for f in findings}


def test_genuine_log_verifies() -> None:
    log, _ = _log()
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    assert report.ok, report.findings[:3]
    assert report.entries == SIZE
    assert report.checkpoint is not None and report.root == report.checkpoint.root
    report.raise_for_findings()


def test_altered_entry_is_pinpointed_by_the_chain() -> None:
    log, _ = _log()
    entries = list(log.entries)
    entries[1234] = _edit(entries[1234], details={"size": 1})
    report = verify_log(entries, log.vkey, log.checkpoint())
    assert (1235, "prev") in _fields(report.findings)
    assert (None, "checkpoint.root") in {(None, f.field) for f in report.findings}
    with pytest.raises(LogVerificationError) as info:
        report.raise_for_findings()
    assert info.value.findings[0].index == 1235
    # An altered object is also caught at the entry itself: the request names another.
    entries[1234] = _edit(log.entries[1234], object="someone-elses-file")
    report = verify_log(entries, log.vkey, log.checkpoint())
    assert report.findings[0].index == 1234 and report.findings[0].field == "request"
    assert (1235, "prev") in _fields(report.findings)


def test_altered_request_evidence_fails_its_signature() -> None:
    log, _ = _log()
    entries = list(log.entries)
    obj = json.loads(entries[700])
    obj["request"]["covered"][1][1] = "https://x.example/v1/evidence/f700/content?secret"
    entries[700] = canonicalize(obj)
    entries = _rechain(entries, 700)
    # Even with the chain fixed and the checkpoint re-signed by a compromised log key:
    report = verify_log(entries, log.vkey, _sign(entries, log.log_signer))
    assert _fields(report.findings) == {(700, "request.signature")}


def test_forged_actor_without_key_is_detected() -> None:
    log, actors = _log()
    entries = list(log.entries)
    mallory = Actor("p1", SigningKey(bytes(32)))  # claims to be p1, signs with another key
    obj = json.loads(entries[900])
    forged = mallory.request("GET", "/v1/evidence/f900/content", "fresh")
    obj.update(actor="p1", actor_key=actors[2].fingerprint, request=forged.to_json())
    entries[900] = canonicalize(obj)
    entries = _rechain(entries, 900)
    report = verify_log(entries, log.vkey, _sign(entries, log.log_signer))
    assert (900, "request.signature") in _fields(report.findings)


def test_replayed_request_is_detected() -> None:
    log, _ = _log()
    entries = list(log.entries)
    source = json.loads(entries[600])
    entries[1600] = _edit(entries[1600], request=source["request"], actor=source["actor"],
                          actor_key=source["actor_key"], outcome="ok", reason=None)
    entries = _rechain(entries, 1600)
    report = verify_log(entries, log.vkey, _sign(entries, log.log_signer))
    # the signature is entry 600's, and it was a request for entry 600's object
    assert _fields(report.findings) == {(1600, "request.signature"), (1600, "request")}
    assert "entry 600" in report.findings[0].found
    assert "f600" in report.findings[1].expected and "f1600" in report.findings[1].found


@pytest.mark.parametrize("attack", ["delete", "insert", "reorder"])
def test_structural_tampering_is_pinpointed(attack: str) -> None:
    log, _ = _log()
    entries = list(log.entries)
    if attack == "delete":
        del entries[1500]
    elif attack == "insert":
        entries.insert(1500, entries[1499])
    else:
        entries[1500], entries[1501] = entries[1501], entries[1500]
    report = verify_log(entries, log.vkey, log.checkpoint())
    fields = _fields(report.findings)
    assert (1500, "index") in fields or (1500, "prev") in fields
    assert (1500, "prev") in fields
    assert any(f.field == "checkpoint.root" or f.field.startswith("checkpoint.") for f in
               report.findings)


def test_unsigned_entry_outside_bootstrap_is_rejected() -> None:
    log, _ = _log()
    entries = list(log.entries)
    entries[50] = _edit(entries[50], request=None)
    entries = _rechain(entries, 50)
    report = verify_log(entries, log.vkey, _sign(entries, log.log_signer))
    assert _fields(report.findings) == {(50, "request")}


def test_fork_after_checkpoint_is_detected_with_trusted_checkpoints() -> None:
    log, _ = _log()
    before_fork = log.checkpoint(2000)  # both branches agree up to here
    branch_b = log.checkpoint(2300)  # a participant's receipt from the honest branch
    forked = list(log.entries)
    forked[2100] = _edit(forked[2100], details={"rewritten": True})
    forked = _rechain(forked, 2100)
    latest = _sign(forked, log.log_signer)
    report = verify_log(forked, log.vkey, latest,
                        trusted=[TrustedCheckpoint(before_fork), TrustedCheckpoint(branch_b)])
    assert [(f.index, f.field) for f in report.findings] == [(2299, "trusted[1].root")]
    # The server's own consistency proof cannot bridge the fork either.
    leaves = [leaf_hash(e) for e in forked]
    proof = consistency_proof(hashes_from_leaves(leaves), 2300, SIZE)
    report = verify_log(forked, log.vkey, latest, trusted=[TrustedCheckpoint(branch_b, proof)])
    assert (None, "trusted[0].consistency") in _fields(report.findings)


def test_rollback_and_truncation_are_detected() -> None:
    log, _ = _log()
    trusted = TrustedCheckpoint(log.checkpoint())
    shorter = log.entries[:2000]
    report = verify_log(shorter, log.vkey, log.checkpoint(2000), trusted=[trusted])
    assert (None, "checkpoint.size") in _fields(report.findings)
    report = verify_log(shorter, log.vkey, log.checkpoint())
    assert (None, "checkpoint.size") in _fields(report.findings)


def test_wrong_log_key_and_bad_checkpoint_are_findings() -> None:
    log, _ = _log()
    other = Ed25519Signer(ORIGIN, bytes(range(32)))
    report = verify_log(log.entries, other.verifier(), log.checkpoint())
    fields = _fields(report.findings)
    assert (None, "checkpoint.signature") in fields
    assert (0, "details.log_key") in fields


def test_non_canonical_entry_is_pinpointed_and_findings_are_capped() -> None:
    log, _ = _log()
    entries = list(log.entries)
    entries[10] = entries[10].replace(b":", b": ", 1)
    report = verify_log(entries, log.vkey, log.checkpoint(), max_findings=2)
    assert report.findings[0].index == 10 and report.findings[0].field == "entry"
    assert report.truncated and len(report.findings) == 2
    assert "canonical" in str(report.findings[0])


def test_key_change_switches_the_enrolled_key() -> None:
    log = SyntheticLog(Ed25519Signer(ORIGIN, bytes(range(32))))
    admin = Actor("admin", SigningKey(bytes([1]) * 32))
    old = Actor("p0", SigningKey(bytes([2]) * 32))
    new = Actor("p0", SigningKey(bytes([3]) * 32))
    stamp = "2025-01-01T00:00:00.000000Z"

    def add(**kw: object) -> None:
        log.entries.append(log.builder.append(time=stamp, **kw)[1])  # type: ignore[arg-type]

    add(actor="-", actor_key="", action="log.init",
        details={"origin": ORIGIN, "log_key": log.vkey})
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        details=enrol_details(admin))
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        request=admin.request("POST", "/v1/participants", "a"),
        details=enrol_details(old))
    add(actor="p0", actor_key=old.fingerprint, action="participant.key_change", object="p0",
        request=old.request("PUT", "/v1/participants/p0/keys", "b"),
        details=enrol_details(new))
    add(actor="p0", actor_key=new.fingerprint, action="case.list",
        request=new.request("GET", "/v1/cases", "c"))
    assert verify_log(log.entries, log.vkey, log.checkpoint()).ok
    add(actor="p0", actor_key=new.fingerprint, action="case.list",
        request=old.request("GET", "/v1/cases", "d"))
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    assert _fields(report.findings) == {(5, "request.signature")}


@pytest.mark.parametrize("hostile", ["lone-surrogate", "deep-nesting", "unterminated-string"])
def test_hostile_entries_become_findings_not_crashes(hostile: str) -> None:
    # A compromised server writes the log: whatever bytes it stores, the auditor
    # must get a report naming the entry, never an exception or a hang.
    log, _ = _log()
    entries = list(log.entries)
    if hostile == "lone-surrogate":
        assert b'"object":"f700"' in entries[700]
        entries[700] = entries[700].replace(b'"object":"f700"', b'"object":"\\ud800"', 1)
        want = (700, "object")
    elif hostile == "deep-nesting":
        entries[700] = b"[" * 20_000 + b"]" * 20_000
        want = (700, "entry")
    else:
        obj = json.loads(entries[700])
        obj["request"]["signature_input"] = 'sig1=("@method");keyid="' + "a" * 4000
        entries[700] = canonicalize(obj)
        want = (700, "request.signature_input")
    entries = _rechain(entries, 700)
    report = verify_log(entries, log.vkey, _sign(entries, log.log_signer))
    assert want in _fields(report.findings), report.findings[:3]


def test_second_enrolment_of_a_participant_is_a_finding() -> None:
    """A re-enrolment is not a key change: the server could swap keys without the
    participant's signature. It is pinpointed and the first key stays in force."""
    log = SyntheticLog(Ed25519Signer(ORIGIN, bytes(range(32))))
    admin = Actor("admin", SigningKey(bytes([1]) * 32))
    genuine = Actor("p0", SigningKey(bytes([2]) * 32))
    substitute = Actor("p0", SigningKey(bytes([3]) * 32))
    stamp = "2025-01-01T00:00:00.000000Z"

    def add(**kw: object) -> None:
        log.entries.append(log.builder.append(time=stamp, **kw)[1])  # type: ignore[arg-type]

    add(actor="-", actor_key="", action="log.init",
        details={"origin": ORIGIN, "log_key": log.vkey})
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        details=enrol_details(admin))
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        request=admin.request("POST", "/v1/participants", "a"),
        details=enrol_details(genuine))
    assert verify_log(log.entries, log.vkey, log.checkpoint()).ok
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        request=admin.request("POST", "/v1/participants", "b"),
        details=enrol_details(substitute))
    add(actor="p0", actor_key=genuine.fingerprint, action="case.list",
        request=genuine.request("GET", "/v1/cases", "c"))
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    assert _fields(report.findings) == {(3, "details.participant")}
    assert "enrolled twice" in report.findings[0].message
    assert "participant.key_change" in report.findings[0].message
    # what the substitute key signs is not accepted as the participant's
    add(actor="p0", actor_key=substitute.fingerprint, action="case.list",
        request=substitute.request("GET", "/v1/cases", "d"))
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    assert (5, "request.signature") in _fields(report.findings)


def _small_log() -> tuple[SyntheticLog, Actor, Actor]:
    """log.init, admin, and a coordinator enrolled by the admin's signed request."""
    log = SyntheticLog(Ed25519Signer(ORIGIN, bytes(range(32))))
    admin = Actor("admin", SigningKey(bytes([1]) * 32))
    coordinator = Actor("coord", SigningKey(bytes([4]) * 32))
    _add(log, actor="-", actor_key="", action="log.init",
         details={"origin": ORIGIN, "log_key": log.vkey})
    _add(log, actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
         details=enrol_details(admin))
    _add(log, actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
         request=admin.request("POST", "/v1/participants", "e"),
         details=enrol_details(coordinator))
    return log, admin, coordinator


def _add(log: SyntheticLog, **kw: object) -> None:
    stamp = "2025-01-01T00:00:00.000000Z"
    log.entries.append(log.builder.append(time=stamp, **kw)[1])  # type: ignore[arg-type]


def test_genuine_request_for_something_else_cannot_back_an_entry() -> None:
    """The attack this closes: the server logs a coordinator's genuine, validly
    signed case listing as a download of some evidence. The signature verifies
    and is used once; only the request it signs gives the forgery away."""
    log, _, coordinator = _small_log()
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="evidence.download",
         case="case-7", object="ev-42",
         request=coordinator.request("GET", "/v1/evidence/ev-42/content", "n1"))
    assert verify_log(log.entries, log.vkey, log.checkpoint()).ok
    listing = coordinator.request("GET", "/v1/cases", "n2")  # genuine, never logged as such
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="evidence.download",
         case="case-7", object="ev-43", request=listing)
    # a genuine download of ev-42 re-labelled as one of ev-44 (with a fresh signature)
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="evidence.download",
         case="case-7", object="ev-44",
         request=coordinator.request("GET", "/v1/evidence/ev-42/content", "n3"))
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    assert _fields(report.findings) == {(4, "request"), (5, "request")}
    first, second = report.findings
    assert first.expected == "GET /v1/evidence/{eid}/content"
    assert "GET /v1/cases" in first.found
    assert "'ev-42'" in second.expected and "'ev-44'" in second.found
    assert "evidence.download" in str(first)


def test_denied_entries_and_the_server_url_are_bound_too() -> None:
    log, _, coordinator = _small_log()
    # refused before the handler parsed the path: nothing named, nothing to contradict
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="case.member_add",
         outcome="denied", reason="forbidden",
         request=coordinator.request("POST", "/v1/cases/case-1/members", "d1"))
    # refused, naming the case of the path
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="case.show",
         case="case-1", outcome="denied", reason="forbidden",
         request=coordinator.request("GET", "/v1/cases/case-1", "d2"))
    # unauthenticated refusals carry no request evidence: nothing to bind
    _add(log, actor="-", actor_key="", action="case.show", case="case-2", outcome="denied",
         reason="bad-signature")
    assert verify_log(log.entries, log.vkey, log.checkpoint()).ok
    # a fabricated refusal naming another case than the request asked for
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="case.show",
         case="case-9", outcome="denied", reason="forbidden",
         request=coordinator.request("GET", "/v1/cases/case-1", "d3"))
    # a request signed for another server than every other entry of the log
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="case.list",
         request=coordinator.request("GET", "https://elsewhere.example/v1/cases", "d4"))
    _add(log, actor="coord", actor_key=coordinator.fingerprint, action="case.list",
         request=coordinator.request("GET", "/v1/cases", "d5"))
    report = verify_log(log.entries, log.vkey, log.checkpoint())
    # entry 8, back on the log's URL, is fine: only the entry that left it is named
    assert [(f.index, f.field) for f in report.findings] == [(6, "request"), (7, "request")]
    assert "'case-1'" in report.findings[0].expected
    assert report.findings[1].expected.startswith("https://x.example (as from entry 2)")
    assert report.findings[1].found == "https://elsewhere.example"
    assert "no server.url statement recorded a move" in report.findings[1].message
