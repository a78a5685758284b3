"""The OpenAPI 3.1 document of the API, assembled from the routes' own operation objects.

Each ``handlers_*`` module describes its operations with :func:`operation`
(next to the handler); :func:`build_document` joins them under ``paths`` and
adds the shared components (the RFC 9457 Problem schema, the HTTP-signature
security scheme). Served at ``GET /v1/openapi.json``; a test walks the app's
router and fails if a route is missing from the document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from exchange import __version__
from exchange.config import Limits
from exchange.transport.problems import AUDIT_INDEX_HEADER, PROBLEM_CONTENT_TYPE
from exchange.transport.routing import Route
from exchange.wire.httpsig import COVERED_HEADERS, ED25519_ALG

__all__ = [
    "B64",
    "ID",
    "build_document",
    "header",
    "json_content",
    "obj",
    "operation",
    "problem_responses",
]

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_STANDARD_PROBLEMS = {
    400: "malformed request",
    401: "not authenticated (signature missing, invalid, expired, replayed; unknown or "
         "suspended key)",
    403: "authenticated but not allowed",
    404: "not found",
    408: "the request body stalled (body_timeout_s)",
    409: "conflict with the current state",
    413: "body or value too large",
    415: "unsupported media type",
    429: "too many concurrent operations",
    503: "database unavailable; retry after Retry-After seconds",
    507: "the server's disk is full; nothing of the request was kept",
}
#: A base64 (RFC 4648 §4, padded) string.
B64: dict[str, Any] = {"type": "string", "contentEncoding": "base64"}
#: An identifier: printable ASCII without spaces.
ID: dict[str, Any] = {"type": "string", "pattern": "^[!-~]{1,128}$"}


def obj(properties: Mapping[str, Any], *, required: Sequence[str] = (),
        additional: bool = False) -> dict[str, Any]:
    """Return a JSON Schema object with ``properties`` (closed unless ``additional``)."""
    return {
        "type": "object",
        "properties": dict(properties),
        "required": list(required),
        "additionalProperties": additional,
    }


def json_content(schema: Mapping[str, Any]) -> dict[str, Any]:
    """Return a ``content`` map for an ``application/json`` body."""
    return {"application/json": {"schema": dict(schema)}}


def header(description: str, schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Return a response header object (OpenAPI 3.1 §4.8.21)."""
    return {"description": description, "schema": dict(schema or {"type": "string"})}


_INTEGER = {"type": "integer", "minimum": 0}
#: Response headers of refusals, by status.
_PROBLEM_HEADERS: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": header('the challenge: Signature realm="exchange", alg="ed25519"'),
        "Accept-Signature": header("RFC 9421 §5.1: the components and parameters this "
                                   "request's signature must cover"),
    },
    429: {"Retry-After": header("seconds until a slot frees itself", _INTEGER)},
    503: {"Retry-After": header("seconds to wait before retrying", _INTEGER)},
}
_AUDIT_HEADER = {AUDIT_INDEX_HEADER: header(
    "index of the audit entry that logged this request (a logged refusal names its "
    "denied entry; unlogged reads have none)", _INTEGER)}


def problem_responses(statuses: Iterable[int]) -> dict[str, Any]:
    """Return response objects for problem+json errors with these statuses."""
    out: dict[str, Any] = {}
    for status in sorted(set(statuses)):
        response: dict[str, Any] = {
            "description": _STANDARD_PROBLEMS.get(status, "error"),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        headers = {**_PROBLEM_HEADERS.get(status, {}),
                   **(_AUDIT_HEADER if status not in (503,) else {})}
        if headers:
            response["headers"] = headers
        out[str(status)] = response
    return out


_CONTENT_DIGEST = {
    "name": "Content-Digest", "in": "header", "required": True,
    "description": "RFC 9530 sha-256 digest of the body (covered by the signature)",
    "schema": {"type": "string", "pattern": "^sha-256=:[A-Za-z0-9+/]{43}=:"},
}


def operation(
    summary: str,
    *,
    responses: Mapping[str, Any],
    request_schema: Mapping[str, Any] | None = None,
    problems: Iterable[int] = (400, 401, 403, 404),
    parameters: Sequence[Mapping[str, Any]] = (),
    signed: bool = True,
    description: str | None = None,
    tags: Sequence[str] = (),
) -> dict[str, Any]:
    """Return an OpenAPI operation object; signed operations list the signature scheme.

    ``responses`` holds the success responses; problem responses for
    ``problems`` (plus 503) are added. Path parameters are added by
    :func:`build_document` from the path template.
    """
    op: dict[str, Any] = {"summary": summary, "responses": dict(responses)}
    if description:
        op["description"] = description
    if tags:
        op["tags"] = list(tags)
    if parameters:
        op["parameters"] = [dict(p) for p in parameters]
    if request_schema is not None:
        op["requestBody"] = {"required": True, "content": json_content(request_schema)}
        op["parameters"] = [*op.get("parameters", []), dict(_CONTENT_DIGEST)]
        problems = [*problems, 408]  # a stalled JSON body is refused after body_timeout_s
    if signed:
        for status, response in op["responses"].items():
            if status.startswith("2"):
                response.setdefault("headers", {}).update(_AUDIT_HEADER)
    op["responses"].update(problem_responses([*problems, 503]))
    op["security"] = [{"httpSignature": []}] if signed else []
    return op


def _operation_ids(routes: Sequence[Route]) -> dict[tuple[str, str], str]:
    """Name each operation after its audit action, or its method and path when shared."""
    actions = [r.action for r in routes if r.action]
    out: dict[tuple[str, str], str] = {}
    for route in routes:
        if route.action and actions.count(route.action) == 1:
            name = route.action.replace(".", "_")
        else:
            words = re.sub(r"[{}]", "", route.path.removeprefix("/v1/")).replace(".", "_")
            name = route.method.lower() + "_" + re.sub(r"[^a-z0-9]+", "_", words.lower())
        out[(route.method, route.path)] = name.strip("_")
    return out


def security_scheme(limits: Limits) -> dict[str, Any]:
    """Return the ``httpSignature`` scheme: RFC 9421 with our profile, for generators and people."""
    return {
        "type": "http",
        "scheme": "signature",
        "description": (
            "RFC 9421 HTTP Message Signature in Signature-Input and Signature (not an API "
            f"key). Ed25519 (alg=\"{ED25519_ALG}\", optional), keyid = participant id. Cover "
            "at least @method, @target-uri (the server's public URL plus the path) and "
            "each of these headers the request carries: " + ", ".join(COVERED_HEADERS) +
            "; covering more (e.g. @authority) is fine. A body needs a covered RFC 9530 "
            "Content-Digest (sha-256). Parameters created, expires, keyid and nonce are "
            f"required: created within {limits.clock_skew_s} s of the server's clock, "
            f"expires - created at most {limits.max_signature_age_s} s, and each nonce "
            "is accepted once (replays get 401 replayed-nonce). With several signatures "
            "(RFC 9421 §4.3) the one labelled sig1, else the first that fits this profile, "
            "is verified. A 401 names what to sign in Accept-Signature."
        ),
        "x-rfc9421": {
            "alg": ED25519_ALG,
            "keyid": "participant id",
            "preferred-label": "sig1",
            "required-components": ["@method", "@target-uri"],
            "required-if-present": [*COVERED_HEADERS],
            "required-parameters": ["created", "expires", "keyid", "nonce"],
            "max-lifetime-s": limits.max_signature_age_s,
            "max-clock-skew-s": limits.clock_skew_s,
            "nonce": "single use",
            "content-digest": "sha-256, required with a body",
        },
    }


def _with_path_parameters(path: str, op: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(op)
    declared = {p.get("name") for p in result.get("parameters", []) if p.get("in") == "path"}
    params = list(result.get("parameters", []))
    for name in _PLACEHOLDER.findall(path):
        if name not in declared:
            params.append({"name": name, "in": "path", "required": True,
                           "schema": {"type": "string"}})
    if params:
        result["parameters"] = params
    return result


def build_document(routes: Iterable[Route], *, server_url: str | None = None,
                   limits: Limits | None = None) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document describing ``routes``.

    ``server_url`` is the public URL signatures are computed against (the
    document's ``servers``); ``limits`` fill in the signature rules.
    """
    limits = limits or Limits()
    table = list(routes)
    ids = _operation_ids(table)
    paths: dict[str, dict[str, Any]] = {}
    for route in table:
        item = paths.setdefault(route.path, {})
        op = route.openapi or operation(route.method + " " + route.path, responses={
            "200": {"description": "ok"}}, signed=route.signed)
        op = _with_path_parameters(route.path, op)
        op["operationId"] = ids[(route.method, route.path)]
        item[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "servers": [{"url": server_url or "/",
                     "description": "the server's public URL (what @target-uri is built from)"}],
        "info": {
            "title": "exchange",
            "version": __version__,
            "description": (
                "End-to-end encrypted evidence exchange. Every request except health, "
                "tus discovery (OPTIONS /v1/uploads) and this document is signed per "
                "RFC 9421 (see the httpSignature security scheme). Responses that create "
                "an audit entry name it in the Exchange-Audit-Index header. Errors are "
                "RFC 9457 problem+json."
            ),
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": {
                "Problem": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "format": "uri"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "audit_index": {"type": "integer"},
                        "max_bytes": {"type": "integer",
                                      "description": "413 for a PATCH: the largest body"},
                    },
                    "required": ["type", "title", "status", "detail"],
                },
            },
            "securitySchemes": {"httpSignature": security_scheme(limits)},
        },
    }
