"""Following the live feeds (server-sent events, WHATWG HTML §9.2) with reconnection.

``GET /v1/cases/{cid}/feed`` with ``Accept: text/event-stream`` streams a
case's ``evidence`` and ``membership`` events; ``GET /v1/memberships/feed``
streams the ``membership`` events naming this participant in any case (what
``pull --all --watch`` reacts to when a case is shared with it). An event's
``id`` is the audit index of its entry. After a dropped connection the client
reconnects with exponential back-off and a signed ``Last-Event-ID``, so no
event is missed. Events are the server's word: callers verify what they act on.

The stream is the server's, so it is parsed with bounds (:class:`EventParser`):
a line, and an event's fields together, are at most :data:`MAX_EVENT_BYTES`;
a server that sends a longer event (a huge ``data`` line, or ``data`` lines
without end and no blank line) ends the feed with :class:`MalformedReply`
instead of filling memory. Event ids must be canonical decimals and data a
JSON object.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from exchange.client.errors import ClientError, MalformedReply, ServerRefused
from exchange.client.ids import check_case_id
from exchange.client.problems import refusal
from exchange.client.retry import announce_retry
from exchange.client.session import Client, audit_index_of
from exchange.transport.client_evidence import read_problem

__all__ = ["MAX_EVENT_BYTES", "EventParser", "FeedEvent", "follow", "follow_memberships"]

_MAX_BACKOFF_S = 30.0
#: Largest event (all its field lines together) and so largest line accepted.
MAX_EVENT_BYTES = 64 * 1024
_MAX_ID_DIGITS = 19
_READ = 16 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEvent:
    """One feed event: its id (an audit index), kind and JSON data."""

    case_id: str
    id: int
    kind: str
    data: dict[str, Any]


class EventParser:
    """A bounded server-sent-events parser (WHATWG HTML §9.2.6), fed bytes, yielding fields.

    :meth:`feed` returns the complete events in ``data`` as field dicts
    (``id``, ``event``, ``data``; other fields are ignored as the standard
    says). Memory is bounded by ``max_event`` whatever the stream holds:
    a longer line or event raises :class:`MalformedReply`.
    """

    def __init__(self, what: str, *, max_event: int = MAX_EVENT_BYTES) -> None:
        self._what = what
        self._max = max_event
        self._buffer = bytearray()
        self._scanned = 0  # bytes of the buffer known to hold no newline
        self._fields: dict[str, str] = {}
        self._size = 0

    def __repr__(self) -> str:
        return f"EventParser({self._what!r})"

    def _too_large(self) -> MalformedReply:
        return MalformedReply(f"{self._what}: the server sent an event larger than "
                              f"{self._max} bytes; stopped reading the feed")

    def feed(self, data: bytes) -> list[dict[str, str]]:
        """Consume ``data``; return the events it completed."""
        self._buffer += data
        events: list[dict[str, str]] = []
        while True:
            end = self._buffer.find(b"\n", self._scanned)
            if end < 0:
                if len(self._buffer) > self._max:
                    raise self._too_large()
                self._scanned = len(self._buffer)
                return events
            line = bytes(self._buffer[:end]).rstrip(b"\r")
            del self._buffer[:end + 1]
            self._scanned = 0
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: bytes) -> dict[str, str] | None:
        if not line:
            event, self._fields, self._size = self._fields, {}, 0
            return event or None
        if line.startswith(b":"):
            return None
        self._size += len(line) + 1
        if self._size > self._max:
            raise self._too_large()
        text = line.decode("utf-8", "replace")
        name, _, value = text.partition(":")
        value = value.removeprefix(" ")
        if name == "data" and name in self._fields:
            self._fields[name] += "\n" + value
        elif name in ("id", "event", "data"):
            self._fields[name] = value
        return None


def _parse(case_id: str | None, fields: dict[str, str]) -> FeedEvent | None:
    """Return the event of ``fields``, or None when its id or data is not well formed.

    ``case_id`` None (the membership feed): the event's case is its data's
    ``case_id``, which must be a well-formed case id.
    """
    event_id = fields.get("id", "")
    if not (event_id.isascii() and event_id.isdigit() and len(event_id) <= _MAX_ID_DIGITS):
        return None
    try:
        data = json.loads(fields.get("data", "{}"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    kind = fields.get("event", "message")
    if case_id is None:
        try:
            case_id = check_case_id(data.get("case_id"))
        except ClientError:
            return None
    return FeedEvent(case_id=case_id, id=int(event_id), kind=kind[:64], data=data)


async def _stream(client: Client, case_id: str | None, after: int | None,
                  on_event: Callable[[FeedEvent], Awaitable[None]],
                  on_open: Callable[[], None] | None) -> int | None:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    path = "/v1/memberships/feed" if case_id is None else f"/v1/cases/{case_id}/feed"
    doing = _doing(case_id)
    response = await client.http.request("GET", path, headers=headers)
    async with response:
        if response.status != 200:
            body = await read_problem(response)
            raise refusal(response.status, body, audit_index=audit_index_of(response),
                          doing=doing)
        if on_open is not None:
            on_open()
        parser = EventParser(doing)
        async for chunk in response.content.iter_chunked(_READ):
            for fields in parser.feed(chunk):
                event = _parse(case_id, fields)
                if event is not None:
                    await on_event(event)
                    after = event.id
    return after


def _doing(case_id: str | None) -> str:
    return "following your memberships" if case_id is None else f"following case {case_id!r}"


async def follow(client: Client, case_id: str, on_event: Callable[[FeedEvent], Awaitable[None]],
                 *, after: int | None = None, on_open: Callable[[], None] | None = None,
                 attempts: int | None = None) -> None:
    """Deliver the case's events to ``on_event`` until cancelled, reconnecting on errors.

    ``after`` resumes after that event id (None: events from now on). Refusals
    other than 5xx (e.g. removed from the case) end the loop by raising.
    ``attempts`` bounds consecutive failed connections (None: forever).
    """
    await _follow(client, case_id, on_event, after=after, on_open=on_open, attempts=attempts)


async def follow_memberships(client: Client, on_event: Callable[[FeedEvent], Awaitable[None]],
                             *, after: int | None = None,
                             on_open: Callable[[], None] | None = None,
                             attempts: int | None = None) -> None:
    """Deliver the membership events naming this participant, in any case, as :func:`follow`.

    Each event's ``case_id`` is the case of the change and ``data["change"]``
    ``added`` or ``removed``: the server's word, to be checked against the
    case's signed statements before anything is done with it.
    """
    await _follow(client, None, on_event, after=after, on_open=on_open, attempts=attempts)


async def _follow(client: Client, case_id: str | None,
                  on_event: Callable[[FeedEvent], Awaitable[None]], *, after: int | None,
                  on_open: Callable[[], None] | None, attempts: int | None) -> None:
    failures = 0
    while True:
        lost: BaseException | None = None
        try:
            after = await _stream(client, case_id, after, on_event, on_open)
            failures = 0
        except ServerRefused as err:
            if err.status < 500:
                raise
            failures, lost = failures + 1, err
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as err:
            failures, lost = failures + 1, err
            if attempts is not None and failures >= attempts:
                raise client.unreachable(err) from None
        if attempts is not None and failures >= attempts:
            raise ClientError(f"{_doing(case_id)}: the feed keeps failing")
        delay_s = min(_MAX_BACKOFF_S, 0.5 * 2 ** failures) if failures else 0.5
        if lost is not None:
            announce_retry(client, lost, doing=_doing(case_id), delay_s=delay_s,
                           attempt=failures, attempts=attempts)
        await asyncio.sleep(delay_s)
