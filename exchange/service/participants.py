"""Participants: enrolment, listing, public keys, suspension, key change (issue 5 §4).

Every enrolment and key change is an audit entry whose details carry the
participant's public keys and fingerprint, so key substitution by the server
is visible to anyone verifying the log (DESIGN.md threat model). Everyone
authenticated may read public keys (members need them to wrap envelopes);
only administrators change them.
"""

from __future__ import annotations

import base64
from typing import Any

from exchange.audit.entry import DetailValue
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.chains import TrustState
from exchange.crypto.keys import PublicBundle, bundle_from_json_obj, parse_bundle
from exchange.crypto.statement import DIRECTORY_CHAIN, SignedStatement
from exchange.service.core import Actor, Operation, OpResult
from exchange.service.errors import Forbidden, InvalidRequest
from exchange.service.jsonbody import check_members, parse_object
from exchange.service.policy import Role, require_role
from exchange.service.statements import (
    accept_statement,
    replay,
    statement_details,
    statement_from_body,
    store_statement,
    then,
)
from exchange.storage._casetx import ParticipantBundle
from exchange.storage.errors import AlreadyExists, NotFound
from exchange.storage.metadata import Participant, ParticipantStatus, Transaction

__all__ = [
    "bundle_record",
    "directory_op",
    "enrol_op",
    "enrolment_details",
    "key_change_op",
    "list_op",
    "participant_record",
    "participant_view",
    "role_op",
    "show_op",
    "statements_op",
    "status_op",
    "suspend_op",
]

ADMIN_ONLY = frozenset({Role.ADMIN})


def enrolment_details(
    bundle: PublicBundle, *, role: str, organisation: str, country: str
) -> dict[str, DetailValue]:
    """Return the audit details of an enrolment or key change: every public key, in the clear."""
    return {
        "participant": bundle.id,
        "role": role,
        "organisation": organisation,
        "country": country,
        "display_name": bundle.display_name,
        "signing_key": base64.b64encode(bundle.signing_key).decode("ascii"),
        "age_recipient": bundle.age_recipient,
        "pq_recipient": bundle.pq_recipient,
        "fingerprint": bundle.fingerprint,
    }


def participant_record(
    bundle: PublicBundle, *, role: str, organisation: str, country: str, enrolled_at: int,
    enrolment_index: int | None,
) -> Participant:
    """Return the stored participant for a freshly enrolled bundle (active)."""
    return Participant(
        participant_id=bundle.id, role=role, organisation=organisation, country=country,
        display_name=bundle.display_name, signing_key=bundle.signing_key,
        age_recipient=bundle.age_recipient, fingerprint=bundle.fingerprint,
        status=ParticipantStatus.ACTIVE, enrolled_at=enrolled_at,
        enrolment_audit_index=enrolment_index,
    )


def bundle_record(bundle: PublicBundle, audit_index: int) -> ParticipantBundle:
    """Return the stored form of ``bundle``, logged by the entry at ``audit_index``."""
    return ParticipantBundle(participant_id=bundle.id, bundle=bundle.encode(),
                             audit_index=audit_index)


def participant_view(
    participant: Participant, stored: ParticipantBundle | None = None
) -> dict[str, Any]:
    """Return the JSON view of a participant: identity, status and public keys.

    With its stored bundle the view adds the post-quantum recipient and
    ``key_index``, the audit index of the entry that logged the current keys.
    """
    pq_recipient = None
    key_index = participant.enrolment_audit_index
    if stored is not None:
        pq_recipient = parse_bundle(stored.bundle).pq_recipient
        key_index = stored.audit_index
    return {
        "id": participant.participant_id,
        "role": participant.role,
        "organisation": participant.organisation,
        "country": participant.country,
        "display_name": participant.display_name,
        "status": participant.status.value,
        "fingerprint": participant.fingerprint,
        "signing_key": base64.b64encode(participant.signing_key).decode("ascii"),
        "age_recipient": participant.age_recipient,
        "pq_recipient": pq_recipient,
        "enrolled_at": participant.enrolled_at,
        "enrolment_index": participant.enrolment_audit_index,
        "key_index": key_index,
    }


def _statement(body: bytes, content_type: str | None) -> SignedStatement:
    obj = parse_object(body, content_type=content_type)
    check_members(obj, required=("statement",))
    return statement_from_body(obj)


async def _directory_statement(
    tx: Transaction, actor: Actor, anchor: TrustAnchor, body: bytes, *,
    content_type: str | None, kind: str,
) -> tuple[SignedStatement, TrustState]:
    """Parse the body's statement, check it extends the directory, and return it applied."""
    require_role(actor.role, ADMIN_ONLY, "changing the directory")
    signed = _statement(body, content_type)
    state = await replay(tx, anchor)
    accept_statement(state, signed, actor_id=actor.id, kind=kind, chain=DIRECTORY_CHAIN)
    return signed, state


def enrol_op(body: bytes, *, content_type: str | None, now: int,
             anchor: TrustAnchor) -> Operation[dict[str, Any]]:
    """Return the operation enrolling a participant (``participant.enrol`` statement)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        signed, _ = await _directory_statement(
            tx, actor, anchor, body, content_type=content_type, kind="participant.enrol")
        stmt_body = signed.statement.body
        bundle = bundle_from_json_obj(stmt_body["participant"])
        role = str(stmt_body["role"])
        organisation, country = str(stmt_body["organisation"]), str(stmt_body["country"])
        try:
            await tx.get_participant(bundle.id)
        except NotFound:
            pass
        else:
            raise AlreadyExists(f"participant {bundle.id!r} is enrolled already")
        record = participant_record(
            bundle, role=role, organisation=organisation, country=country, enrolled_at=now,
            enrolment_index=None,
        )

        async def store(tx: Transaction, index: int) -> None:
            await tx.add_participant(participant_record(
                bundle, role=role, organisation=organisation, country=country,
                enrolled_at=now, enrolment_index=index,
            ))
            await tx.put_participant_bundle(bundle_record(bundle, index))

        details = enrolment_details(bundle, role=role, organisation=organisation,
                                    country=country)
        details.update(statement_details(signed))
        return OpResult(
            value=participant_view(record, bundle_record(bundle, 0)),
            details=details, object=bundle.id, after=then(store, store_statement(signed)),
        )

    return op


def list_op() -> Operation[list[dict[str, Any]]]:
    """Return the operation listing every participant's public view."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[list[dict[str, Any]]]:
        participants = await tx.list_participants()
        views = [participant_view(p, await _stored(tx, p.participant_id)) for p in participants]
        return OpResult(value=views,
                        details={"count": len(participants)})

    return op


def show_op(participant_id: str) -> Operation[dict[str, Any]]:
    """Return the operation showing one participant (public keys, enrolment index)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        participant = await _get(tx, participant_id)
        return OpResult(value=participant_view(participant, await _stored(tx, participant_id)))

    return op


async def _stored(tx: Transaction, participant_id: str) -> ParticipantBundle | None:
    try:
        return await tx.get_participant_bundle(participant_id)
    except NotFound:
        return None


def key_change_op(participant_id: str, body: bytes, *, content_type: str | None,
                  anchor: TrustAnchor) -> Operation[dict[str, Any]]:
    """Return the operation replacing a participant's keys (``participant.key_change``).

    The statement is signed by an administrator quorum and by the new key
    (proof of possession); the entry's details carry the new keys and the
    old fingerprint, so the change is as visible in the log as the enrolment.
    """

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        current = await _get(tx, participant_id)
        signed, _ = await _directory_statement(
            tx, actor, anchor, body, content_type=content_type, kind="participant.key_change")
        bundle = bundle_from_json_obj(signed.statement.body["participant"])
        if bundle.id != participant_id:
            raise InvalidRequest(
                f"the statement is for {bundle.id!r}, the request for {participant_id[:60]!r}"
            )
        details = enrolment_details(bundle, role=current.role,
                                    organisation=current.organisation,
                                    country=current.country)
        details["previous_fingerprint"] = current.fingerprint
        details.update(statement_details(signed))

        async def store(tx: Transaction, index: int) -> None:
            await tx.change_participant_keys(
                participant_id, display_name=bundle.display_name,
                signing_key=bundle.signing_key, age_recipient=bundle.age_recipient,
                fingerprint=bundle.fingerprint,
            )
            await tx.put_participant_bundle(bundle_record(bundle, index))

        view = participant_view(current)
        view.update(fingerprint=bundle.fingerprint, display_name=bundle.display_name,
                    age_recipient=bundle.age_recipient, pq_recipient=bundle.pq_recipient,
                    signing_key=base64.b64encode(bundle.signing_key).decode("ascii"))
        return OpResult(value=view, details=details, object=participant_id,
                        after=then(store, store_statement(signed)))

    return op


async def _get(tx: Transaction, participant_id: str) -> Participant:
    try:
        return await tx.get_participant(participant_id)
    except (ValueError, TypeError):
        raise NotFound(f"unknown participant {participant_id[:60]!r}") from None


def status_op(participant_id: str, body: bytes, *, content_type: str | None,
              anchor: TrustAnchor, kind: str) -> Operation[dict[str, Any]]:
    """Return the operation suspending or reinstating a participant (admin statements)."""
    status = (ParticipantStatus.SUSPENDED if kind == "participant.suspend"
              else ParticipantStatus.ACTIVE)

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        if kind == "participant.suspend" and participant_id == actor.id:
            raise Forbidden("an administrator cannot suspend itself")
        participant = await _get(tx, participant_id)
        signed, _ = await _directory_statement(tx, actor, anchor, body, content_type=content_type,
                                               kind=kind)
        if signed.statement.body.get("participant") != participant_id:
            raise InvalidRequest("the statement names another participant than the request")
        await tx.set_participant_status(participant_id, status)
        view = participant_view(participant)
        view["status"] = status.value
        details: dict[str, DetailValue] = {
            "participant": participant_id, "previous_status": participant.status.value}
        details.update(statement_details(signed))
        return OpResult(value=view, details=details, object=participant_id,
                        after=store_statement(signed))

    return op


def suspend_op(participant_id: str, body: bytes = b"", *, content_type: str | None = None,
               anchor: TrustAnchor) -> Operation[dict[str, Any]]:
    """Return the operation suspending a participant (``participant.suspend``)."""
    return status_op(participant_id, body, content_type=content_type, anchor=anchor,
                     kind="participant.suspend")


def role_op(participant_id: str, body: bytes, *, content_type: str | None,
            anchor: TrustAnchor) -> Operation[dict[str, Any]]:
    """Return the operation changing a participant's role (``participant.role``)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        participant = await _get(tx, participant_id)
        signed, _ = await _directory_statement(
            tx, actor, anchor, body, content_type=content_type, kind="participant.role")
        if signed.statement.body.get("participant") != participant_id:
            raise InvalidRequest("the statement names another participant than the request")
        role = str(signed.statement.body["role"])
        await tx.set_participant_role(participant_id, role)
        view = participant_view(participant)
        view["role"] = role
        details: dict[str, DetailValue] = {"participant": participant_id, "role": role,
                                           "previous_role": participant.role}
        details.update(statement_details(signed))
        return OpResult(value=view, details=details, object=participant_id,
                        after=store_statement(signed))

    return op


def directory_op(body: bytes, *, content_type: str | None, anchor: TrustAnchor,
                 kind: str) -> Operation[dict[str, Any]]:
    """Return the operation recording ``admin.set`` or ``server.url`` (admin statements)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        signed, state = await _directory_statement(
            tx, actor, anchor, body, content_type=content_type, kind=kind)
        directory = state.directory
        value: dict[str, Any] = {"admins": list(directory.admins),
                                 "admin_quorum": directory.admin_quorum,
                                 "server_url": directory.server_url}
        return OpResult(value=value, details=statement_details(signed),
                        after=store_statement(signed))

    return op


def statements_op(chain: str, after: int, size: int | None) -> Operation[dict[str, Any]]:
    """Return the operation listing a chain's statements after ``after`` (see service docs)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        records = await tx.list_statements(chain, after=after)
        return OpResult(value={"chain": chain, "statements": [
            {"seq": r.seq, "audit_index": r.audit_index,
             "statement": base64.b64encode(r.statement).decode("ascii")} for r in records
        ]}, details={"after": after, "count": len(records)})

    return op
