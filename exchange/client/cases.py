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
from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.client.errors import ClientError, MalformedReply, VerificationFailed
from exchange.client.ids import check_case_id, check_participant_id
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.crypto.age import AgeError, decrypt, encrypt
from exchange.crypto.envelope import CaseKey, EnvelopeError, unwrap_envelope, wrap_envelope
from exchange.crypto.jcs import canonicalize
from exchange.crypto.keys import BundleError, loads_strict

__all__ = [
    "METADATA_FORMAT",
    "CaseSummary",
    "add_member",
    "case_key",
    "create_case",
    "current_epoch",
    "list_cases",
    "open_metadata",
    "remove_member",
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


async def case_key(client: Client, case_id: str, epoch: int) -> CaseKey:
    """Return the key of ``epoch`` of ``case_id`` from this member's envelope."""
    cached = client.case_keys.get((case_id, epoch))
    if cached is not None:
        return cached
    reply = await client.call("GET", f"/v1/cases/{case_id}/epochs/{epoch}/envelope",
                              doing=f"fetching the key of case {case_id!r} epoch {epoch}")
    try:
        envelope = base64.b64decode(str(reply.body["envelope"]), validate=True)
        key = unwrap_envelope(envelope, client.identity.age_identities(), case_id=case_id,
                              epoch=epoch)
    except (AgeError, EnvelopeError, KeyError, ValueError, TypeError) as err:
        raise VerificationFailed(
            f"the key envelope of case {case_id!r} epoch {epoch} does not open with your "
            f"keys ({type(err).__name__})",
            "the server may have served a wrong envelope; tell a prosecutor of the case") from None
    client.case_keys[(case_id, epoch)] = key
    return key


async def _show_raw(client: Client, case_id: str) -> dict[str, Any]:
    reply = await client.call("GET", f"/v1/cases/{case_id}", doing=f"reading case {case_id!r}")
    if not isinstance(reply.body, dict):
        raise ClientError("the server's case answer is malformed")
    return reply.body


def current_epoch(view: dict[str, Any]) -> int:
    """Return the newest epoch number of a case view."""
    epochs = [e["epoch"] for e in view.get("epochs", []) if isinstance(e.get("epoch"), int)]
    if not epochs:
        raise ClientError(f"case {view.get('case_id')!r} has no key epoch")
    return int(max(epochs))


async def _title(client: Client, view: dict[str, Any]) -> str | None:
    # Server-supplied ids go into URLs below: checked first (exchange.client.ids).
    case_id = check_case_id(view.get("case_id"), "reading a case")
    creator = check_participant_id(view.get("created_by"), f"reading case {case_id}")
    try:
        key = await case_key(client, case_id, FIRST_EPOCH)
    except ClientError:
        return None  # joined after a rotation without an epoch-1 envelope
    sealed = base64.b64decode(str(view.get("metadata", "")))
    author = await client.participant(creator)
    return open_metadata(sealed, key, author.bundle.verify_key(), creator)


async def create_case(client: Client, title: str) -> CaseSummary:
    """Create a case titled ``title`` (prosecutors); the first epoch is generated here.

    The case id is not chosen: it derives from the first epoch's recipient
    (:func:`~exchange.crypto.envelope.case_id_for`), so the server computes
    the same one, and an answer naming another is refused.
    """
    if not title.strip():
        raise ClientError("a case needs a non-empty title")
    key = CaseKey.new_case(FIRST_EPOCH)
    case_id = key.case_id
    me = client.identity
    body = {
        "metadata": _b64(seal_metadata(key, title, me.signing_key, me.id)),
        "epoch": {"recipient": key.recipient().to_string()},
        "envelope": _b64(wrap_envelope(key, me.public_bundle().recipient())),
    }
    reply = await client.call("POST", "/v1/cases", json=body, doing="creating the case")
    answered = reply.body.get("case_id") if isinstance(reply.body, dict) else None
    if answered != case_id:
        raise MalformedReply(f"creating the case: the server named case "
                             f"'{printable(str(answered), 80)}', expected {case_id}")
    client.case_keys[(case_id, FIRST_EPOCH)] = key
    return CaseSummary(case_id=case_id, title=title, created_by=me.id,
                       created_at=int(reply.body.get("created_at", 0)))


async def list_cases(client: Client) -> list[CaseSummary]:
    """Return this member's active cases with their titles decrypted."""
    reply = await client.call("GET", "/v1/cases", doing="listing cases")
    out = []
    for view in reply.body.get("cases", []) if isinstance(reply.body, dict) else []:
        if not isinstance(view, dict):
            raise MalformedReply("listing cases: a case in the answer is not a JSON object")
        out.append(CaseSummary(case_id=check_case_id(view.get("case_id"), "listing cases"),
                               title=await _title(client, view),
                               created_by=str(view.get("created_by", "")),
                               created_at=int(view.get("created_at", 0))))
    return out


async def show_case(client: Client, case_id: str) -> CaseSummary:
    """Return one case: title, members (with removals) and key epochs."""
    view = await _show_raw(client, case_id)
    return CaseSummary(case_id=case_id, title=await _title(client, view),
                       created_by=str(view.get("created_by", "")),
                       created_at=int(view.get("created_at", 0)),
                       members=tuple(view.get("members", [])),
                       epochs=tuple(view.get("epochs", [])))


async def add_member(client: Client, case_id: str, participant_id: str) -> dict[str, Any]:
    """Add ``participant_id`` to the case, wrapping every epoch we hold for them.

    The newcomer's keys are checked against the log first (``Client.participant``).
    """
    target = await client.participant(participant_id)
    view = await _show_raw(client, case_id)
    latest = current_epoch(view)
    key = await case_key(client, case_id, latest)
    reply = await client.call("POST", f"/v1/cases/{case_id}/members", json={
        "participant": participant_id,
        "envelope": _b64(wrap_envelope(key, target.bundle.recipient())),
    }, doing=f"adding {participant_id!r} to case {case_id!r}")
    for epoch in range(FIRST_EPOCH, latest):
        try:
            older = await case_key(client, case_id, epoch)
        except ClientError:
            continue  # we joined later ourselves; another member can re-wrap it
        await client.call("PUT", f"/v1/cases/{case_id}/epochs/{epoch}/envelopes/"
                                 f"{participant_id}",
                          json={"envelope": _b64(wrap_envelope(older, target.bundle.recipient()))},
                          doing=f"sharing epoch {epoch} with {participant_id!r}")
    result: dict[str, Any] = dict(reply.body)
    result["audit_index"] = reply.audit_index
    return result


async def remove_member(client: Client, case_id: str, participant_id: str) -> dict[str, Any]:
    """Remove ``participant_id`` and start a new epoch wrapped for every remaining member."""
    view = await _show_raw(client, case_id)
    remaining = sorted(
        m["participant"] for m in view.get("members", [])
        if m.get("removed_at") is None and m.get("participant") != participant_id
    )
    number = current_epoch(view) + 1
    key = CaseKey.generate(case_id, number)
    envelopes = {}
    for member in remaining:
        bundle = (await client.participant(member)).bundle
        envelopes[member] = _b64(wrap_envelope(key, bundle.recipient()))
    reply = await client.call(
        "POST", f"/v1/cases/{case_id}/members/{participant_id}/remove",
        json={"epoch": {"recipient": key.recipient().to_string()}, "envelopes": envelopes},
        doing=f"removing {participant_id!r} from case {case_id!r}")
    if client.identity.id in envelopes:
        client.case_keys[(case_id, number)] = key
    result: dict[str, Any] = dict(reply.body)
    result["audit_index"] = reply.audit_index
    return result


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
