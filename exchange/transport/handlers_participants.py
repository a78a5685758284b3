"""Participant routes: enrol, list, show, suspend, key change (thin: parse, service, render)."""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from exchange.service import participants
from exchange.transport.auth import perform, read_body
from exchange.transport.openapi import B64, ID, json_content, obj, operation
from exchange.transport.routing import SERVICE_KEY, Route, respond_json

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
_BUNDLE_SCHEMA: dict[str, Any] = {"type": "object", "description": "an exchange-bundle/v1 document"}
_ENROL_SCHEMA = obj({
    "bundle": _BUNDLE_SCHEMA,
    "role": {"enum": ["admin", "prosecutor", "coordinator", "auditor"]},
    "organisation": {"type": "string", "maxLength": 256},
    "country": {"type": "string", "maxLength": 64},
}, required=["bundle", "role"])
_TAGS = ("participants",)


def _now(request: web.Request) -> int:
    return int(request.app[SERVICE_KEY].clock())


async def enrol(request: web.Request) -> web.StreamResponse:
    """POST /v1/participants: enrol a participant from its public bundle (admins)."""
    limit = request.app[SERVICE_KEY].config.limits.max_json_bytes
    body = await read_body(request, max_bytes=limit, action="participant.enrol")
    op = participants.enrol_op(body, content_type=request.headers.get("Content-Type"),
                               now=_now(request))
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


async def suspend(request: web.Request) -> web.StreamResponse:
    """POST /v1/participants/{pid}/suspend: suspend a participant (admins)."""
    pid = request.match_info["pid"]
    done = await perform(request, "participant.suspend", participants.suspend_op(pid),
                         object=pid)
    return respond_json(done.value, audit_index=done.audit_index)


async def change_keys(request: web.Request) -> web.StreamResponse:
    """PUT /v1/participants/{pid}/keys: replace a participant's public keys (admins)."""
    pid = request.match_info["pid"]
    limit = request.app[SERVICE_KEY].config.limits.max_json_bytes
    body = await read_body(request, max_bytes=limit, action="participant.key_change")
    op = participants.key_change_op(pid, body, content_type=request.headers.get("Content-Type"))
    done = await perform(request, "participant.key_change", op, body=body, object=pid)
    view = dict(done.value)
    view["key_index"] = done.audit_index
    return respond_json(view, audit_index=done.audit_index)


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
              action="participant.suspend",
              openapi=operation("suspend a participant (admin)", tags=_TAGS,
                                problems=(401, 403, 404),
                                responses=_ok("suspended", PARTICIPANT_SCHEMA))),
        Route(method="PUT", path="/v1/participants/{pid}/keys", handler=change_keys,
              action="participant.key_change", body=True,
              openapi=operation("change a participant's keys (admin; logged with the new keys)",
                                tags=_TAGS, request_schema=obj({"bundle": _BUNDLE_SCHEMA},
                                                               required=["bundle"]),
                                problems=(400, 401, 403, 404, 409, 413, 415),
                                responses=_ok("changed", PARTICIPANT_SCHEMA))),
    ]
