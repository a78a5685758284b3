"""Case routes: cases, members, key epochs and envelopes (thin: parse, service, render)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exchange.crypto.anchor import TrustAnchor
from exchange.service import cases, retention
from exchange.service.core import Operation
from exchange.service.statements import load_anchor
from exchange.transport.auth import perform, read_body
from exchange.transport.openapi import B64, ID, json_content, obj, operation
from exchange.transport.routing import SERVICE_KEY, Route, respond_json
from exchange.transport.statements import STATEMENTS_SCHEMA, statement_query, with_entries

__all__ = ["routes"]

_TAGS = ("cases",)
_STATEMENT = {**B64, "description": "the exchange-signed-statement/v1 document, base64"}
_CREATE = obj({"metadata": B64, "statement": _STATEMENT, "envelope": B64},
              required=["metadata", "statement", "envelope"])
_ADD_MEMBER = obj({"statement": _STATEMENT,
                   "envelopes": {"type": "object", "additionalProperties": B64,
                                 "description": "epoch number (decimal) -> envelope"}},
                  required=["statement", "envelopes"])
_NEW_EPOCH = obj({"statement": _STATEMENT,
                  "envelopes": {"type": "object", "additionalProperties": B64,
                                "description": "member id -> envelope of the new epoch"}},
                 required=["statement", "envelopes"])
_ADD_ENVELOPES = obj({"statement": _STATEMENT, "envelopes": {"type": "array", "items": obj(
    {"member": ID, "epoch": {"type": "integer"}, "envelope": B64},
    required=["member", "epoch", "envelope"])}}, required=["statement", "envelopes"])
_POLICY = obj({"statement": _STATEMENT}, required=["statement"])
_CASE = obj({"case_id": ID, "metadata": B64, "created_by": ID, "created_at": {"type": "integer"}},
            required=["case_id", "metadata", "created_by", "created_at"], additional=True)
#: A case write answers with what changed: always the case id, then the change's fields.
_RESULT = obj({"case_id": ID}, required=["case_id"], additional=True)


def _now(request: web.Request) -> int:
    return int(request.app[SERVICE_KEY].clock())


def _anchor(request: web.Request) -> TrustAnchor:
    return load_anchor(request.app[SERVICE_KEY].config.data_dir)


async def _body(request: web.Request, action: str) -> bytes:
    limit = request.app[SERVICE_KEY].config.limits.max_json_bytes
    return await read_body(request, max_bytes=limit, action=action)


async def _run(
    request: web.Request, action: str, op: Operation[Any], *, body: bytes | None = None,
    status: int = 200, case: str | None = None, object: str | None = None,
) -> web.StreamResponse:
    done = await perform(request, action, op, body=body, case=case, object=object)
    return respond_json(done.value, status=status, audit_index=done.audit_index)


async def create_case(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases: create a case with its first key epoch (prosecutors)."""
    body = await _body(request, "case.create")
    op = cases.create_case_op(body, content_type=request.content_type, now=_now(request),
                              anchor=_anchor(request))
    return await _run(request, "case.create", op, body=body, status=201)


async def list_cases(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases: the caller's active cases."""
    done = await perform(request, "case.list", cases.list_cases_op())
    return respond_json({"cases": done.value}, audit_index=done.audit_index)


async def show_case(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases/{cid}: sealed metadata, members and epochs (members only)."""
    cid = request.match_info["cid"]
    return await _run(request, "case.show", cases.show_case_op(cid), case=cid)


async def add_member(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/members: add a member with the current epoch wrapped for it."""
    cid = request.match_info["cid"]
    body = await _body(request, "case.member_add")
    op = cases.add_member_op(cid, body, content_type=request.content_type, now=_now(request),
                             anchor=_anchor(request),
                             hook=request.app[SERVICE_KEY].membership_hook)
    return await _run(request, "case.member_add", op, body=body, status=201, case=cid)


async def remove_member(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/members/{pid}/remove: remove a member; new epoch for the rest."""
    cid, pid = request.match_info["cid"], request.match_info["pid"]
    body = await _body(request, "case.member_remove")
    op = cases.remove_member_op(cid, pid, body, content_type=request.content_type,
                                now=_now(request), anchor=_anchor(request),
                                hook=request.app[SERVICE_KEY].membership_hook)
    return await _run(request, "case.member_remove", op, body=body, case=cid, object=pid)


async def rotate_epoch(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/epochs: a new key epoch for the same members (re-keying)."""
    cid = request.match_info["cid"]
    body = await _body(request, "case.epoch_rotate")
    op = cases.rotate_epoch_op(cid, body, content_type=request.content_type, now=_now(request),
                               anchor=_anchor(request))
    return await _run(request, "case.epoch_rotate", op, body=body, status=201, case=cid)


async def get_envelope(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases/{cid}/epochs/{n}/envelope: the caller's own envelope."""
    cid, n = request.match_info["cid"], request.match_info["n"]
    return await _run(request, "envelope.get", cases.get_envelope_op(cid, n), case=cid,
                      object=f"epoch/{n[:20]}")


async def add_envelopes(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/envelopes: envelopes of existing epochs (case.envelope_add)."""
    cid = request.match_info["cid"]
    body = await _body(request, "case.envelope_add")
    op = cases.envelope_add_op(cid, body, content_type=request.content_type,
                               anchor=_anchor(request))
    return await _run(request, "case.envelope_add", op, body=body, status=201, case=cid)


async def set_policy(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/policy: record the case's policy (case.policy statement)."""
    cid = request.match_info["cid"]
    body = await _body(request, "case.policy")
    op = cases.policy_op(cid, body, content_type=request.content_type, anchor=_anchor(request))
    return await _run(request, "case.policy", op, body=body, case=cid)


async def erase(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}[/evidence/{eid}]/erase: an owner's erase-now (not under hold)."""
    cid = request.match_info["cid"]
    eid = request.match_info.get("eid")
    body = await _body(request, "case.erase")
    service = request.app[SERVICE_KEY]
    op = retention.erase_op(cid, eid, now=_now(request), anchor=_anchor(request))
    done = await perform(request, "case.erase", op, body=body, case=cid, object=eid)
    # The rows and entries are committed; the blobs and old epochs' envelopes go now
    # (what a crash leaves here, the next sweep finishes).
    report = retention.SweepReport()
    await retention.sweep_case(service, _anchor(request), cid, report)
    await retention.delete_blobs(service)
    value = {**done.value, "shredded": [e for _, e in report.shredded]}
    return respond_json(value, audit_index=done.audit_index)


async def case_statements(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases/{cid}/statements?after=SEQ[&size=N]: the case chain (members)."""
    cid = request.match_info["cid"]
    after, size = statement_query(request)
    done = await perform(request, "case.statements", cases.case_statements_op(cid, after),
                         case=cid)
    value = await with_entries(request.app[SERVICE_KEY].store, done.value, size)
    return respond_json(value, audit_index=done.audit_index)


def _ok(description: str, schema: dict[str, Any] | None = None,
        status: str = "200") -> dict[str, Any]:
    return {status: {"description": description, "content": json_content(schema or _RESULT)}}


_WRITE_PROBLEMS = (400, 401, 403, 404, 409, 413, 415)


def routes() -> list[Route]:
    """Return the case routes."""
    return [
        Route(method="POST", path="/v1/cases", handler=create_case, action="case.create",
              body=True,
              openapi=operation("create a case (prosecutor)", tags=_TAGS,
                                request_schema=_CREATE, problems=_WRITE_PROBLEMS,
                                responses=_ok("created", status="201"))),
        Route(method="GET", path="/v1/cases", handler=list_cases, action="case.list",
              openapi=operation("list the caller's active cases", tags=_TAGS,
                                problems=(401, 403),
                                responses=_ok("cases", obj(
                                    {"cases": {"type": "array", "items": _CASE}},
                                    required=["cases"])))),
        Route(method="GET", path="/v1/cases/{cid}", handler=show_case, action="case.show",
              openapi=operation("show a case: sealed metadata, members, key epochs",
                                tags=_TAGS, responses=_ok("the case", _CASE))),
        Route(method="POST", path="/v1/cases/{cid}/members", handler=add_member,
              action="case.member_add", body=True,
              openapi=operation("add a member (prosecutor member)", tags=_TAGS,
                                request_schema=_ADD_MEMBER, problems=_WRITE_PROBLEMS,
                                responses=_ok("added", status="201"))),
        Route(method="POST", path="/v1/cases/{cid}/members/{pid}/remove",
              handler=remove_member, action="case.member_remove", body=True,
              openapi=operation("remove a member and start a new key epoch", tags=_TAGS,
                                request_schema=_NEW_EPOCH, problems=_WRITE_PROBLEMS,
                                responses=_ok("removed"))),
        Route(method="POST", path="/v1/cases/{cid}/epochs", handler=rotate_epoch,
              action="case.epoch_rotate", body=True,
              openapi=operation("start a new key epoch for the same members", tags=_TAGS,
                                request_schema=_NEW_EPOCH, problems=_WRITE_PROBLEMS,
                                responses=_ok("created", status="201"))),
        Route(method="GET", path="/v1/cases/{cid}/epochs/{n}/envelope", handler=get_envelope,
              action="envelope.get",
              openapi=operation("the caller's own envelope of an epoch", tags=_TAGS,
                                responses=_ok("the envelope", obj(
                                    {"case_id": ID, "epoch": {"type": "integer"},
                                     "participant": ID, "envelope": B64},
                                    required=["case_id", "epoch", "participant",
                                              "envelope"])))),
        Route(method="POST", path="/v1/cases/{cid}/envelopes", handler=add_envelopes,
              action="case.envelope_add", body=True,
              openapi=operation("store envelopes of existing epochs (case.envelope_add)",
                                tags=_TAGS, request_schema=_ADD_ENVELOPES,
                                problems=_WRITE_PROBLEMS, responses=_ok("stored", status="201"))),
        Route(method="POST", path="/v1/cases/{cid}/policy", handler=set_policy,
              action="case.policy", body=True,
              openapi=operation("record the case's policy (case.policy statement)",
                                tags=_TAGS, request_schema=_POLICY, problems=_WRITE_PROBLEMS,
                                responses=_ok("recorded"))),
        *(Route(method="POST", path=path, handler=erase, action="case.erase", body=True,
                openapi=operation(what, tags=_TAGS, problems=(*_WRITE_PROBLEMS, 410),
                                  responses=_ok("erased", obj(
                                      {"case_id": ID, "erased": {"type": "array", "items": ID},
                                       "shredded": {"type": "array",
                                                    "items": {"type": "integer"}}},
                                      required=["case_id", "erased"], additional=True))))
          for path, what in (
              ("/v1/cases/{cid}/erase", "erase every item of the case now (prosecutor "
               "member; refused under legal hold)"),
              ("/v1/cases/{cid}/evidence/{eid}/erase", "erase one item now (prosecutor "
               "member; refused under legal hold)"))),
        Route(method="GET", path="/v1/cases/{cid}/statements", handler=case_statements,
              action="case.statements",
              openapi=operation("the case chain's signed statements after a sequence number, "
                                "each with its audit entry (and inclusion proof with size=)",
                                tags=_TAGS, responses=_ok("statements", STATEMENTS_SCHEMA))),
    ]
