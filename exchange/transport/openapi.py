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
from exchange.transport.problems import PROBLEM_CONTENT_TYPE
from exchange.transport.routing import Route

__all__ = [
    "B64",
    "ID",
    "build_document",
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


def problem_responses(statuses: Iterable[int]) -> dict[str, Any]:
    """Return response objects for problem+json errors with these statuses."""
    return {
        str(status): {
            "description": _STANDARD_PROBLEMS.get(status, "error"),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        for status in sorted(set(statuses))
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
        problems = [*problems, 408]  # a stalled JSON body is refused after body_timeout_s
    op["responses"].update(problem_responses([*problems, 503]))
    op["security"] = [{"httpSignature": []}] if signed else []
    return op


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


def build_document(routes: Iterable[Route]) -> dict[str, Any]:
    """Return the OpenAPI 3.1 document describing ``routes``."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        item = paths.setdefault(route.path, {})
        op = route.openapi or operation(route.method + " " + route.path, responses={
            "200": {"description": "ok"}}, signed=route.signed)
        item[route.method.lower()] = _with_path_parameters(route.path, op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "exchange",
            "version": __version__,
            "description": (
                "End-to-end encrypted evidence exchange. Every request except health and "
                "this document is signed per RFC 9421 (Ed25519, keyid = participant id) "
                "covering @method, @target-uri and the present content-digest, "
                "content-type, content-length, upload and range headers, with created, "
                "expires and nonce. Responses that create an audit entry name it in the "
                "Exchange-Audit-Index header. Errors are RFC 9457 problem+json."
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
                    },
                    "required": ["type", "title", "status", "detail"],
                },
            },
            "securitySchemes": {
                "httpSignature": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Signature",
                    "description": "RFC 9421 HTTP Message Signature with Signature-Input "
                                   "(Ed25519, keyid = participant id).",
                },
            },
        },
    }
