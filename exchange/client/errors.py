"""Errors of the client library (issue 6), in the project's one exception tree.

Each class says what a caller (the CLI) branches on: :class:`VerificationFailed`
means the server or the data is not what it must be (exit 3), :class:`KeyProblem`
means our own keys or credentials are wrong or missing (exit 4), anything else
is an ordinary error (exit 1). Messages are one plain sentence; ``hints`` say
what to do next.
"""

from __future__ import annotations

from typing import Any

from exchange.errors import ExchangeError

__all__ = [
    "CheckpointRollback",
    "ClientError",
    "EvidenceRejected",
    "KeyProblem",
    "KeySubstituted",
    "LogForked",
    "LogKeyMissing",
    "MalformedReply",
    "ServerRefused",
    "UploadChanged",
    "VerificationFailed",
]


class ClientError(ExchangeError):
    """A client-side failure; ``hints`` are follow-up suggestions for a person."""

    problem_type = "client"

    def __init__(self, message: str, *hints: str) -> None:
        super().__init__(message)
        self.hints: tuple[str, ...] = hints


class VerificationFailed(ClientError):
    """Something the server served does not verify (tampering, fork, substitution)."""

    problem_type = "verification-failed"


class KeyProblem(ClientError):
    """Our keys or credentials are missing, wrong, or refused by the server."""

    problem_type = "key-problem"


class LogKeyMissing(KeyProblem):
    """No verifier key for the audit log is configured, so nothing can be verified."""


class LogForked(VerificationFailed):
    """A new checkpoint is not consistent with the last one we verified (split view)."""

    def __init__(self, message: str, *hints: str, old: bytes = b"", new: bytes = b"") -> None:
        super().__init__(message, *hints)
        self.old_checkpoint = old
        self.new_checkpoint = new


class CheckpointRollback(LogForked):
    """The server presents a smaller log than one we already verified, and it does not fit."""


class KeySubstituted(VerificationFailed):
    """A participant's keys differ from its pin or its enrolment entry, with no logged change."""

    def __init__(self, message: str, *hints: str, participant: str = "") -> None:
        super().__init__(message, *hints)
        self.participant = participant


class EvidenceRejected(VerificationFailed):
    """A downloaded file failed a check (manifest signature, hash, size, decryption)."""


class MalformedReply(ClientError):
    """A server answer was too large, not JSON, or lacked what the protocol requires."""

    problem_type = "malformed-reply"


class UploadChanged(ClientError):
    """A file changed while (or since) it was being uploaded."""


class ServerRefused(ClientError):
    """The server answered with an RFC 9457 problem; ``status`` and ``slug`` say which."""

    def __init__(self, message: str, *hints: str, status: int, slug: str,
                 body: Any = None, audit_index: int | None = None) -> None:
        super().__init__(message, *hints)
        self.status = status
        self.slug = slug
        self.body = body
        self.audit_index = audit_index
        self.http_status = status
