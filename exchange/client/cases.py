"""Cases, members and key epochs, client side (DESIGN.md decision 3; server design "Cases").

The server never sees a case key. Creating a case generates its first epoch
here, seals the metadata (``{title}``, signed by the creator) to it and wraps
it for the creator. Adding a member wraps every epoch this client can open
for the newcomer (current epoch with the membership, older ones as re-wraps),
after checking the newcomer's keys against the log. Removing a member starts
a new epoch wrapped for each remaining member, so nothing uploaded afterwards
is readable by the removed one.

Sealed metadata is an age file (to the first epoch) holding the RFC 8785 JSON
``{"format": "exchange-case-metadata/v1", "metadata": {case_id, title,
created_by}, "signature": b64}``; the Ed25519 signature covers
``METADATA_CONTEXT || JCS(metadata)``, so the server cannot swap titles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.audit.retention import on_hold
from exchange.client.errors import ClientError, MalformedReply, ServerRefused, VerificationFailed
from exchange.client.ids import check_case_id
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.client.trust import TrustView
from exchange.crypto.age import AgeError, decrypt, encrypt
from exchange.crypto.chains import CaseState, ChainError, Member, TrustState
from exchange.crypto.envelope import CaseKey, EnvelopeError, unwrap_envelope, wrap_envelope
from exchange.crypto.jcs import canonicalize
from exchange.crypto.keys import BundleError, loads_strict
from exchange.crypto.statement import case_chain

__all__ = [
    "METADATA_FORMAT",
    "CaseSummary",
    "add_member",
    "case_key",
    "case_state",
    "create_case",
    "current_epoch",
    "list_cases",
    "open_metadata",
    "remove_member",
    "rewrap_changed",
    "rotate_epoch",
    "seal_metadata",
    "show_case",
]

METADATA_FORMAT = "exchange-case-metadata/v1"
METADATA_CONTEXT = b"exchange-case-metadata-signature/v1\x00"
FIRST_EPOCH = 1  # the server numbers epochs from 1
_MAX_METADATA_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseSummary:
    """A case as this member sees it: the title is decrypted locally (None if unreadable)."""

    case_id: str
    title: str | None
    created_by: str
    created_at: int
    members: tuple[dict[str, Any], ...] = ()
    epochs: tuple[dict[str, Any], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {"case_id": self.case_id, "title": self.title, "created_by": self.created_by,
                "created_at": self.created_at, "members": list(self.members),
                "epochs": list(self.epochs)}


def seal_metadata(key: CaseKey, title: str, signing_key: nacl.signing.SigningKey,
                  created_by: str) -> bytes:
    """Return the case metadata ``{title}`` signed by ``created_by`` and sealed to ``key``."""
    metadata = {"case_id": key.case_id, "title": title, "created_by": created_by}
    signature = signing_key.sign(METADATA_CONTEXT + canonicalize(metadata)).signature
    doc = {"format": METADATA_FORMAT, "metadata": metadata,
           "signature": base64.b64encode(signature).decode("ascii")}
    return encrypt(canonicalize(doc), [key.recipient()])


def open_metadata(sealed: bytes, key: CaseKey, verify_key: nacl.signing.VerifyKey,
                  created_by: str) -> str:
    """Return the title in sealed metadata after checking case, creator and signature."""
    try:
        doc = loads_strict(decrypt(sealed, [key.identity]), what="case metadata",
                           max_bytes=_MAX_METADATA_BYTES)
    except (AgeError, BundleError) as err:
        raise VerificationFailed(f"the metadata of case {key.case_id!r} does not decrypt "
                                 f"({err})") from None
    ok = isinstance(doc, dict) and doc.get("format") == METADATA_FORMAT
    metadata = doc.get("metadata") if ok else None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("title"), str):
        raise VerificationFailed(f"the metadata of case {key.case_id!r} is malformed")
    if metadata.get("case_id") != key.case_id or metadata.get("created_by") != created_by:
        raise VerificationFailed(f"the metadata of case {key.case_id!r} belongs to another case "
                                 "or creator")
    try:
        signature = base64.b64decode(str(doc.get("signature")), validate=True)
        verify_key.verify(METADATA_CONTEXT + canonicalize(metadata), signature)
    except (ValueError, nacl.exceptions.BadSignatureError):
        raise VerificationFailed(f"the metadata of case {key.case_id!r} is not signed by its "
                                 f"creator {created_by!r}") from None
    return str(metadata["title"])


async def case_state(client: Client, case_id: str, *, fresh: bool = False) -> CaseState:
    """Return the verified state of ``case_id`` (members, epochs, envelope hashes)."""
    state = await client.trust.sync(case_id, fresh=fresh)
    return _case(state, case_id)


def _case(state: TrustState, case_id: str) -> CaseState:
    try:
        return state.case(case_id)
    except ChainError:
        raise VerificationFailed(
            f"no verified statement creates case {case_id!r}",
            "check the case id; if the server lists it, it is not backed by a signed "
            "statement: tell your auditor") from None


async def case_key(client: Client, case_id: str, epoch: int) -> CaseKey:
    """Return the key of ``epoch`` of ``case_id`` from this member's envelope.

    The envelope must hash to the one a verified statement names for us and
    epoch, and the key inside must be that epoch's recipient as the statement
    names it; otherwise nothing is decrypted with it (envelope substitution).
    """
    cached = client.case_keys.get((case_id, epoch))
    if cached is not None:
        return cached
    case = await case_state(client, case_id)
    if epoch not in case.recipients:
        raise VerificationFailed(f"no verified statement of case {case_id!r} makes epoch "
                                 f"{epoch}")
    reply = await client.call("GET", f"/v1/cases/{case_id}/epochs/{epoch}/envelope",
                              doing=f"fetching the key of case {case_id!r} epoch {epoch}")
    try:
        envelope = base64.b64decode(str(reply.body["envelope"]), validate=True)
    except (KeyError, ValueError, TypeError):
        raise MalformedReply(f"the envelope of case {case_id!r} epoch {epoch} is not "
                             "base64") from None
    TrustView.check_envelope(case, client.identity.id, epoch, envelope)
    try:
        key = unwrap_envelope(envelope, client.identity.age_identities(), case_id=case_id,
                              epoch=epoch)
    except (AgeError, EnvelopeError) as err:
        raise VerificationFailed(
            f"the key envelope of case {case_id!r} epoch {epoch} does not open with your "
            f"keys ({type(err).__name__})",
            "the envelope named in the case's statements was made for another key; ask a "
            "prosecutor of the case to re-key it") from None
    if key.recipient().to_string() != case.recipients[epoch]:
        raise VerificationFailed(
            f"the key in your envelope of case {case_id!r} epoch {epoch} is not the epoch's "
            "recipient its statement names", "tell a prosecutor of the case and your auditor")
    client.case_keys[(case_id, epoch)] = key
    return key


async def current_epoch(client: Client, case_id: str) -> tuple[int, str]:
    """Return (newest epoch, case chain head hash) of the verified case chain.

    The head goes into the upload's commit, so an upload built on a view the
    server kept stale is named by ``exchange audit verify``.
    """
    case = await case_state(client, case_id)
    if case.head is None or case.epoch < FIRST_EPOCH:
        raise VerificationFailed(f"case {case_id!r} has no verified key epoch")
    return case.epoch, case.head


async def _title(client: Client, case_id: str, sealed_b64: str) -> str | None:
    try:
        key = await case_key(client, case_id, FIRST_EPOCH)
    except ClientError:
        return None  # joined after a rotation without an epoch-1 envelope
    state = await client.trust.sync(case_id)
    case = _case(state, case_id)
    sealed = base64.b64decode(sealed_b64 or "")
    if not hmac.compare_digest(hashlib.sha256(sealed).hexdigest(), case.metadata_sha256):
        raise VerificationFailed(f"the sealed title of case {case_id!r} is not the one its "
                                 "creation statement names")
    creator = state.directory.get(case.created_by)
    return open_metadata(sealed, key, creator.bundle.verify_key(), case.created_by)


def _members_view(state: TrustState, case: CaseState) -> tuple[dict[str, Any], ...]:
    out = []
    for member in case.members.values():
        out.append({"participant": member.id, "role": member.role,
                    "fingerprint": member.fingerprint, "removed": False})
    for former in sorted(case.former - set(case.members)):
        out.append({"participant": former, "role": state.directory.get(former).role,
                    "fingerprint": None, "removed": True})
    return tuple(out)


def _epochs_view(case: CaseState) -> tuple[dict[str, Any], ...]:
    return tuple({"epoch": n, "recipient": r} for n, r in sorted(case.recipients.items()))


def _case_metadata_view(view: dict[str, Any]) -> tuple[str, int]:
    return str(view.get("metadata", "")), int(view.get("created_at", 0) or 0)


async def create_case(client: Client, title: str) -> CaseSummary:
    """Create a case titled ``title`` (prosecutors): first epoch and statement made here.

    Nobody chooses the case id: it derives from the first epoch's recipient
    (:func:`~exchange.crypto.envelope.case_id_for`), which the server checks;
    the ``case.create`` statement names the epoch recipient, our key
    fingerprint, the SHA-256 of our envelope and of the sealed title.
    """
    if not title.strip():
        raise ClientError("a case needs a non-empty title")
    key = CaseKey.new_case(FIRST_EPOCH)  # the id derives from the first epoch's key
    case_id = key.case_id
    me = client.identity
    state = await client.trust.sync()
    mine = state.directory.participants.get(me.id)
    if mine is None:
        raise VerificationFailed(f"no verified statement enrols you ({me.id!r})")
    sealed = seal_metadata(key, title, me.signing_key, me.id)
    envelope = wrap_envelope(key, mine.bundle.recipient())
    signed = client.trust.make(state, chain=case_chain(case_id), kind="case.create", body={
        "case": case_id, "epoch": FIRST_EPOCH, "recipient": key.recipient().to_string(),
        "members": [Member(id=me.id, role=mine.role, fingerprint=mine.fingerprint).to_json()],
        "envelopes": [_envelope_entry(me.id, FIRST_EPOCH, envelope)],
        "metadata_sha256": hashlib.sha256(sealed).hexdigest(),
    })
    reply = await client.call("POST", "/v1/cases", json={
        "metadata": _b64(sealed), "statement": _b64(signed.encode()), "envelope": _b64(envelope),
    }, doing="creating the case")
    client.trust.forget()
    client.case_keys[(case_id, FIRST_EPOCH)] = key
    return CaseSummary(case_id=case_id, title=title, created_by=me.id,
                       created_at=int(reply.object("the case creation").get("created_at", 0)))


async def list_cases(client: Client) -> list[CaseSummary]:
    """Return this member's active cases with their titles decrypted.

    The server's list says which cases to look at; each one's title and
    creator come from its verified chain (a listed case without one is left
    out with a warning).
    """
    reply = await client.call("GET", "/v1/cases", doing="listing cases")
    out = []
    for view in reply.records("cases", "the case list"):
        case_id = check_case_id(view.get("case_id"), "listing cases")
        try:
            state = await client.trust.sync(case_id)
            case = _case(state, case_id)
        except (VerificationFailed, ServerRefused) as err:
            client.warn(f"case {printable(case_id, 80)} is not backed by verified statements: "
                        f"{printable(str(err), 200)}")
            continue
        sealed, created_at = _case_metadata_view(view)
        out.append(CaseSummary(case_id=case_id, title=await _title(client, case_id, sealed),
                               created_by=case.created_by, created_at=created_at,
                               members=_members_view(state, case), epochs=_epochs_view(case)))
    return out


async def show_case(client: Client, case_id: str) -> CaseSummary:
    """Return one case: title, members (with removals) and key epochs, all verified."""
    view = await _show_raw(client, case_id)
    state = await client.trust.sync(case_id)
    case = _case(state, case_id)
    sealed, created_at = _case_metadata_view(view)
    return CaseSummary(case_id=case_id, title=await _title(client, case_id, sealed),
                       created_by=case.created_by, created_at=created_at,
                       members=_members_view(state, case), epochs=_epochs_view(case))


async def _show_raw(client: Client, case_id: str) -> dict[str, Any]:
    reply = await client.call("GET", f"/v1/cases/{case_id}", doing=f"reading case {case_id!r}")
    return reply.object("the case")


def _envelope_entry(member: str, epoch: int, envelope: bytes) -> dict[str, Any]:
    return {"member": member, "epoch": epoch, "sha256": hashlib.sha256(envelope).hexdigest()}


def _target(state: TrustState, participant_id: str) -> Member:
    """Return the member record for wrapping to ``participant_id``'s verified keys."""
    known = state.directory.participants.get(participant_id)
    if known is None:
        raise VerificationFailed(f"no verified statement enrols {participant_id!r}",
                                 "check the id with your administrator")
    if not known.active:
        raise ClientError(f"{participant_id!r} is suspended")
    return Member(id=participant_id, role=known.role, fingerprint=known.fingerprint)


async def add_member(client: Client, case_id: str, participant_id: str) -> dict[str, Any]:
    """Add ``participant_id`` to the case, wrapping every epoch we hold for them.

    The newcomer's keys come from the verified directory, never from a server
    listing; the ``case.member_add`` statement names their key fingerprint and
    the SHA-256 of each envelope made.
    """
    state = await client.trust.sync(case_id, fresh=True)
    case = _case(state, case_id)
    member = _target(state, participant_id)
    bundle = state.directory.get(participant_id).bundle
    envelopes: dict[int, bytes] = {}
    for epoch in range(FIRST_EPOCH, case.epoch + 1):
        try:
            key = await case_key(client, case_id, epoch)
        except ClientError:
            if epoch == case.epoch:
                raise
            continue  # we joined later ourselves; another member can re-wrap it
        envelopes[epoch] = wrap_envelope(key, bundle.recipient())
    signed = client.trust.make(state, chain=case_chain(case_id), kind="case.member_add", body={
        "member": member.to_json(),
        "envelopes": [_envelope_entry(participant_id, e, data) for e, data in envelopes.items()],
    })
    reply = await client.call("POST", f"/v1/cases/{case_id}/members", json={
        "statement": _b64(signed.encode()),
        "envelopes": {str(e): _b64(data) for e, data in envelopes.items()},
    }, doing=f"adding {participant_id!r} to case {case_id!r}")
    client.trust.forget()
    result: dict[str, Any] = dict(reply.object("the member addition"))
    result["audit_index"] = reply.audit_index
    return result


async def _new_epoch(client: Client, case_id: str, kind: str, path: str, *,
                     removed: str | None = None) -> dict[str, Any]:
    state = await client.trust.sync(case_id, fresh=True)
    case = _case(state, case_id)
    if removed is not None and removed not in case.members:
        raise ClientError(f"{removed!r} is not a member of case {case_id!r}")
    remaining = sorted(m for m in case.members if m != removed)
    number = case.epoch + 1
    key = CaseKey.generate(case_id, number)
    envelopes = {}
    members = []
    for member_id in remaining:
        members.append(_target(state, member_id).to_json())
        envelopes[member_id] = wrap_envelope(
            key, state.directory.get(member_id).bundle.recipient())
    body: dict[str, Any] = {
        "epoch": number, "recipient": key.recipient().to_string(), "members": members,
        "envelopes": [_envelope_entry(m, number, data) for m, data in envelopes.items()],
    }
    if removed is not None:
        body["removed"] = removed
    signed = client.trust.make(state, chain=case_chain(case_id), kind=kind, body=body)
    reply = await client.call("POST", path, json={
        "statement": _b64(signed.encode()),
        "envelopes": {m: _b64(data) for m, data in envelopes.items()},
    }, doing=f"starting epoch {number} of case {case_id!r}")
    client.trust.forget()
    if client.identity.id in envelopes:
        client.case_keys[(case_id, number)] = key
    result: dict[str, Any] = dict(reply.object("the new epoch"))
    result["audit_index"] = reply.audit_index
    return result


async def remove_member(client: Client, case_id: str, participant_id: str) -> dict[str, Any]:
    """Remove ``participant_id`` and start a new epoch wrapped for every remaining member."""
    return await _new_epoch(client, case_id, "case.member_remove",
                            f"/v1/cases/{case_id}/members/{participant_id}/remove",
                            removed=participant_id)


async def rewrap_changed(client: Client, case_id: str) -> list[str]:
    """Re-wrap every epoch we hold for members whose keys changed since they were added.

    One ``case.envelope_add`` statement names the members' new key fingerprints
    and the new envelopes; returns the members re-wrapped (none: nothing sent).
    """
    state = await client.trust.sync(case_id, fresh=True)
    case = _case(state, case_id)
    changed = sorted(m.id for m in case.members.values()
                     if m.fingerprint != state.directory.get(m.id).fingerprint)
    if not changed:
        return []
    entries, items = [], []
    for member_id in changed:
        bundle = state.directory.get(member_id).bundle
        for epoch in range(FIRST_EPOCH, case.epoch + 1):
            try:
                key = await case_key(client, case_id, epoch)
            except ClientError:
                continue  # an epoch we cannot open ourselves
            data = wrap_envelope(key, bundle.recipient())
            entries.append(_envelope_entry(member_id, epoch, data))
            items.append({"member": member_id, "epoch": epoch, "envelope": _b64(data)})
    signed = client.trust.make(state, chain=case_chain(case_id), kind="case.envelope_add",
                               body={"members": [_target(state, m).to_json() for m in changed],
                                     "envelopes": entries})
    await client.call("POST", f"/v1/cases/{case_id}/envelopes", json={
        "statement": _b64(signed.encode()), "envelopes": items},
        doing=f"re-wrapping case {case_id!r} for {', '.join(changed)}")
    client.trust.forget()
    return changed


async def rotate_epoch(client: Client, case_id: str) -> dict[str, Any]:
    """Re-key a case: re-wrap old epochs for members with new keys, then start a new epoch.

    After a member's key change (a lost laptop), their old evidence stays
    readable with their new keys, and new evidence is readable only with the
    members' current keys (the lost one is out).
    """
    rewrapped = await rewrap_changed(client, case_id)
    result = await _new_epoch(client, case_id, "case.epoch_rotate", f"/v1/cases/{case_id}/epochs")
    result["rewrapped"] = rewrapped
    return result


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def set_policy(client: Client, case_id: str, *, retention: dict[str, Any] | None = None,
                     legal_hold: bool | None = None) -> dict[str, Any]:
    """Sign and send a ``case.policy`` statement changing retention and/or the legal hold.

    The new policy starts from the one in force (as the verified chain says),
    so setting a hold keeps the retention mode and vice versa.
    """
    state = await client.trust.sync(case_id, fresh=True)
    policy = dict(_case(state, case_id).policy or {})
    if retention is not None:
        policy["retention"] = retention
    if legal_hold is not None:
        policy["legal_hold"] = legal_hold
    signed = client.trust.make(state, chain=case_chain(case_id), kind="case.policy",
                               body={"policy": policy})
    reply = await client.call("POST", f"/v1/cases/{case_id}/policy", json={
        "statement": _b64(signed.encode())}, doing=f"setting the policy of case {case_id!r}")
    client.trust.forget()
    return {"case_id": case_id, "policy": policy, "statement": signed.hash,
            "audit_index": reply.audit_index}


async def erase(client: Client, case_id: str, evidence_id: str | None = None,
                *, rotate: bool = True) -> dict[str, Any]:
    """Erase the case's items now (or one), as an owner; refused by the server under hold.

    With ``rotate`` (and no hold) the case key is rotated first, so the epoch
    the erased items were encrypted to is an old one, which the server
    shreds (deletes its envelopes) as soon as none of its items is left.
    """
    state = await client.trust.sync(case_id, fresh=True)
    rotated = None
    if rotate and not on_hold(_case(state, case_id).policy):
        rotated = (await rotate_epoch(client, case_id)).get("epoch")
    path = (f"/v1/cases/{case_id}/erase" if evidence_id is None
            else f"/v1/cases/{case_id}/evidence/{evidence_id}/erase")
    reply = await client.call("POST", path, json={},
                              doing=f"erasing {evidence_id or 'the evidence'} of {case_id!r}")
    result: dict[str, Any] = dict(reply.object("the erasure"))
    result["audit_index"] = reply.audit_index
    result["rotated_to"] = rotated
    return result
