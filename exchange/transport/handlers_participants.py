"""Participant routes: enrol, list, show, suspend, key change (thin: parse, service, render)."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.statement import DIRECTORY_CHAIN
from exchange.service import participants
from exchange.service.statements import load_anchor
from exchange.transport.auth import perform, read_body
from exchange.transport.openapi import B64, ID, json_content, obj, operation
from exchange.transport.routing import SERVICE_KEY, Route, move_base_url, respond_json
from exchange.transport.statements import (
    _STATEMENT_SCHEMA,
    STATEMENTS_SCHEMA,
    statement_query,
    with_entries,
)

__all__ = ["PARTICIPANT_SCHEMA", "routes"]

PARTICIPANT_SCHEMA = obj({
    "id": ID,
    "role": {"enum": ["admin", "prosecutor", "coordinator", "auditor"]},
    "organisation": {"type": "string"},
    "country": {"type": "string"},
    "display_name": {"type": "string"},
    "status": {"enum": ["active", "suspended", "revoked"]},
    "fingerprint": {"type": "string"},
    "signing_key": B64,
    "age_recipient": {"type": "string"},
    "pq_recipient": {"type": ["string", "null"]},
    "enrolled_at": {"type": "integer"},
    "enrolment_index": {"type": ["integer", "null"]},
    "key_index": {"type": ["integer", "null"]},
    "key_entry": {"type": ["string", "null"], "contentEncoding": "base64",
                  "description": "the audit entry at key_index (GET of one participant)"},
}, required=["id", "role", "status", "fingerprint", "signing_key", "age_recipient"],
    additional=True)
_ENROL_SCHEMA = _STATEMENT_SCHEMA
_TAGS = ("participants",)
_DIRECTORY_RESULT = obj({"admins": {"type": "array", "items": ID},
                         "admin_quorum": {"type": "integer", "minimum": 1},
                         "server_url": {"type": ["string", "null"]}},
                        required=["admins", "admin_quorum", "server_url"])


def _now(request: web.Request) -> int:
    return int(request.app[SERVICE_KEY].clock())


def _anchor(request: web.Request) -> TrustAnchor:
    return load_anchor(request.app[SERVICE_KEY].config.data_dir)


async def _statement_body(request: web.Request, action: str) -> bytes:
    limit = request.app[SERVICE_KEY].config.limits.max_json_bytes
    return await read_body(request, max_bytes=limit, action=action)


async def enrol(request: web.Request) -> web.StreamResponse:
    """POST /v1/participants: enrol a participant (``participant.enrol`` statement)."""
    body = await _statement_body(request, "participant.enrol")
    op = participants.enrol_op(body, content_type=request.headers.get("Content-Type"),
                               now=_now(request), anchor=_anchor(request))
    done = await perform(request, "participant.enrol", op, body=body)
    view = dict(done.value)
    view["enrolment_index"] = view["key_index"] = done.audit_index
    return respond_json(view, status=201, audit_index=done.audit_index)


async def list_participants(request: web.Request) -> web.StreamResponse:
    """GET /v1/participants: every participant's public view."""
    done = await perform(request, "participant.list", participants.list_op())
    return respond_json({"participants": done.value}, audit_index=done.audit_index)


async def show(request: web.Request) -> web.StreamResponse:
    """GET /v1/participants/{pid}: public keys, enrolment index and the logged key entry.

    ``key_entry`` is the audit entry at ``key_index`` (the enrolment or key
    change that logged these keys), so any client can prove with an inclusion
    proof that the served keys are the logged ones (key substitution, DESIGN.md
    threat model). It holds only public keys and the administrator's request.
    """
    pid = request.match_info["pid"]
    done = await perform(request, "participant.show", participants.show_op(pid), object=pid)
    view = dict(done.value)
    key_index = view.get("key_index")
    view["key_entry"] = None
    if isinstance(key_index, int):
        store = request.app[SERVICE_KEY].store
        stored = await store.audit_entries(key_index, key_index + 1)
        if stored:
            view["key_entry"] = base64.b64encode(stored[0].entry).decode("ascii")
    return respond_json(view, audit_index=done.audit_index)


def _status_handler(action: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        pid = request.match_info["pid"]
        body = await _statement_body(request, action)
        content_type = request.headers.get("Content-Type")
        anchor = _anchor(request)
        op = (participants.role_op(pid, body, content_type=content_type, anchor=anchor)
              if action == "participant.role" else
              participants.status_op(pid, body, content_type=content_type, anchor=anchor,
                                     kind=action))
        done = await perform(request, action, op, body=body, object=pid)
        return respond_json(done.value, audit_index=done.audit_index)

    handler.__doc__ = f"POST /v1/participants/{{pid}}/...: a {action} statement (admins)."
    return handler


suspend = _status_handler("participant.suspend")
reinstate = _status_handler("participant.reinstate")
change_role = _status_handler("participant.role")


async def change_keys(request: web.Request) -> web.StreamResponse:
    """PUT /v1/participants/{pid}/keys: replace a participant's keys (key-change statement)."""
    pid = request.match_info["pid"]
    body = await _statement_body(request, "participant.key_change")
    op = participants.key_change_op(pid, body, content_type=request.headers.get("Content-Type"),
                                    anchor=_anchor(request))
    done = await perform(request, "participant.key_change", op, body=body, object=pid)
    view = dict(done.value)
    view["key_index"] = done.audit_index
    return respond_json(view, audit_index=done.audit_index)


def _directory_handler(action: str) -> Any:
    async def handler(request: web.Request) -> web.StreamResponse:
        body = await _statement_body(request, action)
        op = participants.directory_op(body, content_type=request.headers.get("Content-Type"),
                                       anchor=_anchor(request), kind=action)
        done = await perform(request, action, op, body=body)
        if action == "server.url":
            move_base_url(request.app, str(done.value["server_url"]))
        return respond_json(done.value, audit_index=done.audit_index)

    handler.__doc__ = f"POST /v1/directory/...: an {action} statement (admins)."
    return handler


set_admins = _directory_handler("admin.set")
set_server_url = _directory_handler("server.url")


async def directory_statements(request: web.Request) -> web.StreamResponse:
    """GET /v1/directory/statements?after=SEQ[&size=N]: the directory chain, with proofs."""
    after, size = statement_query(request)
    op = participants.statements_op(DIRECTORY_CHAIN, after, size)
    done = await perform(request, "directory.read", op)
    value = await with_entries(request.app[SERVICE_KEY].store, done.value, size)
    return respond_json(value, audit_index=done.audit_index)


def _ok(description: str, schema: dict[str, Any], status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": json_content(schema)}}


def routes() -> list[Route]:
    """Return the participant routes."""
    return [
        Route(method="POST", path="/v1/participants", handler=enrol,
              action="participant.enrol", body=True,
              openapi=operation("enrol a participant (admin)", tags=_TAGS,
                                request_schema=_ENROL_SCHEMA,
                                problems=(400, 401, 403, 409, 413, 415),
                                responses=_ok("enrolled", PARTICIPANT_SCHEMA, "201"))),
        Route(method="GET", path="/v1/participants", handler=list_participants,
              action="participant.list",
              openapi=operation("list participants and their public keys", tags=_TAGS,
                                problems=(401, 403),
                                responses=_ok("participants", obj(
                                    {"participants": {"type": "array",
                                                      "items": PARTICIPANT_SCHEMA}},
                                    required=["participants"])))),
        Route(method="GET", path="/v1/participants/{pid}", handler=show,
              action="participant.show",
              openapi=operation("show a participant's public keys", tags=_TAGS,
                                problems=(401, 403, 404),
                                responses=_ok("the participant", PARTICIPANT_SCHEMA))),
        Route(method="POST", path="/v1/participants/{pid}/suspend", handler=suspend,
              action="participant.suspend", body=True,
              openapi=operation("suspend a participant (admin statement)", tags=_TAGS,
                                request_schema=_STATEMENT_SCHEMA,
                                problems=(401, 403, 404),
                                responses=_ok("suspended", PARTICIPANT_SCHEMA))),
        Route(method="POST", path="/v1/participants/{pid}/reinstate", handler=reinstate,
              action="participant.reinstate", body=True,
              openapi=operation("reinstate a suspended participant (admin statement)",
                                tags=_TAGS, request_schema=_STATEMENT_SCHEMA,
                                problems=(400, 401, 403, 404),
                                responses=_ok("reinstated", PARTICIPANT_SCHEMA))),
        Route(method="POST", path="/v1/participants/{pid}/role", handler=change_role,
              action="participant.role", body=True,
              openapi=operation("change a participant's role (admin statement)",
                                tags=_TAGS, request_schema=_STATEMENT_SCHEMA,
                                problems=(400, 401, 403, 404),
                                responses=_ok("changed", PARTICIPANT_SCHEMA))),
        Route(method="POST", path="/v1/directory/admins", handler=set_admins,
              action="admin.set", body=True,
              openapi=operation("change the administrators and their quorum (admin.set)",
                                tags=_TAGS, request_schema=_STATEMENT_SCHEMA,
                                problems=(400, 401, 403),
                                responses=_ok("recorded", _DIRECTORY_RESULT))),
        Route(method="POST", path="/v1/directory/server-url", handler=set_server_url,
              action="server.url", body=True,
              openapi=operation("record the server's public URL (server.url statement)",
                                tags=_TAGS, request_schema=_STATEMENT_SCHEMA,
                                problems=(400, 401, 403),
                                responses=_ok("recorded", _DIRECTORY_RESULT))),
        Route(method="GET", path="/v1/directory/statements", handler=directory_statements,
              action="directory.read",
              openapi=operation("the directory's signed statements after a sequence number, "
                                "each with its audit entry (and inclusion proof with size=)",
                                tags=_TAGS, problems=(400, 401, 403, 404),
                                responses=_ok("statements", STATEMENTS_SCHEMA))),
        Route(method="PUT", path="/v1/participants/{pid}/keys", handler=change_keys,
              action="participant.key_change", body=True,
              openapi=operation("change a participant's keys (admin; logged with the new keys)",
                                tags=_TAGS, request_schema=_STATEMENT_SCHEMA,
                                problems=(400, 401, 403, 404, 409, 413, 415),
                                responses=_ok("changed", PARTICIPANT_SCHEMA))),
    ]
