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
from exchange.crypto.keys import BundleError, PublicBundle, bundle_from_json_obj, parse_bundle
from exchange.service.core import Actor, Operation, OpResult
from exchange.service.errors import Forbidden, InvalidRequest
from exchange.service.jsonbody import check_members, get_object, get_str, parse_object
from exchange.service.policy import Role, parse_role, require_role
from exchange.storage._casetx import ParticipantBundle
from exchange.storage.errors import AlreadyExists, NotFound
from exchange.storage.metadata import Participant, ParticipantStatus, Transaction

__all__ = [
    "bundle_record",
    "enrol_op",
    "enrolment_details",
    "key_change_op",
    "list_op",
    "participant_record",
    "participant_view",
    "show_op",
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


def _bundle(obj: dict[str, Any]) -> PublicBundle:
    try:
        return bundle_from_json_obj(get_object(obj, "bundle"))
    except BundleError as err:
        raise InvalidRequest(f"bundle: {err}") from None


def enrol_op(body: bytes, *, content_type: str | None, now: int) -> Operation[dict[str, Any]]:
    """Return the operation enrolling the participant described by ``body`` (admins only)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        require_role(actor.role, ADMIN_ONLY, "enrolling participants")
        obj = parse_object(body, content_type=content_type)
        check_members(obj, required=("bundle", "role"), optional=("organisation", "country"))
        bundle = _bundle(obj)
        role = parse_role(obj["role"]).value
        organisation = get_str(obj, "organisation", default="")
        country = get_str(obj, "country", default="", max_chars=64)
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

        return OpResult(
            value=participant_view(record, bundle_record(bundle, 0)),
            details=enrolment_details(bundle, role=role, organisation=organisation,
                                      country=country),
            object=bundle.id,
            after=store,
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


def key_change_op(participant_id: str, body: bytes, *,
                  content_type: str | None) -> Operation[dict[str, Any]]:
    """Return the operation replacing a participant's public keys (admins only).

    The entry's details carry the new keys (and the old fingerprint), so the
    change is as visible in the log as the enrolment was.
    """

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        require_role(actor.role, ADMIN_ONLY, "changing participant keys")
        obj = parse_object(body, content_type=content_type)
        check_members(obj, required=("bundle",))
        bundle = _bundle(obj)
        if bundle.id != participant_id:
            raise InvalidRequest(
                f"bundle is for {bundle.id!r}, the request for {participant_id[:60]!r}"
            )
        current = await _get(tx, participant_id)
        if bundle.fingerprint == current.fingerprint:
            raise InvalidRequest("the bundle holds the participant's current keys")
        details = enrolment_details(bundle, role=current.role,
                                    organisation=current.organisation,
                                    country=current.country)
        details["previous_fingerprint"] = current.fingerprint

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
        return OpResult(value=view, details=details, object=participant_id, after=store)

    return op


async def _get(tx: Transaction, participant_id: str) -> Participant:
    try:
        return await tx.get_participant(participant_id)
    except (ValueError, TypeError):
        raise NotFound(f"unknown participant {participant_id[:60]!r}") from None


def suspend_op(participant_id: str) -> Operation[dict[str, Any]]:
    """Return the operation suspending a participant (admins only; not oneself)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        require_role(actor.role, ADMIN_ONLY, "suspending participants")
        if participant_id == actor.id:
            raise Forbidden("an administrator cannot suspend itself")
        participant = await _get(tx, participant_id)
        await tx.set_participant_status(participant_id, ParticipantStatus.SUSPENDED)
        view = participant_view(participant)
        view["status"] = ParticipantStatus.SUSPENDED.value
        return OpResult(value=view, details={
            "participant": participant_id, "previous_status": participant.status.value,
        })

    return op
