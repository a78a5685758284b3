"""The live feeds: a case's new evidence and membership changes, and a participant's memberships.

Spec: WHATWG HTML "Server-sent events" (event stream format) for the stream,
plus a long-poll JSON fallback; server design "Live feed".

Theory of operation. The event source is the audit log itself: every
evidence commit and membership change is an ``ok`` entry naming its case,
written in the operation's own transaction, so an event exists exactly when
its operation committed, and its id is the audit index of that entry
(strictly increasing, shared by every process on one database).
:func:`event_from_entry` maps those entries to events. (The lead's design has
a ``case_events`` table for this; it did not exist when the feed was written,
and the log gives the same ordering and ids. Only :meth:`FeedHub._read` and
:meth:`FeedHub.backlog` would change to read that table instead.)

One :class:`FeedHub` per service tails the log: it polls the committed tree
size every :data:`POLL_S` (so commits by *another* server process sharing the
PostgreSQL database arrive within that), and :meth:`FeedHub.poke` — called
in-process when a commit is on its way — switches to fast polling until the
tree grows, so local events arrive within tens of milliseconds. New entries
are read once per hub and dispatched to the subscriptions of their case.

Resumption: a subscription registers at the hub's position P before the
backlog ``(after, P)`` is read from the log, and everything at or past P is
dispatched live, so nothing is lost or delivered twice (ids are also
de-duplicated). A member removed from the case gets no further events: a
live feed is closed at the removal; in a backlog, events between its own
removal and re-admission are skipped.

The membership feed (``case_id`` None on a :class:`Subscription`) carries the
``membership`` events that name the subscriber, across every case: a
participant learns at once that a case was shared with it (or that it was
removed), without listing its cases again and again. It is only a wake-up
call: the client checks the membership in the case's signed statements
before it acts on one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import weakref
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog

from exchange.audit.entry import AuditEntry, parse_entry
from exchange.errors import ExchangeError
from exchange.service.core import Actor, Operation, OpResult, Service
from exchange.service.errors import InvalidRequest
from exchange.service.policy import MEMBER_ROLES, require_case_member
from exchange.service.uploads import access_case
from exchange.storage import durability
from exchange.storage.errors import StoreClosed
from exchange.storage.metadata import MetadataStore, Transaction

__all__ = [
    "CASE_FEED",
    "EVENT_ACTIONS",
    "HEARTBEAT_S",
    "MAX_POLL_EVENTS",
    "MAX_WAIT_S",
    "MEMBERSHIP_FEED",
    "POLL_S",
    "CaseEvent",
    "FeedHub",
    "Subscription",
    "event_from_entry",
    "hub_for",
    "open_feed_op",
    "open_membership_feed_op",
    "shutdown",
]

CASE_FEED = "case.feed"
MEMBERSHIP_FEED = "membership.feed"
#: Audit actions that are feed events, and the event name each becomes.
EVENT_ACTIONS = {
    "evidence.commit": "evidence",
    "case.member_add": "membership",
    "case.member_remove": "membership",
}
#: How often the hub reads the committed tree size when nothing pokes it.
POLL_S = 0.25
#: After a poke, poll this often (for at most ``_BURST_S``) until the tree grows.
_FAST_POLL_S = 0.02
_BURST_S = 1.0
#: SSE comment lines keep proxies and clients from timing out an idle stream.
HEARTBEAT_S = 15.0
#: Longest long-poll wait a client may ask for, and the most events in one answer.
MAX_WAIT_S = 30.0
MAX_POLL_EVENTS = 500
#: Entries read from the store per call (the store's own limit).
_READ_BATCH = 256
_log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class CaseEvent:
    """One feed event: ``id`` is the audit index of the entry that recorded it."""

    id: int
    case_id: str
    kind: str
    data: dict[str, Any]

    def names(self, participant_id: str) -> bool:
        """Whether this is a membership change of ``participant_id`` (added or removed)."""
        return self.kind == "membership" and self.data.get("participant") == participant_id

    def removes(self, participant_id: str) -> bool:
        """Whether this event removes ``participant_id`` from the case."""
        return self.data.get("change") == "removed" and self.data.get("participant") == (
            participant_id)

    def adds(self, participant_id: str) -> bool:
        """Whether this event adds ``participant_id`` to the case."""
        return self.data.get("change") == "added" and self.data.get("participant") == (
            participant_id)

    def to_json(self) -> dict[str, Any]:
        """Return the long-poll representation."""
        return {"id": self.id, "event": self.kind, "data": self.data}

    def sse(self) -> bytes:
        """Return the event in the SSE wire format (one ``data`` line of compact JSON)."""
        data = json.dumps(self.data, separators=(",", ":"), sort_keys=True)
        return f"id: {self.id}\nevent: {self.kind}\ndata: {data}\n\n".encode()


def event_from_entry(entry: AuditEntry) -> CaseEvent | None:
    """Return the feed event an audit entry stands for, or None if it is not one."""
    kind = EVENT_ACTIONS.get(entry.action)
    if kind is None or entry.outcome != "ok" or entry.case is None:
        return None
    data: dict[str, Any] = {
        "case_id": entry.case, "time": entry.time, "actor": entry.actor,
        "details": dict(entry.details),
    }
    if kind == "evidence":
        data["evidence_id"] = entry.object
    else:
        data["change"] = "added" if entry.action == "case.member_add" else "removed"
        data["participant"] = entry.object
    return CaseEvent(id=entry.index, case_id=entry.case, kind=kind, data=data)


def _events(raw_entries: Iterable[bytes]) -> list[CaseEvent]:
    out: list[CaseEvent] = []
    for raw in raw_entries:
        event = event_from_entry(parse_entry(raw))
        if event is not None:
            out.append(event)
    return out


@dataclass(eq=False)
class Subscription:
    """One open feed: live events of ``case_id`` at or past ``start``, in order.

    ``case_id`` None is the membership feed of ``participant_id`` (the
    changes that name it, in every case). ``None`` in the queue means the
    feed is closed (member removed from the case, server stopping). ``last``
    is the id of the last event handed out.
    """

    case_id: str | None
    participant_id: str
    start: int
    last: int
    queue: asyncio.Queue[CaseEvent | None] = field(default_factory=asyncio.Queue)
    closed: bool = False

    def offer(self, event: CaseEvent) -> None:
        """Queue a live event (the hub calls this in log order)."""
        if self.closed:
            return
        if self.case_id is not None and event.removes(self.participant_id):
            self.close()
            return
        self.queue.put_nowait(event)

    def close(self) -> None:
        """End the feed; the reader sees None."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    def take(self, event: CaseEvent) -> bool:
        """Return whether ``event`` is new for this reader (and mark it delivered)."""
        if event.id <= self.last:
            return False
        self.last = event.id
        return True

    async def next(self, timeout_s: float) -> CaseEvent | None:
        """Return the next new live event; None when closed; TimeoutError after timeout_s."""
        while True:
            event = await asyncio.wait_for(self.queue.get(), timeout_s)
            if event is None:
                self.queue.put_nowait(None)  # stay closed for later calls
                return None
            if self.take(event):
                return event


class FeedHub:
    """Tails the audit log for one service and dispatches case events (module docstring)."""

    def __init__(self, store: MetadataStore, *, poll_s: float = POLL_S) -> None:
        self.store = store
        self.poll_s = poll_s
        self.position: int | None = None
        self._subscriptions: dict[str, set[Subscription]] = {}  # by case
        self._memberships: dict[str, set[Subscription]] = {}  # by participant
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def start(self) -> None:
        """Start tailing (once); returns when the starting position is known."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="feed-hub")
        await self._ready.wait()

    def poke(self) -> None:
        """Say a commit is on its way: poll fast until the log grows."""
        self._poked.set()

    async def _run(self) -> None:
        try:
            self.position = await self.store.tree_size()
        except StoreClosed:
            self.position = 0
            self._ready.set()
            self.close_all()
            return
        except ExchangeError:
            self.position = 0
        self._ready.set()
        burst_until = 0.0
        loop = asyncio.get_running_loop()
        while True:
            interval = _FAST_POLL_S if loop.time() < burst_until else self.poll_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), interval)
            if self._poked.is_set():
                self._poked.clear()
                burst_until = loop.time() + _BURST_S
            try:
                grew = await self._read()
            except StoreClosed:
                self.close_all()
                return
            except ExchangeError as err:  # database away: keep the feeds, try again
                _log.warning("feed_poll_failed", error=type(err).__name__)
                continue
            if grew:
                burst_until = 0.0

    async def _read(self) -> bool:
        """Dispatch the events of entries committed since ``position``; whether it grew."""
        assert self.position is not None
        with durability.tracking() as seen:
            size = await self.store.tree_size()
        if size <= self.position:
            return False
        # Dispatch only entries a power cut cannot take back (storage.durability).
        await self.store.wait_durable(seen.commit)
        while self.position < size:
            end = min(size, self.position + _READ_BATCH)
            batch = await self.store.audit_entries(self.position, end)
            # No await between dispatch and the position update: a subscription
            # registered meanwhile reads its backlog up to the new position.
            for event in _events(e.entry for e in batch):
                for subscription in list(self._subscriptions.get(event.case_id, ())):
                    subscription.offer(event)
                if event.kind == "membership":
                    named = str(event.data.get("participant"))
                    for subscription in list(self._memberships.get(named, ())):
                        subscription.offer(event)
            self.position = end
        return True

    def _group(self, subscription: Subscription) -> tuple[dict[str, set[Subscription]], str]:
        if subscription.case_id is None:
            return self._memberships, subscription.participant_id
        return self._subscriptions, subscription.case_id

    def subscribe(self, case_id: str | None, participant_id: str, after: int) -> Subscription:
        """Register a feed of ``case_id`` (None: ``participant_id``'s memberships) for events
        past ``after`` (call ``start`` first)."""
        assert self.position is not None
        subscription = Subscription(case_id=case_id, participant_id=participant_id,
                                    start=self.position, last=after)
        groups, key = self._group(subscription)
        groups.setdefault(key, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Forget a feed (idempotent)."""
        groups, key = self._group(subscription)
        group = groups.get(key)
        if group is not None:
            group.discard(subscription)
            if not group:
                del groups[key]

    def close_all(self) -> None:
        """Close every open feed (server stopping)."""
        for groups in (self._subscriptions, self._memberships):
            for group in groups.values():
                for subscription in group:
                    subscription.close()

    async def backlog(self, subscription: Subscription, *, limit: int | None = None
                      ) -> tuple[list[CaseEvent], bool]:
        """Return the events after ``subscription.last`` that precede its live start.

        Returns (events, complete); ``complete`` is False when ``limit`` cut
        the list short. Events while the subscriber was not a member (between
        its own removal and re-admission) are skipped.
        """
        out: list[CaseEvent] = []
        member = True
        position = subscription.last + 1
        while position < subscription.start:
            end = min(subscription.start, position + _READ_BATCH)
            for event in _events(e.entry for e in await self.store.audit_entries(position, end)):
                if subscription.case_id is None:
                    if event.names(subscription.participant_id):
                        out.append(event)
                        if limit is not None and len(out) >= limit:
                            return out, False
                    continue
                if event.case_id != subscription.case_id:
                    continue
                if event.removes(subscription.participant_id):
                    member = False
                elif event.adds(subscription.participant_id):
                    member = True
                elif member:
                    out.append(event)
                    if limit is not None and len(out) >= limit:
                        return out, False
            position = end
        return out, True


_hubs: weakref.WeakKeyDictionary[Service, FeedHub] = weakref.WeakKeyDictionary()


async def hub_for(service: Service) -> FeedHub:
    """Return the service's hub, started (created on first use).

    Also chains ``service.membership_hook`` so that a membership change in
    this process pokes the hub (the poll would find it within ``POLL_S``).
    """
    hub = _hubs.get(service)
    if hub is None:
        hub = FeedHub(service.store)
        _hubs[service] = hub
        previous = service.membership_hook

        async def hook(tx: Transaction, kind: str, case_id: str, payload: dict[str, Any],
                       index: int) -> None:
            if previous is not None:
                await previous(tx, kind, case_id, payload, index)
            hub.poke()

        service.membership_hook = hook
    await hub.start()
    return hub


def shutdown(service: Service) -> None:
    """Close every open feed of ``service`` (call before draining requests on SIGTERM)."""
    hub = _hubs.get(service)
    if hub is not None:
        hub.close_all()


def parse_event_id(text: str | None, name: str) -> int | None:
    """Return an event id (``Last-Event-ID`` or ``after``); None when absent."""
    if text is None:
        return None
    text = text.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19 or (
            text != "0" and text.startswith("0")):
        raise InvalidRequest(f"{name} must be a canonical decimal event id, found {text[:30]!r}")
    return int(text)


def parse_wait(text: str | None) -> float:
    """Return the long-poll wait in seconds (0 when absent), at most ``MAX_WAIT_S``."""
    if text is None:
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise InvalidRequest(f"wait must be a number of seconds, found {text[:30]!r}") from None
    if not 0 <= value <= MAX_WAIT_S:
        raise InvalidRequest(f"wait must be between 0 and {MAX_WAIT_S:g} seconds, found {value}")
    return value


def open_feed_op(case_id: str, *, mode: str, after: str | None, after_name: str,
                 wait: str | None = None) -> Operation[tuple[int | None, float]]:
    """Return the ``case.feed`` operation: an active member opens the case's feed.

    The value is (the event id to resume after, or None for "from now"; the
    long-poll wait). The membership is checked in the transaction that logs
    the opening; later events are filtered by case only.
    """

    async def allowed(tx: Transaction, actor: Actor) -> None:
        # Role first, then membership; a case the actor may not see answers
        # the same whether it exists or not.
        await access_case(tx, actor, case_id)

    return _open_op(allowed, mode=mode, after=after, after_name=after_name, wait=wait)


def open_membership_feed_op(*, mode: str, after: str | None, after_name: str,
                            wait: str | None = None) -> Operation[tuple[int | None, float]]:
    """Return the ``membership.feed`` operation: a prosecutor or coordinator follows the
    changes of its own memberships (the same role rule as listing one's cases)."""

    async def allowed(tx: Transaction, actor: Actor) -> None:
        if actor.role not in {r.value for r in MEMBER_ROLES}:
            require_case_member(actor.role, None, "*")  # raises Forbidden

    return _open_op(allowed, mode=mode, after=after, after_name=after_name, wait=wait)


def _open_op(allowed: Callable[[Transaction, Actor], Awaitable[None]], *, mode: str,
             after: str | None, after_name: str,
             wait: str | None) -> Operation[tuple[int | None, float]]:
    async def op(tx: Transaction, actor: Actor) -> OpResult[tuple[int | None, float]]:
        await allowed(tx, actor)
        position = parse_event_id(after, after_name)
        seconds = parse_wait(wait)
        details: dict[str, str | int | None] = {"mode": mode, "after": position}
        return OpResult(value=(position, seconds), details=details)

    return op
