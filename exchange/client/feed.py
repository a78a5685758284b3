"""Following a case's live feed (server-sent events, WHATWG HTML §9.2) with reconnection.

``GET /v1/cases/{cid}/feed`` with ``Accept: text/event-stream`` streams
``evidence`` and ``membership`` events whose ``id`` is the audit index of the
event's entry. After a dropped connection the client reconnects with
exponential back-off and a signed ``Last-Event-ID``, so no event is missed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from exchange.client.errors import ClientError, ServerRefused
from exchange.client.problems import refusal
from exchange.client.retry import announce_retry
from exchange.client.session import Client, audit_index_of
from exchange.transport.client_evidence import read_problem

__all__ = ["FeedEvent", "follow"]

_MAX_BACKOFF_S = 30.0


@dataclass(frozen=True, slots=True, kw_only=True)
class FeedEvent:
    """One feed event: its id (an audit index), kind and JSON data."""

    case_id: str
    id: int
    kind: str
    data: dict[str, Any]


def _parse(case_id: str, fields: dict[str, str]) -> FeedEvent | None:
    if not fields.get("id", "").isdigit():
        return None
    try:
        data = json.loads(fields.get("data", "{}"))
    except ValueError:
        return None
    return FeedEvent(case_id=case_id, id=int(fields["id"]), kind=fields.get("event", "message"),
                     data=data if isinstance(data, dict) else {})


async def _stream(client: Client, case_id: str, after: int | None,
                  on_event: Callable[[FeedEvent], Awaitable[None]],
                  on_open: Callable[[], None] | None) -> int | None:
    headers = {"Accept": "text/event-stream"}
    if after is not None:
        headers["Last-Event-ID"] = str(after)
    response = await client.http.request("GET", f"/v1/cases/{case_id}/feed", headers=headers)
    async with response:
        if response.status != 200:
            body = await read_problem(response)
            raise refusal(response.status, body, audit_index=audit_index_of(response),
                          doing=f"following case {case_id!r}")
        if on_open is not None:
            on_open()
        fields: dict[str, str] = {}
        while line := await response.content.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text == "":
                event = _parse(case_id, fields)
                fields = {}
                if event is not None:
                    await on_event(event)
                    after = event.id
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(":")
            value = value.removeprefix(" ")
            fields[name] = fields[name] + "\n" + value if name == "data" and name in fields \
                else value
    return after


async def follow(client: Client, case_id: str, on_event: Callable[[FeedEvent], Awaitable[None]],
                 *, after: int | None = None, on_open: Callable[[], None] | None = None,
                 attempts: int | None = None) -> None:
    """Deliver the case's events to ``on_event`` until cancelled, reconnecting on errors.

    ``after`` resumes after that event id (None: events from now on). Refusals
    other than 5xx (e.g. removed from the case) end the loop by raising.
    ``attempts`` bounds consecutive failed connections (None: forever).
    """
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
            raise ClientError(f"the feed of case {case_id!r} keeps failing")
        delay_s = min(_MAX_BACKOFF_S, 0.5 * 2 ** failures) if failures else 0.5
        if lost is not None:
            announce_retry(client, lost, doing=f"following case {case_id}", delay_s=delay_s,
                           attempt=failures, attempts=attempts)
        await asyncio.sleep(delay_s)
