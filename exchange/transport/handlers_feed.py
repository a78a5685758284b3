"""The live feed routes, as server-sent events or long-poll JSON.

``GET /v1/cases/{cid}/feed`` is a case's feed (for its active members);
``GET /v1/memberships/feed`` is the caller's membership feed: the
``membership`` events that name the caller, in any case (a case shared with
it, a removal), so a client watching all its cases learns of a new one at
once.

With ``Accept: text/event-stream`` the answer is an event stream (WHATWG HTML
§9.2): ``id:`` is the audit index of the event's entry, ``event:`` is
``evidence`` or ``membership``, ``data:`` one line of JSON; comment lines are
sent on opening and every ``HEARTBEAT_S``. ``Last-Event-ID`` (a signed header:
the signature profile covers it) or ``?after=N`` resumes; neither means "from
this request on". Any other Accept gets the long-poll fallback: ``?after=N``
(default: from the first event) and ``?wait=S`` (at most 30 s) answer
``{"events": [...], "last_id": N, "closed": bool}`` as soon as there is at
least one event or the wait is over. Opening either is one ``case.feed``
(``membership.feed``) audit entry, not one per event (see
``exchange.service.feed``).
"""

from __future__ import annotations

from functools import partial
from typing import Any, Protocol

from aiohttp import web

from exchange.service import feed
from exchange.service.core import Operation
from exchange.service.feed import (
    CASE_FEED,
    HEARTBEAT_S,
    MAX_POLL_EVENTS,
    MEMBERSHIP_FEED,
    Subscription,
)
from exchange.transport.auth import perform
from exchange.transport.openapi import ID, json_content, obj, operation
from exchange.transport.problems import AUDIT_INDEX_HEADER
from exchange.transport.routing import SERVICE_KEY, Route, durable_before_sending, respond_json

__all__ = ["routes"]

EVENT_STREAM = "text/event-stream"


def _wants_stream(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(part.split(";")[0].strip().lower() == EVENT_STREAM for part in accept.split(","))


class _Opener(Protocol):
    def __call__(self, *, mode: str, after: str | None, after_name: str,
                 wait: str | None = None) -> Operation[tuple[int | None, float]]: ...


async def case_feed(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases/{cid}/feed: new evidence and membership changes (active members)."""
    cid = request.match_info["cid"]
    return await _serve(request, CASE_FEED, partial(feed.open_feed_op, cid), cid)


async def membership_feed(request: web.Request) -> web.StreamResponse:
    """GET /v1/memberships/feed: the caller added to or removed from any case."""
    return await _serve(request, MEMBERSHIP_FEED, feed.open_membership_feed_op, None)


async def _serve(request: web.Request, action: str, opener: _Opener,
                 cid: str | None) -> web.StreamResponse:
    query = request.rel_url.query
    stream = _wants_stream(request)
    if stream:
        name = "Last-Event-ID" if "Last-Event-ID" in request.headers else "after"
        after = request.headers.get("Last-Event-ID", query.get("after"))
        op = opener(mode="sse", after=after, after_name=name)
    else:
        op = opener(mode="poll", after=query.get("after"), after_name="after",
                    wait=query.get("wait"))
    done = await perform(request, action, op, case=cid)
    position, wait_s = done.value
    if position is None:
        # A stream starts after its own opening entry; a poll from the first event.
        position = done.audit_index if stream else -1
    hub = await feed.hub_for(request.app[SERVICE_KEY])
    subscription = hub.subscribe(cid, done.actor.id, position)
    try:
        if stream:
            return await _stream(request, hub, subscription, done.audit_index)
        return await _poll(hub, subscription, wait_s, done.audit_index)
    finally:
        hub.unsubscribe(subscription)


async def _poll(hub: feed.FeedHub, subscription: Subscription, wait_s: float,
                audit_index: int) -> web.StreamResponse:
    backlog, complete = await hub.backlog(subscription, limit=MAX_POLL_EVENTS)
    events = [event for event in backlog if subscription.take(event)]
    if complete:
        if not events and wait_s > 0:
            try:
                first = await subscription.next(wait_s)
            except TimeoutError:
                first = None
            if first is not None:
                events.append(first)
        while len(events) < MAX_POLL_EVENTS and not subscription.queue.empty():
            queued = subscription.queue.get_nowait()
            if queued is None:
                break
            if subscription.take(queued):
                events.append(queued)
    body = {
        "events": [event.to_json() for event in events],
        "last_id": subscription.last if subscription.last >= 0 else None,
        "closed": subscription.closed,
    }
    return respond_json(body, audit_index=audit_index)


async def _stream(request: web.Request, hub: feed.FeedHub, subscription: Subscription,
                  audit_index: int) -> web.StreamResponse:
    response = web.StreamResponse(headers={
        "Content-Type": EVENT_STREAM,
        "Cache-Control": "no-store",
        "X-Accel-Buffering": "no",  # proxies must not buffer the stream
        AUDIT_INDEX_HEADER: str(audit_index),
    })
    await response.prepare(request)
    try:
        await response.write(b": feed open\n\n")
        complete = False
        while not complete:
            backlog, complete = await hub.backlog(subscription, limit=MAX_POLL_EVENTS)
            await durable_before_sending(request)  # the backlog was read from the log
            for event in backlog:
                if subscription.take(event):
                    await response.write(event.sse())
        while True:
            try:
                live = await subscription.next(HEARTBEAT_S)
            except TimeoutError:
                await response.write(b": heartbeat\n\n")
                continue
            if live is None:
                break
            await response.write(live.sse())
        await response.write_eof()
    except ConnectionError:
        pass  # the client went away: found out by a write, or by ending the stream
    return response


_EVENT = obj({"id": {"type": "integer"}, "event": {"enum": ["evidence", "membership"]},
              "data": {"type": "object"}}, required=["id", "event", "data"])
_POLL = obj({"events": {"type": "array", "items": _EVENT},
             "last_id": {"type": ["integer", "null"]}, "closed": {"type": "boolean"}},
            required=["events", "last_id", "closed"])


def _parameters(*, case: bool) -> list[dict[str, Any]]:
    path = [{"name": "cid", "in": "path", "required": True, "schema": ID}] if case else []
    return [
        *path,
        {"name": "after", "in": "query", "required": False,
         "description": "resume after this event id (an audit index)",
         "schema": {"type": "integer", "minimum": 0}},
        {"name": "wait", "in": "query", "required": False,
         "description": "long-poll: seconds to wait for a first event (at most 30)",
         "schema": {"type": "number", "minimum": 0, "maximum": feed.MAX_WAIT_S}},
        {"name": "Last-Event-ID", "in": "header", "required": False,
         "description": "SSE resumption (covered by the signature)",
         "schema": {"type": "integer", "minimum": 0}},
    ]


_RESPONSES = {"200": {"description": "events", "content": {
    **json_content(_POLL), EVENT_STREAM: {"schema": {"type": "string"}}}}}


def routes() -> list[Route]:
    """Return the feed routes."""
    return [
        Route(method="GET", path="/v1/cases/{cid}/feed", handler=case_feed, action=CASE_FEED,
              openapi=operation(
                  "live feed of a case: new evidence and membership changes (members)",
                  tags=("cases",), parameters=_parameters(case=True),
                  description="Accept: text/event-stream gives server-sent events "
                              "(id = audit index; event = evidence | membership; data = "
                              "JSON); otherwise long-poll JSON.",
                  responses=_RESPONSES,
              )),
        Route(method="GET", path="/v1/memberships/feed", handler=membership_feed,
              action=MEMBERSHIP_FEED,
              openapi=operation(
                  "live feed of the caller's memberships: added to or removed from a case",
                  tags=("cases",), parameters=_parameters(case=False),
                  description="The membership events naming the caller, in every case "
                              "(a wake-up call: clients check the case's signed statements). "
                              "Accept: text/event-stream gives server-sent events; otherwise "
                              "long-poll JSON.",
                  responses=_RESPONSES,
              )),
    ]
