"""Administrator operations, each one a signed directory statement (issue 10; issue 14 §1).

An administrator's client makes the statement (enrolment, key change,
suspension, reinstatement, role, administrators, server URL) against the
directory it verified itself, signs it, and sends it; the server stores it
verbatim and logs it. Every client replays these statements, so what an
administrator signs is what every participant will see, and nothing else.

Enrolments and key changes need the participant's *proof of possession*
(the bundle file that ``exchange keygen --bundle-out`` writes carries it):
an administrator cannot enrol keys that their holder never asked to have.
With an administrator quorum above one, the statement needs co-signatures
(``extra_signers``), each of an administrator's key.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import nacl.signing

from exchange.client.errors import ClientError, VerificationFailed
from exchange.client.session import Client
from exchange.client.trust import VerifiedParticipant
from exchange.crypto.keys import PublicBundle, verify_possession
from exchange.crypto.statement import DIRECTORY_CHAIN, SignedStatement, make_signature

__all__ = [
    "change_keys",
    "directory_statement",
    "enrol",
    "list_participants",
    "move_server",
    "reinstate",
    "set_role",
    "suspend",
]

Signers = Sequence[tuple[str, nacl.signing.SigningKey]]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def directory_statement(client: Client, kind: str, body: dict[str, Any], *,
                              extra_signers: Signers = ()) -> SignedStatement:
    """Return a directory statement of ``kind`` made and signed by us (and co-signers)."""
    state = await client.trust.sync(fresh=True)
    signed = client.trust.make(state, chain=DIRECTORY_CHAIN, kind=kind, body=body)
    for by, key in extra_signers:
        signed = signed.with_signature(make_signature(signed.statement, key, by))
    return signed


def _possession(bundle: PublicBundle, proof: bytes | None) -> str:
    if proof is None or not verify_possession(bundle, proof):
        raise ClientError(
            f"the bundle of {bundle.id!r} carries no valid proof of possession",
            "ask the participant for the bundle file written by 'exchange keygen "
            "--bundle-out' (or 'exchange key show --bundle') with this version")
    return _b64(proof)


async def _send(client: Client, method: str, path: str, signed: SignedStatement,
                doing: str) -> dict[str, Any]:
    reply = await client.call(method, path, json={"statement": _b64(signed.encode())},
                              doing=doing)
    client.trust.forget()
    client.forget_participants()
    result = dict(reply.object(doing))
    result["audit_index"] = reply.audit_index
    return result


async def enrol(client: Client, bundle: PublicBundle, role: str, *, possession: bytes | None,
                organisation: str = "", country: str = "",
                extra_signers: Signers = ()) -> VerifiedParticipant:
    """Enrol ``bundle`` with ``role`` (administrators); return it as every client will see it."""
    signed = await directory_statement(client, "participant.enrol", {
        "participant": bundle.to_json_obj(), "possession": _possession(bundle, possession),
        "role": role, "organisation": organisation, "country": country,
    }, extra_signers=extra_signers)
    await _send(client, "POST", "/v1/participants", signed, f"enrolling {bundle.id!r}")
    return await client.participant(bundle.id)


async def change_keys(client: Client, bundle: PublicBundle, *, possession: bytes | None,
                      reason: str, extra_signers: Signers = ()) -> VerifiedParticipant:
    """Replace a participant's keys (a lost laptop); return the new keys as verified.

    Members of the participant's cases then re-key them (``exchange case
    rekey``) so that new evidence is readable with the new keys only.
    """
    signed = await directory_statement(client, "participant.key_change", {
        "participant": bundle.to_json_obj(), "possession": _possession(bundle, possession),
        "reason": reason,
    }, extra_signers=extra_signers)
    await _send(client, "PUT", f"/v1/participants/{bundle.id}/keys", signed,
                f"changing the keys of {bundle.id!r}")
    return await client.participant(bundle.id)


async def suspend(client: Client, participant_id: str, *, reason: str,
                  extra_signers: Signers = ()) -> dict[str, Any]:
    """Suspend a participant: every request of theirs is refused (and logged) from now on."""
    signed = await directory_statement(client, "participant.suspend", {
        "participant": participant_id, "reason": reason}, extra_signers=extra_signers)
    return await _send(client, "POST", f"/v1/participants/{participant_id}/suspend", signed,
                       f"suspending {participant_id!r}")


async def reinstate(client: Client, participant_id: str, *, reason: str,
                    extra_signers: Signers = ()) -> dict[str, Any]:
    """Reinstate a suspended participant."""
    signed = await directory_statement(client, "participant.reinstate", {
        "participant": participant_id, "reason": reason}, extra_signers=extra_signers)
    return await _send(client, "POST", f"/v1/participants/{participant_id}/reinstate", signed,
                       f"reinstating {participant_id!r}")


async def set_role(client: Client, participant_id: str, role: str, *,
                   extra_signers: Signers = ()) -> dict[str, Any]:
    """Change a participant's role."""
    signed = await directory_statement(client, "participant.role", {
        "participant": participant_id, "role": role}, extra_signers=extra_signers)
    return await _send(client, "POST", f"/v1/participants/{participant_id}/role", signed,
                       f"changing the role of {participant_id!r}")


async def move_server(client: Client, url: str, *,
                      extra_signers: Signers = ()) -> dict[str, Any]:
    """Record ``url`` as the server's public URL (a ``server.url`` statement).

    The server takes it at once: from the entry that logs this statement on,
    requests must be signed for ``url`` (the verifier checks each entry
    against the URL in force at its position), and clients that still sign
    for the old URL follow once they verify the statement.
    """
    signed = await directory_statement(client, "server.url", {"url": url.rstrip("/")},
                                       extra_signers=extra_signers)
    return await _send(client, "POST", "/v1/directory/server-url", signed,
                       f"recording {url!r} as the server's public URL")


async def list_participants(client: Client) -> list[dict[str, Any]]:
    """Return every participant of the verified directory (not the server's listing)."""
    state = await client.trust.sync()
    if client.identity.id not in state.directory.participants:
        raise VerificationFailed("you are not in the verified directory")
    return [{"id": p.bundle.id, "role": p.role, "status": p.status,
             "organisation": p.organisation, "country": p.country,
             "fingerprint": p.fingerprint, "keys_since_index": p.keys_since,
             "admin": p.bundle.id in state.directory.admins}
            for p in sorted(state.directory.participants.values(), key=lambda p: p.bundle.id)]
