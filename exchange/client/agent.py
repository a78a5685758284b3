"""The key agent, client side: find the agent's socket, and identities that use it.

``exchange agent start`` unlocks a keystore once and keeps the identity in the
memory of a small background process (:mod:`exchange.client.agent_server`)
behind a Unix socket. The agent never hands out a private key: it *performs*
the two private-key operations the client needs (an Ed25519 signature, the
unwrap of an age X25519 or hybrid stanza) and answers with the signature or
the file key. :func:`agent_identity` returns a :class:`ParticipantIdentity`
whose keys are proxies for those operations, so the rest of the library uses
it unchanged; commands need no passphrase and no Argon2 run while it lives.

Why operations rather than the key: a process that talks to the agent can use
the keys while the agent runs, but cannot take them away and keep using them
after ``exchange agent stop`` (or the idle timeout). The agent also marks
itself non-dumpable, so another process of the same user cannot read its
memory through ptrace or a core dump.

Wire protocol (one JSON object per line each way, at most ``MAX_LINE_BYTES``):
``{"op": "list"}``, ``{"op": "sign", "id": ..., "data": b64}``,
``{"op": "unwrap", "id": ..., "kind": "x25519"|"hybrid", "stanzas": [...]}``,
``{"op": "stop"}``, and ``{"op": "run", ...}`` (a read-only command the agent
answers itself; :mod:`exchange.cli.fast`). Answers carry ``"ok": true`` or
``"ok": false, "error": ...``.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.agent_socket import (
    AGENT_SOCK_ENV,
    MAX_LINE_BYTES,
    AgentError,
    AgentUnavailable,
    agent_request,
    agent_socket_path,
    check_private_dir,
)
from exchange.crypto.age import (
    HeaderError,
    HybridIdentity,
    HybridRecipient,
    Stanza,
    X25519Identity,
    X25519Recipient,
)
from exchange.crypto.keys import ParticipantIdentity, PublicBundle, bundle_from_json_obj

__all__ = [
    "AGENT_SOCK_ENV",
    "MAX_LINE_BYTES",
    "AgentError",
    "AgentUnavailable",
    "agent_identity",
    "agent_request",
    "agent_socket_path",
    "check_private_dir",
    "decode_stanzas",
    "encode_stanzas",
]
# AGENT_SOCK_ENV ... check_private_dir live in exchange.agent_socket (standard library
# only, for the CLI's fast path) and are re-exported here.


def encode_stanzas(stanzas: Sequence[Stanza]) -> list[dict[str, Any]]:
    """Return ``stanzas`` as JSON values (body in base64) for the agent protocol."""
    return [{"type": s.type, "args": list(s.args),
             "body": base64.b64encode(s.body).decode("ascii")} for s in stanzas]


def decode_stanzas(value: object) -> list[Stanza]:
    """Return the stanzas of a JSON value made by :func:`encode_stanzas`; raise ValueError."""
    if not isinstance(value, list) or len(value) > 64:
        raise ValueError("stanzas must be a list of at most 64 objects")
    out = []
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(
                item.get("args"), list) or not isinstance(item.get("body"), str):
            raise ValueError("a stanza must be an object with type, args and body")
        out.append(Stanza(item["type"], tuple(str(a) for a in item["args"]),
                          base64.b64decode(item["body"], validate=True)))
    return out


class _AgentSigningKey(nacl.signing.SigningKey):
    """An Ed25519 signing key whose :meth:`sign` asks the agent (the seed stays there)."""

    def __init__(self, participant_id: str, public: bytes, path: Path) -> None:
        # Deliberately no super().__init__: there is no seed on this side.
        self._participant_id = participant_id
        self._path = path
        self.verify_key = nacl.signing.VerifyKey(public)

    def __bytes__(self) -> bytes:
        raise AgentError("the private key is held by the agent and cannot be exported")

    def __hash__(self) -> int:
        return hash(bytes(self.verify_key))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _AgentSigningKey) and other.verify_key == self.verify_key

    def sign(self, message: bytes, encoder: Any = None) -> nacl.signing.SignedMessage:
        """Return ``message`` signed by the agent (raw encoding only)."""
        answer = agent_request({"op": "sign", "id": self._participant_id,
                                "data": base64.b64encode(bytes(message)).decode("ascii")},
                               path=self._path)
        signature = base64.b64decode(str(answer.get("signature", "")))
        try:
            self.verify_key.verify(bytes(message), signature)
        except nacl.exceptions.BadSignatureError:
            raise AgentError("the agent's signature does not verify under the keystore's "
                             "public key") from None
        return nacl.signing.SignedMessage._from_parts(
            signature, bytes(message), signature + bytes(message))


def _unwrap(path: Path, participant_id: str, kind: str, stanzas: Sequence[Stanza]) -> bytes | None:
    answer = agent_request({"op": "unwrap", "id": participant_id, "kind": kind,
                            "stanzas": encode_stanzas(stanzas)}, path=path)
    if answer.get("header_error"):
        raise HeaderError(str(answer["header_error"])[:200])
    key = answer.get("file_key")
    return None if key is None else base64.b64decode(str(key))


class _AgentX25519Identity(X25519Identity):
    """An age X25519 identity whose unwrap runs in the agent."""

    __slots__ = ("_agent_path", "_participant_id")

    def __init__(self, participant_id: str, recipient: str, path: Path) -> None:
        self._participant_id = participant_id
        self._agent_path = path
        self._public = X25519Recipient.parse(recipient).to_bytes()

    def to_bytes(self) -> bytes:
        """Refuse: the secret scalar stays in the agent."""
        raise AgentError("the private key is held by the agent and cannot be exported")

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key the agent found in ``stanzas``, else None."""
        return _unwrap(self._agent_path, self._participant_id, "x25519", stanzas)


class _AgentHybridIdentity(HybridIdentity):
    """An age mlkem768x25519 identity whose unwrap runs in the agent."""

    __slots__ = ("_agent_path", "_participant_id", "_recipient")

    def __init__(self, participant_id: str, recipient: str, path: Path) -> None:
        self._participant_id = participant_id
        self._agent_path = path
        self._recipient = HybridRecipient.parse(recipient)

    def to_bytes(self) -> bytes:
        """Refuse: the seed stays in the agent."""
        raise AgentError("the private key is held by the agent and cannot be exported")

    def recipient(self) -> HybridRecipient:
        """Return the public recipient (from the keystore's bundle)."""
        return self._recipient

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key the agent found in ``stanzas``, else None."""
        return _unwrap(self._agent_path, self._participant_id, "hybrid", stanzas)


def agent_identity(bundle: PublicBundle, *, path: Path | None = None) -> ParticipantIdentity | None:
    """Return an identity backed by the agent for ``bundle``, or None if it does not hold it.

    ``bundle`` is the public part of the keystore the command was given (read
    without the passphrase); the agent must hold exactly that identity (same
    fingerprint), so a command never acts as someone else than its keystore.
    Returns None when no agent runs; raises :class:`AgentError` when the
    agent's socket is unsafe.
    """
    path = agent_socket_path() if path is None else path
    try:
        answer = agent_request({"op": "list"}, path=path)
    except AgentUnavailable:
        return None
    held = answer.get("identities")
    for item in held if isinstance(held, list) else []:
        try:
            candidate = bundle_from_json_obj(item)
        except ValueError:
            continue
        if candidate.fingerprint != bundle.fingerprint:
            continue
        pq = None if bundle.pq_recipient is None else _AgentHybridIdentity(
            bundle.id, bundle.pq_recipient, path)
        return ParticipantIdentity(
            id=bundle.id, display_name=bundle.display_name,
            signing_key=_AgentSigningKey(bundle.id, bundle.signing_key, path),
            age_identity=_AgentX25519Identity(bundle.id, bundle.age_recipient, path),
            pq_identity=pq)
    return None
