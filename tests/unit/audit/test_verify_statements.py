"""The verifier replays the trust rules (issue 10 §4): for each rule, a synthetic log where it
holds, and the same log tampered the way a hostile operator (or a colluding participant)
would, where the verifier names the entry and the rule broken."""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from exchange.audit.checkpoint import Checkpoint, sign_transition
from exchange.audit.entry import DetailValue, RequestEvidence
from exchange.audit.note import Ed25519Signer
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.audit.verify import Finding, VerifyReport, verify_log
from exchange.crypto.chains import Member
from exchange.crypto.jcs import canonicalize
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    case_chain,
    parse_signed_statement,
)
from tests.unit.audit.logfactory import enrol_details
from tests.unit.audit.statementlog import (
    Person,
    StatementLog,
    digest,
    person,
    recipient,
    route_for,
    standard,
)

_MEMBER_ADD = 5  # standard(): log.init, three enrolments, c1's creation, then its member add


def _rules(report: VerifyReport) -> set[tuple[int | None, str]]:
    return {(f.index, f.rule) for f in report.findings}


def _only(report: VerifyReport, index: int, rule: str) -> Finding:
    """The report's findings are exactly one, at ``index`` for ``rule``; return it."""
    assert [(f.index, f.rule) for f in report.findings] == [(index, rule)], report.findings
    return report.findings[0]


def test_a_genuine_log_with_statements_verifies_and_says_against_which_anchor() -> None:
    slog, pros, coord, aud = standard()
    slog.download(coord, "c1")
    slog.envelope_get(coord, "c1", 1)
    slog.commit(coord, "c1")
    slog.rotate(pros, "c1")
    slog.commit(pros, "c1")
    new = person("coord", "coordinator", label="coord-2")
    slog.key_change(coord, new)
    slog.download(new, "c1", "ev-2")
    slog.remove_member(pros, "c1", new)
    slog.access(aud, "audit.read", "GET", "/v1/audit/tile/entries/000",
                object="tile/entries/000", details={"resource": "tile/entries/000"})
    slog.access(new, "case.show", "GET", "/v1/cases/c1", case="c1", outcome="denied",
                reason="not-a-member")
    report = slog.verify()
    assert report.ok, report.findings
    assert report.warnings == [] and report.anchor == slog.anchor.fingerprint
    # Without the anchor: the same log, no findings, but a warning that nothing was replayed.
    bare = slog.verify(anchor=None)
    assert bare.ok and [w.rule for w in bare.warnings] == ["no-anchor"]


@pytest.mark.parametrize("anchored", [True, False], ids=["anchor", "no-anchor"])
def test_requests_must_be_signed_for_the_url_in_force(anchored: bool) -> None:
    slog, _, coord, _ = standard()
    slog.access(coord, "case.list", "GET", "/v1/cases")  # the first URL, before the move
    moved = slog.directory_statement("server.url", {"url": "https://new.example"})
    slog.access(coord, "case.list", "GET", "https://new.example/v1/cases")
    assert slog.verify(anchor=anchored or None).findings == []
    stale = slog.access(coord, "case.list", "GET", "/v1/cases")  # the old URL, after it
    report = slog.verify(anchor=anchored or None)
    assert [(f.index, f.field, f.found) for f in report.findings] == [
        (stale, "request", "https://x.example")]
    assert report.findings[0].expected == (f"https://new.example (recorded by the server.url "
                                           f"statement at entry {moved})")


def test_the_anchor_must_be_the_logs() -> None:
    slog, *_ = standard()
    other = StatementLog(origin="other.example/log")
    report = slog.verify(anchor=other.anchor)
    assert (None, "anchor-mismatch") in _rules(report)  # another log key and origin
    assert (0, "anchor-mismatch") in _rules(report)  # log.init names another anchor
    # and the statements, made under another origin, are not this anchor's log's
    assert (1, "wrong-origin") in _rules(report)


# -- the directory: who may change keys, roles and status ---------------------------------


def test_an_auditor_changing_a_members_keys_is_named() -> None:
    slog, _, coord, aud = standard()
    mallory = person("coord", "coordinator", label="mallory")
    # The auditor colludes with the server: it issues the key change itself...
    index = slog.key_change(coord, mallory, issuer=aud, signers=[aud, mallory])
    _only(slog.verify(), index, "not-admin")
    # ...and what the substituted key signs afterwards is not the member's.
    later = slog.download(mallory, "c1")
    report = slog.verify()
    assert [(f.index, f.field) for f in report.findings][1:] == [(later, "request.signature")]


def test_an_admin_signed_key_change_logged_as_the_auditors_request_is_named() -> None:
    slog, _, coord, aud = standard()
    index = slog.key_change(coord, person("coord", "coordinator", label="c2"), actor=aud)
    finding = _only(slog.verify(), index, "statement-mismatch")
    assert finding.field == "actor" and finding.expected == "admin" and finding.found == "aud"


def test_a_key_change_signed_only_by_the_admin_is_named() -> None:
    slog, _, coord, _ = standard()
    operator_key = person("coord", "coordinator", label="operator")
    index = slog.key_change(coord, operator_key, signers=[slog.admin])
    finding = _only(slog.verify(), index, "no-possession")
    assert "proof of possession" in finding.message


def test_an_administrator_statement_signed_by_a_non_administrator_is_named() -> None:
    slog, pros, coord, _ = standard()
    index = slog.suspend(coord, issuer=pros)
    assert _only(slog.verify(), index, "not-admin").field == "details.statement"
    slog2, pros2, _, _ = standard()
    index = slog2.directory_statement("admin.set", {"admins": [pros2.pid], "quorum": 1},
                                      issuer=pros2)
    _only(slog2.verify(), index, "not-admin")


def test_a_suspended_participant_does_nothing_afterwards() -> None:
    slog, _, coord, _ = standard()
    slog.download(coord, "c1")
    slog.suspend(coord)
    slog.access(coord, "evidence.download", "GET", "/v1/evidence/ev-1/content", case="c1",
                object="ev-1", outcome="denied", reason="participant-suspended")
    assert slog.verify().ok  # refused: fine
    index = slog.download(coord, "c1", "ev-9")
    _only(slog.verify(), index, "suspended")
    slog.directory_statement("participant.reinstate", {"participant": coord.pid,
                                                       "reason": "back"}, object=coord.pid)
    slog.download(coord, "c1", "ev-10")
    assert [f.index for f in slog.verify().findings] == [index]


def test_an_unknown_participant_is_named() -> None:
    slog, *_ = standard()
    ghost = person("ghost", "prosecutor")
    index = slog.download(ghost, "c1")
    report = slog.verify()
    assert [(f.index, f.field) for f in report.findings] == [(index, "actor")]


# -- cases: who may manage, who may read ---------------------------------------------------


def test_a_coordinator_adding_a_member_is_named() -> None:
    slog, _, coord, _ = standard()
    other = person("other", "coordinator")
    slog.enrol(other)
    index = slog.add_member(coord, "c1", other)
    _only(slog.verify(), index, "not-owner")


def test_a_removed_member_uploading_downloading_or_listing_is_named() -> None:
    slog, pros, coord, _ = standard()
    slog.download(coord, "c1")
    slog.remove_member(pros, "c1", coord)
    assert slog.verify().ok
    upload = slog.access(coord, "upload.create", "POST", "/v1/cases/c1/uploads", case="c1",
                         object="u" * 16)
    listing = slog.access(coord, "evidence.list", "GET", "/v1/cases/c1/evidence", case="c1")
    download = slog.download(coord, "c1", "ev-2")
    envelope = slog.envelope_get(coord, "c1", 1)
    report = slog.verify()
    assert _rules(report) == {(i, "not-member") for i in (upload, listing, download, envelope)}
    assert "was removed from" in report.findings[0].message


def test_a_fictitious_member_or_case_is_named() -> None:
    slog, _pros, _, _ = standard()
    stranger = person("stranger", "coordinator")
    slog.enrol(stranger)  # enrolled, but no statement ever adds it to c1
    index = slog.download(stranger, "c1")
    assert "is not a member of" in _only(slog.verify(), index, "not-member").message
    slog2, pros2, _, _ = standard()
    index = slog2.download(pros2, "c-nowhere")
    _only(slog2.verify(), index, "unknown-case")


def test_roles_without_case_access_are_named() -> None:
    slog, _, _, aud = standard()
    index = slog.download(aud, "c1")
    _only(slog.verify(), index, "wrong-role")
    slog2, _, coord, _ = standard()
    index = slog2.access(coord, "audit.read", "GET", "/v1/audit/tile/entries/000",
                         object="tile/entries/000", details={"resource": "tile/entries/000"})
    _only(slog2.verify(), index, "wrong-role")


def test_receipts_of_other_peoples_entries_need_an_auditor() -> None:
    slog, pros, coord, aud = standard()
    own = slog.download(coord, "c1")
    for who, index in ((coord, own), (aud, own)):
        slog.access(who, "audit.read", "GET", f"/v1/audit/receipt/{index}",
                    object=f"receipt/{index}", details={"resource": f"receipt/{index}"})
    assert slog.verify().ok
    other = slog.access(pros, "audit.read", "GET", f"/v1/audit/receipt/{own}",
                        object=f"receipt/{own}", details={"resource": f"receipt/{own}"})
    _only(slog.verify(), other, "wrong-role")


def test_an_envelope_the_chain_does_not_name_is_named() -> None:
    slog, pros, coord, _ = standard()
    slog.remove_member(pros, "c1", coord)
    index = slog.envelope_get(pros, "c1", 3)  # epoch 3 does not exist
    _only(slog.verify(), index, "unknown-envelope")


def test_a_commit_to_a_stale_epoch_or_head_is_named() -> None:
    slog, pros, coord, _ = standard()
    slog.commit(coord, "c1")
    slog.rotate(pros, "c1")
    assert slog.verify().ok
    stale = slog.commit(coord, "c1", epoch=1)
    head = slog.commit(coord, "c1", head="ab" * 32)
    missing = slog.commit(coord, "c1", head=None)
    assert _rules(slog.verify()) == {(stale, "stale-epoch"), (head, "stale-head"),
                                     (missing, "stale-head")}


# -- statements and the entries that carry them --------------------------------------------


def test_a_statement_replayed_from_another_case_is_named() -> None:
    slog, pros, _coord, _ = standard()
    slog.create_case(pros, "c2")
    assert slog.verify().ok
    # c1's member-add statement (seq 1 of case:c1) logged again as an addition to c2
    source = _fields(slog.log.entries[_MEMBER_ADD])
    index = slog.add(**{**source, "case": "c2",
                        "request": pros.actor.request("POST", "/v1/cases/c2/members", "r")})
    rules = _rules(slog.verify())
    assert (index, "statement-mismatch") in rules  # the entry's case is not the chain's
    assert (index, "chain-broken") in rules  # and case:c1 has moved past seq 1


def test_a_statement_from_another_log_is_named() -> None:
    slog, pros, _coord, _ = standard()
    other = person("other", "coordinator")
    slog.enrol(other)
    member = Member(other.pid, other.role, other.bundle.fingerprint).to_json()
    signed = slog.statement("case.member_add", case_chain("c1"), pros,
                            {"member": member, "envelopes": [
                                {"member": other.pid, "epoch": 1, "sha256": digest("x")}]},
                            origin="elsewhere.example/log")
    index = slog.log_statement(signed, actor=pros, method="POST", path="/v1/cases/c1/members",
                               case="c1")
    _only(slog.verify(), index, "wrong-origin")


def _tampered(slog: StatementLog) -> StatementLog:
    """The same log (same anchor and keys) up to just before c1's member add."""
    out = StatementLog()
    for data in slog.log.entries[1:_MEMBER_ADD]:
        out.add(**_fields(data))
    return out


def test_details_that_disagree_with_the_statement_are_named() -> None:
    slog, *_ = standard()
    entry = json.loads(slog.log.entries[_MEMBER_ADD])
    assert entry["action"] == "case.member_add"
    assert _tampered(slog).verify().ok
    for name, value in (("participant", "someone"), ("role", "prosecutor"), ("seq", 9),
                        ("chain", "case:c9"), ("statement_hash", "00" * 32)):
        tampered = _tampered(slog)
        details = dict(entry["details"], **{name: value})
        index = tampered.add(**{**_fields(slog.log.entries[_MEMBER_ADD]), "details": details})
        finding = _only(tampered.verify(), index, "statement-mismatch")
        assert finding.field == f"details.{name}"
        assert finding in tampered.verify(anchor=None).findings  # needs no anchor
        assert f"entry {index}: details.{name}: [statement-mismatch] " in str(finding)


def _fields(data: bytes) -> dict[str, Any]:
    """The builder arguments that re-create an encoded entry."""
    obj = json.loads(data)
    request = obj["request"]
    return {k: obj[k] for k in ("actor", "actor_key", "action", "case", "object", "outcome",
                                "reason", "details")} | {
        "request": None if request is None else RequestEvidence(
            signature_input=request["signature_input"], signature=request["signature"],
            covered=tuple((a, b) for a, b in request["covered"]))}


def test_a_statement_on_an_entry_of_another_action_or_a_refusal_is_named() -> None:
    slog, *_ = standard()
    fields = _fields(slog.log.entries[_MEMBER_ADD])
    tampered = _tampered(slog)
    smuggled = tampered.add(**{**fields, "action": "case.show", "object": None,
                               "request": _fields(tampered.log.entries[1])["request"]})
    tampered_rules = {(f.index, f.rule, f.field) for f in tampered.verify().findings}
    assert (smuggled, "statement-mismatch", "action") in tampered_rules
    refused = _tampered(slog)
    index = refused.add(**{**fields, "outcome": "denied", "reason": "forbidden"})
    assert [(f.index, f.field) for f in refused.verify().findings] == [
        (index, "details.statement")]


def test_an_altered_or_unreadable_statement_is_named() -> None:
    slog, *_ = standard()
    entry = json.loads(slog.log.entries[_MEMBER_ADD])
    raw = json.loads(base64.b64decode(entry["details"]["statement"]))
    raw["statement"]["body"]["member"]["role"] = "prosecutor"  # promote on the way through
    altered = base64.b64encode(canonicalize(raw)).decode()
    tampered = _tampered(slog)
    fields = _fields(slog.log.entries[_MEMBER_ADD])
    index = tampered.add(**{**fields, "details": dict(entry["details"], statement=altered)})
    finding = _only(tampered.verify(), index, "statement-invalid")
    assert "does not verify" in finding.found
    index = tampered.add(**{**fields, "details": dict(entry["details"], statement="%%")})
    assert (index, "statement-invalid") in _rules(tampered.verify())


def test_a_fork_or_a_gap_in_a_case_chain_is_named() -> None:
    slog, pros, coord, _ = standard()
    seq, head = slog.trust.chain_head(case_chain("c1"))
    body = {"epoch": 2, "recipient": recipient("fork"),
            "members": [slog.member(pros), slog.member(coord)],
            "envelopes": [{"member": m, "epoch": 2, "sha256": digest(m)}
                          for m in (pros.pid, coord.pid)]}
    slog.rotate(pros, "c1")
    # a second statement with the same seq and prev: a fork
    fork = slog.statement("case.epoch_rotate", case_chain("c1"), pros, body, seq=seq, prev=head)
    fork_index = slog.log_statement(fork, actor=pros, method="POST",
                                    path="/v1/cases/c1/epochs", case="c1")
    # one that skips a seq: a gap
    gap = slog.statement("case.epoch_rotate", case_chain("c1"), pros,
                         {**body, "epoch": 3}, seq=seq + 2)
    gap_index = slog.log_statement(gap, actor=pros, method="POST",
                                   path="/v1/cases/c1/epochs", case="c1")
    assert _rules(slog.verify()) == {(fork_index, "chain-broken"), (gap_index, "chain-broken")}


def test_refusals_must_carry_the_named_participants_valid_signature() -> None:
    slog, _, coord, _ = standard()
    genuine = slog.download(coord, "c9", outcome="denied", reason="not-a-member")
    assert slog.verify().ok and genuine
    # "coord tried to download ev-7 and was refused", signed with a random key
    forged = slog.download(coord, "c1", "ev-7", outcome="denied", reason="not-a-member",
                           key=SigningKey.generate())
    # ... or with no request at all
    bare = slog.add(actor=coord.pid, actor_key="", action="evidence.download", case="c1",
                    object="ev-8", outcome="denied", reason="not-a-member")
    report = slog.verify()
    assert [(f.index, f.field) for f in report.findings] == [
        (forged, "request.signature"), (bare, "request")]
    # The same holds without a trust anchor: it is a signature check.
    assert [(f.index, f.field) for f in slog.verify(anchor=None).findings] == [
        (forged, "request.signature"), (bare, "request")]


# -- logs from before statements -------------------------------------------------------------


def test_old_entries_without_statements_are_reported_not_invented() -> None:
    slog = StatementLog()
    admin, pros = slog.admin, person("pros", "prosecutor")
    genesis = dict(enrol_details(admin.actor), fingerprint=admin.bundle.fingerprint)
    slog.add(actor="-", actor_key="", action="participant.enrol", details=genesis)
    enrol = slog.add(actor="admin", actor_key=admin.bundle.fingerprint,
                     action="participant.enrol", object=pros.pid,
                     request=admin.actor.request("POST", "/v1/participants", "a"),
                     details=dict(enrol_details(pros.actor),
                                  fingerprint=pros.bundle.fingerprint))
    create = slog.add(actor="pros", actor_key=pros.bundle.fingerprint, action="case.create",
                      case="old-case", request=pros.actor.request("POST", "/v1/cases", "b"),
                      details={"epoch": 1})
    slog.download(pros, "old-case")  # by a participant only an unsigned entry enrolled
    report = slog.verify()
    assert _rules(report) == {(enrol, "unsigned-statement"), (create, "unsigned-statement")}
    assert "cannot be checked" in report.findings[0].message
    # The server-originated first enrolment must be the anchor's administrator.
    other = StatementLog()
    other.add(actor="-", actor_key="", action="participant.enrol",
              details=enrol_details(person("admin", "admin", label="impostor").actor))
    assert (1, "anchor-mismatch") in _rules(other.verify())


# -- the chain property: reordering or dropping statements is always detected --------------


@cache
def _chain() -> tuple[tuple[Person, ...], tuple[SignedStatement, ...]]:
    """A valid history: enrolments, a case and its statements, then the final head."""
    slog, pros, coord, _ = standard()
    others = [person(f"m{i}", "coordinator") for i in range(2)]
    for who in others:
        slog.enrol(who)
    for who in others:
        slog.add_member(pros, "c1", who)
    slog.rotate(pros, "c1")
    slog.remove_member(pros, "c1", others[0])
    statements = []
    for data in slog.log.entries[1:]:
        obj = json.loads(data)
        statements.append(parse_signed_statement(base64.b64decode(obj["details"]["statement"])))
    return (slog.admin, pros, coord, *others), tuple(statements)


def _log_as_the_server(slog: StatementLog, signed: SignedStatement, people: dict[str, Person],
                       *, original: SignedStatement | None = None) -> int:
    """Log ``signed`` on the route that logs its type (of ``original``'s when given)."""
    statement = (original or signed).statement
    case = statement.case_id
    participant = None
    if statement.chain == DIRECTORY_CHAIN:
        target = statement.body.get("participant")
        participant = target.get("id") if isinstance(target, dict) else target
    elif statement.type == "case.member_remove":
        participant = statement.body.get("removed")
    path = route_for(statement.type, case=case, participant=participant)
    details: dict[str, DetailValue] = {}
    obj = None
    if statement.chain == DIRECTORY_CHAIN:
        obj = statement.body["participant"]["id"]
    elif statement.type == "case.member_remove":
        obj = statement.body["removed"]
        path = f"/v1/cases/{case}/members/{obj}/remove"
        details["participant"] = obj
    return slog.log_statement(signed, actor=people[statement.issuer], method="POST",
                              path=path, case=case, object=obj, details=details)


def _replay_log(order: list[int]) -> VerifyReport:
    """Log the statements of :func:`_chain` in ``order``, then a commit at the true head."""
    people, statements = _chain()
    by_id = {p.pid: p for p in people}
    slog = StatementLog()
    for i in order:
        _log_as_the_server(slog, statements[i], by_id)
    final = statements[-1]
    pros = by_id["pros"]
    upload = "u" * 16
    slog.add(actor=pros.pid, actor_key=pros.bundle.fingerprint, action="evidence.commit",
             case="c1", object="ev-1",
             request=pros.actor.request("POST", f"/v1/uploads/{upload}/commit", "commit"),
             details={"upload_id": upload, "epoch": final.statement.body["epoch"],
                      "case_head": final.hash})
    return slog.verify()


def test_the_chain_fixture_verifies_in_order() -> None:
    _, statements = _chain()
    report = _replay_log(list(range(len(statements))))
    assert report.ok, report.findings


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_reordering_or_dropping_statements_is_always_detected(data: st.DataObject) -> None:
    _, statements = _chain()
    order = list(range(len(statements)))
    if data.draw(st.booleans(), label="drop"):
        del order[data.draw(st.integers(0, len(order) - 1), label="dropped")]
    else:
        order = data.draw(st.permutations(order), label="order")
        if order == sorted(order):
            i = data.draw(st.integers(0, len(order) - 2), label="swap")
            order[i], order[i + 1] = order[i + 1], order[i]
    report = _replay_log(order)
    assert any(f.rule for f in report.findings), (order, report.findings)


# -- hostile statements become findings, never crashes --------------------------------------

_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 2**53 - 1) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8)
_KEYS = ["participant", "role", "organisation", "country", "reason", "admins", "quorum", "url",
         "case", "epoch", "recipient", "members", "envelopes", "metadata_sha256", "member",
         "removed", "policy"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(
           ["participant.enrol", "participant.key_change", "participant.suspend",
            "participant.reinstate", "participant.role", "admin.set", "server.url",
            "case.create", "case.member_add", "case.member_remove", "case.epoch_rotate",
            "case.envelope_add", "case.policy"])),
       body=st.dictionaries(st.sampled_from(_KEYS), _JSON, max_size=6))
def test_hostile_statement_bodies_become_findings(kind: str, body: dict[str, Any]) -> None:
    slog, pros, _, _ = standard()
    issuer = slog.admin if kind.startswith(("participant.", "admin.", "server.")) else pros
    chain = DIRECTORY_CHAIN if issuer is slog.admin else case_chain("c1")
    signed = slog.statement(kind, chain, issuer, body)
    target = body.get("participant")
    participant = target.get("id") if isinstance(target, dict) else target
    index = slog.log_statement(signed, actor=issuer, method="POST",
                               path=route_for(kind, case="c1", participant=str(participant)),
                               case=None if issuer is slog.admin else "c1",
                               object=None)
    report = slog.verify()
    assert all(f.index == index for f in report.findings), report.findings


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_genuine_statements_with_one_value_replaced_become_findings(data: st.DataObject) -> None:
    """Each statement of the chain fixture, re-signed with one value anywhere in its body
    replaced by arbitrary JSON: findings at that entry only, never an exception."""
    people, statements = _chain()
    by_id = {p.pid: p for p in people}
    position = data.draw(st.integers(0, len(statements) - 1), label="statement")
    slog = StatementLog()
    for signed in statements[:position]:
        _log_as_the_server(slog, signed, by_id)
    original = statements[position].statement
    body = json.loads(json.dumps(dict(original.body)))
    target: Any = body
    while True:
        keys = list(target) if isinstance(target, dict) else list(range(len(target)))
        key = data.draw(st.sampled_from(keys), label="key")
        if isinstance(target[key], dict | list) and target[key] and data.draw(st.booleans()):
            target = target[key]
            continue
        target[key] = data.draw(_JSON, label="value")
        break
    issuer = by_id[original.issuer]
    subject = body.get("participant")
    new_keys = subject.get("id") if isinstance(subject, dict) else None
    signers = [issuer, *([by_id[new_keys]] if isinstance(new_keys, str) and new_keys in by_id
                         else [])]
    signed = slog.statement(original.type, original.chain, issuer, body, signers=signers)
    index = _log_as_the_server(slog, signed, by_id, original=statements[position])
    report = slog.verify()
    assert all(f.index == index for f in report.findings), report.findings


def test_log_key_rotations_are_followed_and_anything_else_is_named() -> None:
    slog, _, coord, _ = standard()
    log, old = slog.log, slog.log.log_signer
    new = Ed25519Signer(old.name, bytes(range(32, 64)))
    size = len(log.entries)
    tree = MerkleTree()
    tree.extend(leaf_hash(e) for e in log.entries)
    note = sign_transition(Checkpoint(old.name, size, tree.root()), old, new,
                           new_vkey=new.verifier().vkey())
    slog.add(actor="-", actor_key="", action="log.key_rotate",
             details={"old_key": old.verifier().vkey(), "new_key": new.verifier().vkey(),
                      "transition": base64.b64encode(note).decode()})
    slog.access(coord, "case.list", "GET", "/v1/cases")
    log.log_signer = new  # checkpoints from now on: the new key only
    report = verify_log(log.entries, old.verifier(), log.checkpoint(), anchor=slog.anchor,
                        rotations=[note])
    assert report.findings == []
    # Without the transition the new key's checkpoint is named, and so is the entry.
    bare = verify_log(log.entries, old.verifier(), log.checkpoint(), anchor=slog.anchor)
    assert {f.field for f in bare.findings} == {"checkpoint.signature", "details.new_key"}
    # A transition over another tree than the entries' is named at its size.
    forged = sign_transition(Checkpoint(old.name, size, bytes(32)), old, new,
                             new_vkey=new.verifier().vkey())
    report = verify_log(log.entries, old.verifier(), log.checkpoint(), anchor=slog.anchor,
                        rotations=[forged])
    assert [f.field for f in report.findings] == ["rotations[0].root"]
