"""Test helpers that speak the signed-statement protocol over a raw ``SignedSession``.

The client library (``exchange.client``) is what users run; many server tests
drive the HTTP API directly instead, and need request bodies with valid
statements. These helpers build them with the same pure modules the client
uses (``exchange.crypto.statement`` / ``chains``), replaying the chains from
the server's listings (the server is trusted here: these are server tests;
the client's own checks are tested through the client library).

Each helper sends its request and returns the :class:`Answer` (status, JSON
body, audit index), with the new case id and keys where it makes them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nacl.signing

from exchange.crypto.anchor import TrustAnchor, parse_anchor
from exchange.crypto.chains import Member, TrustState
from exchange.crypto.envelope import CaseKey, wrap_envelope
from exchange.crypto.keys import ParticipantIdentity, PublicBundle
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    Statement,
    case_chain,
    issued_at,
    make_signature,
    parse_signed_statement,
)
from exchange.transport.client import SignedSession

__all__ = [
    "Answer",
    "add_member",
    "b64",
    "case_create_statement",
    "case_head",
    "change_keys",
    "create_case",
    "directory_change",
    "enrol",
    "enrol_statement",
    "load_anchor",
    "member_add_statement",
    "new_epoch_request",
    "remove_member",
    "rotate_epoch",
    "server_state",
    "sign",
    "suspend",
    "swap_text",
]


def b64(data: bytes) -> str:
    """Standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def load_anchor(data_dir: Path) -> TrustAnchor:
    """Return the trust anchor ``exchange server init`` wrote into ``data_dir``."""
    return parse_anchor((Path(data_dir) / "trust.json").read_bytes())


@dataclass(frozen=True)
class Answer:
    """A server's answer: status, JSON body (None if not JSON) and the audit index header."""

    status: int
    body: Any
    audit_index: int | None


async def _json(session: SignedSession, method: str, path: str, body: Any = None) -> Answer:
    response = await session.request(method, path, json=body)
    async with response:
        index = response.headers.get("Exchange-Audit-Index")
        try:
            data = await response.json(content_type=None)
        except ValueError:
            data = None
        return Answer(response.status, data, int(index) if index and index.isdigit() else None)


async def _listing(session: SignedSession, chain: str) -> list[tuple[int, bytes]]:
    path = ("/v1/directory/statements" if chain == DIRECTORY_CHAIN
            else f"/v1/cases/{chain.removeprefix('case:')}/statements")
    answer = await _json(session, "GET", path)
    if answer.status != 200:
        raise AssertionError(f"listing {chain} failed: {answer.status} {answer.body}")
    return [(int(item["audit_index"]), base64.b64decode(item["statement"]))
            for item in answer.body["statements"]]


async def server_state(session: SignedSession, anchor: TrustAnchor,
                       *case_ids: str) -> TrustState:
    """Return the trust state replayed from the server's listings (trusting the server)."""
    items = await _listing(session, DIRECTORY_CHAIN)
    for case_id in case_ids:
        items += await _listing(session, case_chain(case_id))
    state = TrustState(anchor)
    for index, data in sorted(items):
        state.apply(parse_signed_statement(data), index=index)
    return state


def sign(state: TrustState, *, kind: str, chain: str, issuer: str,
         key: nacl.signing.SigningKey, body: dict[str, Any],
         co_signers: Sequence[tuple[str, nacl.signing.SigningKey]] = (),
         check: bool = True) -> SignedStatement:
    """Return a statement extending ``chain`` in ``state``, signed by ``issuer`` (+ co-signers).

    With ``check`` (default) it is applied to a copy of ``state`` first, so a
    test notices at once when it builds something the rules refuse.
    """
    seq, head = state.chain_head(chain)
    statement = Statement(type=kind, chain=chain, seq=seq, prev=head, issuer=issuer,
                          issued_at=issued_at(time.time()), origin=state.anchor.origin,
                          body=body)
    signed = SignedStatement(statement, (make_signature(statement, key, issuer),
                                         *(make_signature(statement, k, by)
                                           for by, k in co_signers)))
    if check:
        state.copy().apply(signed)
    return signed


def _key(session: SignedSession) -> nacl.signing.SigningKey:
    return session._key


def enrol_statement(state: TrustState, session: SignedSession, participant: dict[str, Any],
                    possession: bytes, role: str, *, organisation: str, country: str,
                    check: bool = True) -> SignedStatement:
    """Return the administrator's participant.enrol statement for a bundle (JSON object).

    Attack tests pass ``check=False`` with a bundle the rules refuse (e.g. a hostile id).
    """
    return sign(state, kind="participant.enrol", chain=DIRECTORY_CHAIN, issuer=session.keyid,
                key=_key(session), check=check, body={
                    "participant": participant, "possession": b64(possession), "role": role,
                    "organisation": organisation, "country": country})


async def enrol(session: SignedSession, anchor: TrustAnchor, identity: ParticipantIdentity,
                role: str, *, organisation: str = "", country: str = "DE",
                state: TrustState | None = None) -> Answer:
    """Enrol ``identity`` with ``role`` through an administrator's ``session``.

    With ``state`` (kept by the caller across several enrolments) the directory
    is not read again, and the accepted statement is applied to it.
    """
    fresh = state is None
    if state is None:
        state = await server_state(session, anchor)
    signed = enrol_statement(state, session, identity.public_bundle().to_json_obj(),
                             identity.possession_proof(), role,
                             organisation=organisation or f"Org of {identity.id}",
                             country=country)
    answer = await _json(session, "POST", "/v1/participants",
                         {"statement": b64(signed.encode())})
    if not fresh and answer.status == 201:
        state.apply(signed, index=answer.audit_index)
    return answer


def swap_text(encoded: bytes, placeholder: str, text: str) -> bytes:
    """Return a signed statement's bytes with ``placeholder`` replaced by ``text`` (JSON-escaped).

    For attack tests that must reach the server's parser with what the
    statement module refuses to build (a hostile case id in the chain name, a
    lone surrogate): the signature no longer matches, and the server must
    refuse the request on the content before (or regardless of) that.
    """
    return encoded.replace(placeholder.encode("ascii"),
                           json.dumps(text).removeprefix('"').removesuffix('"').encode("ascii"))


def _member(state: TrustState, participant_id: str) -> Member:
    known = state.directory.get(participant_id)
    return Member(id=participant_id, role=known.role, fingerprint=known.fingerprint)


def _bundle(state: TrustState, participant_id: str) -> PublicBundle:
    return state.directory.get(participant_id).bundle


def _entry(member: str, epoch: int, envelope: bytes) -> dict[str, Any]:
    return {"member": member, "epoch": epoch, "sha256": hashlib.sha256(envelope).hexdigest()}


def case_create_statement(state: TrustState, session: SignedSession, case_id: str, *,
                          recipient: str, envelope: bytes, metadata: bytes,
                          check: bool = True) -> SignedStatement:
    """Return the session's case.create statement (the session's participant, sole member).

    Attack tests pass ``check=False`` with values the rules refuse.
    """
    me = session.keyid
    return sign(state, kind="case.create", chain=case_chain(case_id),
                issuer=me, key=_key(session), check=check, body={
                    "case": case_id, "epoch": 1, "recipient": recipient,
                    "members": [_member(state, me).to_json()],
                    "envelopes": [_entry(me, 1, envelope)],
                    "metadata_sha256": hashlib.sha256(metadata).hexdigest()})


async def create_case(session: SignedSession, anchor: TrustAnchor, *,
                      metadata: bytes = b"sealed metadata (test)",
                      key: CaseKey | None = None) -> tuple[Answer, str, CaseKey]:
    """Create a case as the session's prosecutor; return (answer, case id, epoch-1 key).

    The case id derives from the first key (``CaseKey.new_case``), as the server requires.
    """
    state = await server_state(session, anchor)
    key = key or CaseKey.new_case()
    case_id = key.case_id
    envelope = wrap_envelope(key, _bundle(state, session.keyid).recipient())
    signed = case_create_statement(state, session, case_id, recipient=key.recipient().to_string(),
                                   envelope=envelope, metadata=metadata)
    answer = await _json(session, "POST", "/v1/cases", {
        "metadata": b64(metadata), "statement": b64(signed.encode()), "envelope": b64(envelope)})
    return answer, case_id, key


def member_add_statement(state: TrustState, session: SignedSession, case_id: str,
                         member: dict[str, str], envelopes: dict[int, bytes], *,
                         check: bool = True) -> SignedStatement:
    """Return the session's case.member_add statement for ``member`` (a Member JSON object).

    Attack tests pass ``check=False`` with a member the rules refuse (e.g. a hostile id).
    """
    return sign(state, kind="case.member_add", chain=case_chain(case_id), issuer=session.keyid,
                key=_key(session), check=check, body={
                    "member": member,
                    "envelopes": [_entry(member["id"], e, d) for e, d in envelopes.items()]})


async def add_member(session: SignedSession, anchor: TrustAnchor, case_id: str,
                     participant_id: str, keys: dict[int, CaseKey]) -> Answer:
    """Add ``participant_id`` to the case, wrapping each of ``keys`` (epoch -> key) for them."""
    state = await server_state(session, anchor, case_id)
    bundle = _bundle(state, participant_id)
    envelopes = {e: wrap_envelope(k, bundle.recipient()) for e, k in keys.items()}
    signed = member_add_statement(state, session, case_id,
                                  _member(state, participant_id).to_json(), envelopes)
    return await _json(session, "POST", f"/v1/cases/{case_id}/members", {
        "statement": b64(signed.encode()),
        "envelopes": {str(e): b64(d) for e, d in envelopes.items()}})


async def new_epoch_request(session: SignedSession, anchor: TrustAnchor, case_id: str, *,
                            removed: str | None) -> tuple[str, dict[str, Any], CaseKey]:
    """Build (path, JSON body, new key) of a removal or rotation, without sending it.

    For tests that send the request themselves (e.g. a captured request replayed).
    """
    state = await server_state(session, anchor, case_id)
    case = state.case(case_id)
    number = case.epoch + 1
    key = CaseKey.generate(case_id, number)
    remaining = sorted(m for m in case.members if m != removed)
    envelopes = {m: wrap_envelope(key, _bundle(state, m).recipient()) for m in remaining}
    body: dict[str, Any] = {
        "epoch": number, "recipient": key.recipient().to_string(),
        "members": [_member(state, m).to_json() for m in remaining],
        "envelopes": [_entry(m, number, d) for m, d in envelopes.items()]}
    kind, path = "case.epoch_rotate", f"/v1/cases/{case_id}/epochs"
    if removed is not None:
        body["removed"] = removed
        kind, path = "case.member_remove", f"/v1/cases/{case_id}/members/{removed}/remove"
    signed = sign(state, kind=kind, chain=case_chain(case_id), issuer=session.keyid,
                  key=_key(session), body=body)
    return path, {"statement": b64(signed.encode()),
                  "envelopes": {m: b64(d) for m, d in envelopes.items()}}, key


async def _new_epoch(session: SignedSession, anchor: TrustAnchor, case_id: str, *,
                     removed: str | None) -> tuple[Answer, CaseKey]:
    path, body, key = await new_epoch_request(session, anchor, case_id, removed=removed)
    return await _json(session, "POST", path, body), key


async def remove_member(session: SignedSession, anchor: TrustAnchor, case_id: str,
                        participant_id: str) -> tuple[Answer, CaseKey]:
    """Remove a member; return (answer, the new epoch's key)."""
    return await _new_epoch(session, anchor, case_id, removed=participant_id)


async def rotate_epoch(session: SignedSession, anchor: TrustAnchor,
                       case_id: str) -> tuple[Answer, CaseKey]:
    """Start a new epoch for the same members; return (answer, the new key)."""
    return await _new_epoch(session, anchor, case_id, removed=None)


async def directory_change(session: SignedSession, anchor: TrustAnchor, *, kind: str,
                           body: dict[str, Any], method: str, path: str,
                           co_signers: Sequence[tuple[str, nacl.signing.SigningKey]] = ()
                           ) -> Answer:
    """Send an administrator's directory statement of ``kind`` (suspend, role, ...)."""
    state = await server_state(session, anchor)
    signed = sign(state, kind=kind, chain=DIRECTORY_CHAIN, issuer=session.keyid,
                  key=_key(session), body=body, co_signers=co_signers)
    return await _json(session, method, path, {"statement": b64(signed.encode())})


async def suspend(session: SignedSession, anchor: TrustAnchor, participant_id: str, *,
                  reason: str = "test") -> Answer:
    """Suspend ``participant_id`` (an administrator's session)."""
    return await directory_change(
        session, anchor, kind="participant.suspend",
        body={"participant": participant_id, "reason": reason},
        method="POST", path=f"/v1/participants/{participant_id}/suspend")


async def change_keys(session: SignedSession, anchor: TrustAnchor,
                      new: ParticipantIdentity, *, reason: str = "test") -> Answer:
    """Record ``new`` as the keys of participant ``new.id`` (an administrator's session)."""
    return await directory_change(
        session, anchor, kind="participant.key_change",
        body={"participant": new.public_bundle().to_json_obj(),
              "possession": b64(new.possession_proof()), "reason": reason},
        method="PUT", path=f"/v1/participants/{new.id}/keys")


async def case_head(session: SignedSession, anchor: TrustAnchor, case_id: str) -> str:
    """Return the hash of the case chain's newest statement (what a commit names)."""
    head = (await server_state(session, anchor, case_id)).case(case_id).head
    assert head is not None
    return head
