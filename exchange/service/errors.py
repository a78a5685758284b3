"""Leaf errors of the service layer: authentication, authorisation and request shape.

Each carries the RFC 9457 ``problem_type`` slug and the ``http_status`` the
transport layer answers with (after h11's ``error_status_hint``).
"""

from __future__ import annotations

from exchange.errors import ExchangeError

__all__ = [
    "AuditedRefusal",
    "Forbidden",
    "InvalidRequest",
    "MisdirectedRequest",
    "NotAMember",
    "ParticipantSuspended",
    "ReplayedRequest",
    "RequestTooLarge",
    "ServiceError",
    "ServiceUnavailable",
    "SignatureLifetimeTooLong",
    "UnsupportedMediaType",
]


class ServiceError(ExchangeError):
    """Root of the service layer's own errors."""

    http_status = 400
    problem_type = "invalid-request"


class MisdirectedRequest(ServiceError):
    """The signature verifies, but for another URL than this server's public URL.

    Another spelling of the same server (``localhost`` for ``127.0.0.1``,
    another port, the URL before a ``server move``): the client's keys are
    fine, only the URL it signed for is not the one the log records. Answered
    421 with the public URL as ``public_url``, and never logged (the request
    was not signed for this server's URL).
    """

    http_status = 421
    problem_type = "wrong-server-url"

    def __init__(self, signed_for: str, public_url: str) -> None:
        super().__init__(f"the request was signed for {signed_for[:100]!r}, but this server's "
                         f"public URL is {public_url!r}")
        self.public_url = public_url


class InvalidRequest(ServiceError):
    """The request is well signed but its content breaks the API's rules."""


class RequestTooLarge(ServiceError):
    """A body or value exceeds a configured limit."""

    http_status = 413
    problem_type = "request-too-large"


class UnsupportedMediaType(ServiceError):
    """The body's media type is not the one the route accepts."""

    http_status = 415
    problem_type = "unsupported-media-type"


class Forbidden(ServiceError):
    """The authenticated participant's role does not allow this operation."""

    http_status = 403
    problem_type = "forbidden"


class NotAMember(Forbidden):
    """The participant is not (or no longer) an active member of the case."""

    problem_type = "not-a-member"


class ParticipantSuspended(ServiceError):
    """The request is validly signed by a participant whose key is suspended."""

    http_status = 401
    problem_type = "participant-suspended"


class ReplayedRequest(ServiceError):
    """The signature's nonce was used before by the same key: a replayed request."""

    http_status = 401
    problem_type = "replayed-nonce"


class SignatureLifetimeTooLong(ServiceError):
    """``expires - created`` exceeds the configured maximum signature age."""

    http_status = 401
    problem_type = "signature-lifetime"


class ServiceUnavailable(ServiceError):
    """The database cannot be reached; the client should retry later."""

    http_status = 503
    problem_type = "service-unavailable"


class AuditedRefusal(ExchangeError):
    """A refusal that was logged: wraps the original error and names its audit entry.

    ``http_status`` and ``problem_type`` are the original error's, so the
    transport renders this exactly like the error itself, plus the
    ``Exchange-Audit-Index`` header.
    """

    def __init__(self, error: ExchangeError, audit_index: int) -> None:
        super().__init__(str(error))
        self.error = error
        self.audit_index = audit_index
        self.http_status = error.http_status
        self.problem_type = error.problem_type
