"""RFC 9457 problem details: every error response is ``application/problem+json``.

``type`` is ``https://exchange.invalid/problems/<slug>`` with one stable slug
per error kind: the ``problem_type`` of our exceptions. Responses carry only
``type``, ``title``, ``status`` and ``detail`` (plus the audit index of a
logged refusal); never stack traces, file paths or secrets. Unexpected
exceptions become a bare 500 ``internal``; a database outage becomes 503
``service-unavailable`` with ``Retry-After``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from aiohttp import web

from exchange.errors import ExchangeError
from exchange.service.core import is_outage
from exchange.service.errors import AuditedRefusal

__all__ = [
    "AUDIT_INDEX_HEADER",
    "PROBLEM_BASE",
    "PROBLEM_CONTENT_TYPE",
    "RETRY_AFTER_S",
    "error_response",
    "http_exception_response",
    "internal_error_response",
    "is_outage",
    "problem_response",
    "problem_type_uri",
]

PROBLEM_BASE = "https://exchange.invalid/problems/"
PROBLEM_CONTENT_TYPE = "application/problem+json"
AUDIT_INDEX_HEADER = "Exchange-Audit-Index"
#: Seconds a client should wait after a 503 before retrying.
RETRY_AFTER_S = 5

# Titles for the slugs a client is likely to branch on; others get a title
# derived from the slug ("upload-locked" -> "upload locked").
_TITLES = {
    "internal": "internal server error",
    "service-unavailable": "service unavailable",
    "signature-missing": "request is not signed",
    "signature-invalid": "signature does not verify",
    "wrong-server-url": "request signed for another URL of this server",
    "unknown-key": "unknown signing key",
    "participant-suspended": "participant is suspended",
    "forbidden": "operation not allowed for this role",
    "not-a-member": "not a member of the case",
    "not-found": "not found",
    "replayed-nonce": "replayed request",
}
# Slugs for HTTP errors raised by aiohttp itself (routing, method, size).
_HTTP_SLUGS = {
    400: "bad-request",
    404: "not-found",
    405: "method-not-allowed",
    411: "length-required",
    413: "request-too-large",
    415: "unsupported-media-type",
    417: "expectation-failed",
    431: "headers-too-large",
}


def problem_type_uri(slug: str) -> str:
    """Return the stable ``type`` URI for ``slug``."""
    return PROBLEM_BASE + slug


def problem_response(
    status: int,
    slug: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    title: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> web.Response:
    """Return a problem+json response."""
    body: dict[str, object] = {
        "type": problem_type_uri(slug),
        "title": title or _TITLES.get(slug, slug.replace("-", " ")),
        "status": status,
        "detail": detail,
    }
    if extra:
        body.update(extra)
    response = web.Response(
        status=status,
        body=json.dumps(body).encode("utf-8"),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=dict(headers or {}),
    )
    return response


def error_response(err: ExchangeError) -> web.Response:
    """Return the problem response for one of our errors (logged refusals name their entry)."""
    headers: dict[str, str] = {}
    extra: dict[str, object] = {}
    if isinstance(err, AuditedRefusal):
        headers[AUDIT_INDEX_HEADER] = str(err.audit_index)
        extra["audit_index"] = err.audit_index
        err = err.error
    if is_outage(err):
        headers["Retry-After"] = str(RETRY_AFTER_S)
        return problem_response(
            503, "service-unavailable", "the database is unavailable; retry later",
            headers=headers,
        )
    status = err.http_status if 400 <= err.http_status <= 599 else 500
    if status == 503:  # e.g. the blob store is unreachable: worth retrying
        headers["Retry-After"] = str(RETRY_AFTER_S)
    if status >= 500 and err.problem_type in ("internal", "storage"):
        return internal_error_response()
    detail = str(err) or err.problem_type.replace("-", " ")
    retry_after = getattr(err, "retry_after_s", None)
    if status in (429, 503) and isinstance(retry_after, int):
        headers["Retry-After"] = str(retry_after)
    limit = getattr(err, "limit_bytes", None)
    if status == 413 and isinstance(limit, int):
        extra["max_bytes"] = limit
    public_url = getattr(err, "public_url", None)
    if status == 421 and isinstance(public_url, str):
        extra["public_url"] = public_url
    return problem_response(status, err.problem_type, detail, headers=headers, extra=extra)


def http_exception_response(exc: web.HTTPException) -> web.Response:
    """Return a problem response for an aiohttp HTTP error (404 route, 405 method, 413 size)."""
    status = exc.status
    slug = _HTTP_SLUGS.get(status, f"http-{status}")
    headers: dict[str, str] = {}
    if status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    detail = (exc.reason or slug).lower()
    return problem_response(status, slug, detail, headers=headers)


def internal_error_response() -> web.Response:
    """Return the opaque 500 response (the cause is logged, never sent)."""
    return problem_response(500, "internal", "the server could not complete the request")
