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
``{"op": "stop"}``. Answers carry ``"ok": true`` or ``"ok": false, "error": ...``.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.crypto.age import (
    HeaderError,
    HybridIdentity,
    HybridRecipient,
    Stanza,
    X25519Identity,
    X25519Recipient,
)
from exchange.crypto.keys import ParticipantIdentity, PublicBundle, bundle_from_json_obj
from exchange.errors import ExchangeError

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

AGENT_SOCK_ENV = "EXCHANGE_AGENT_SOCK"
MAX_LINE_BYTES = 1024 * 1024  # stanzas and signature bases are a few KiB
_TIMEOUT_S = 10.0


class AgentError(ExchangeError):
    """The agent answered with an error, or its socket is not safe to use."""


class AgentUnavailable(AgentError):
    """No agent listens at the socket (the caller falls back to the keystore)."""


def agent_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the agent socket path: ``$EXCHANGE_AGENT_SOCK``, else a per-user runtime path.

    The default is ``$XDG_RUNTIME_DIR/exchange-agent/agent.sock`` when that
    directory is set (it is private to the user by systemd), else
    ``/tmp/exchange-agent-<uid>/agent.sock``.
    """
    env = os.environ if env is None else env
    if env.get(AGENT_SOCK_ENV):
        return Path(env[AGENT_SOCK_ENV])
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "exchange-agent" / "agent.sock"
    return Path("/tmp") / f"exchange-agent-{os.getuid()}" / "agent.sock"  # noqa: S108


def check_private_dir(directory: Path) -> None:
    """Return ``None`` if ``directory`` is a real directory of ours with mode 0700, else raise.

    Another user who owns (or can write to) the socket's directory could put
    their own agent there and answer for our identity, so the client refuses it.
    """
    try:
        info = directory.lstat()
    except FileNotFoundError:
        raise AgentUnavailable(f"no agent directory {str(directory)!r}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise AgentError(f"agent directory {str(directory)!r} is not a directory")
    if info.st_uid != os.getuid():
        raise AgentError(f"agent directory {str(directory)!r} belongs to uid {info.st_uid}, "
                         f"not to you (uid {os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise AgentError(f"agent directory {str(directory)!r} has mode "
                         f"{stat.S_IMODE(info.st_mode):04o}, expected 0700")


def agent_request(request: dict[str, Any], *, path: Path | None = None) -> dict[str, Any]:
    """Send one request to the agent and return its answer (``ok`` true).

    Raises :class:`AgentUnavailable` when no agent listens, :class:`AgentError`
    when the socket's directory is unsafe or the agent refuses.
    """
    path = agent_socket_path() if path is None else path
    check_private_dir(path.parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(_TIMEOUT_S)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise AgentUnavailable(f"no agent at {str(path)!r}: {err.strerror}") from None
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        line = _read_line(sock)
    except OSError as err:
        raise AgentError(f"agent at {str(path)!r} failed: {err}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(line)
    except ValueError:
        raise AgentError("the agent's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise AgentError("the agent's answer is not a JSON object")
    if answer.get("ok") is not True:
        raise AgentError(f"the agent refused: {str(answer.get('error', 'no reason'))[:200]}")
    return answer


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if b"\n" in data or size > MAX_LINE_BYTES:
            break
    line, _, _ = b"".join(chunks).partition(b"\n")
    if size > MAX_LINE_BYTES:
        raise AgentError("the agent's answer is too long")
    return line


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
