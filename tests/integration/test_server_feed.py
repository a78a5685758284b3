"""The live case feed over real signed HTTP, and two ``serve`` processes on one PostgreSQL.

SSE delivery within seconds, resumption with a signed ``Last-Event-ID``
without loss or duplicates, the long-poll fallback, a removed member's open
feed being closed, refusals with entries; then two processes on one database:
events made through one reach a feed opened on the other, interleaved requests
keep one log that verifies, and a request replayed against the other process
is refused.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from exchange.audit import open_checkpoint, parse_bundle, verify_log
from exchange.audit.entry import AuditEntry
from exchange.audit.tiles import entry_bundles
from exchange.crypto.envelope import CaseKey
from exchange.crypto.keys import ParticipantIdentity
from exchange.service.feed import event_from_entry
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER
from tests import statements
from tests.integration.test_server_cases import add_member, create_case, new_case_id
from tests.server_harness import (
    ORIGIN,
    Deployment,
    deployed,
    enrol,
    entry_at,
    expect_problem,
    json_of,
    run,
)

DELIVERY_S = 5.0  # generous: the design target is under a second


@dataclass
class Event:
    id: int
    event: str
    data: dict[str, Any]


class Sse:
    """A minimal SSE reader over an open response (comments are skipped)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout_s: float = DELIVERY_S) -> Event | None:
        """Return the next event, or None when the stream ended."""
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(self.response.content.readline(), timeout_s)
            if not line:
                return None
            text = line.decode("utf-8").rstrip("\n")
            if not text:
                if fields:
                    return Event(int(fields["id"]), fields["event"], json.loads(fields["data"]))
                continue
            if text.startswith(":"):
                continue
            name, _, value = text.partition(": ")
            fields[name] = value


async def open_sse(session: SignedSession, case_id: str,
                   last_event_id: int | None = None) -> tuple[aiohttp.ClientResponse, Sse]:
    headers = {"Accept": "text/event-stream"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    response = await session.request("GET", f"/v1/cases/{case_id}/feed", headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert int(response.headers[AUDIT_INDEX_HEADER]) >= 0
    # The stream is live once its opening comment arrives.
    first = await asyncio.wait_for(response.content.readline(), DELIVERY_S)
    assert first == b": feed open\n"
    return response, Sse(response)


async def remove_member(session: SignedSession, d: Deployment, case_id: str, member: str,
                        remaining: list[str], epoch: int) -> int:
    answer, _ = await statements.remove_member(session, d.anchor, case_id, member)
    body = answer.body
    assert answer.status == 200, body
    assert answer.body["epoch"] == epoch
    assert answer.audit_index is not None
    return answer.audit_index


async def feed_flow(d: Deployment) -> None:
    case_id = new_case_id()
    async with d.session("prosecutor") as pro, d.session("coordinator") as coord, \
            d.session("coordinator2") as coord2:
        key = await create_case(pro, d.cast["prosecutor"], case_id)
        await add_member(pro, case_id, key, d.cast["coordinator"])

        # Live delivery: the coordinator's stream sees coordinator2 being added.
        response, sse = await open_sse(coord, case_id)
        started = time.monotonic()
        added = await add_member(pro, case_id, key, d.cast["coordinator2"])
        event = await sse.next()
        assert event is not None
        assert time.monotonic() - started < DELIVERY_S
        assert event.event == "membership"
        assert event.data["change"] == "added" and event.data["participant"] == "coordinator2"
        assert event.data["case_id"] == case_id and event.data["actor"] == "prosecutor"
        assert added["participant"] == "coordinator2"
        add_index = event.id
        assert (await entry_at(d, add_index))["action"] == "case.member_add"
        response.close()

        # coordinator2 follows too; its stream is closed when it is removed.
        response2, sse2 = await open_sse(coord2, case_id)
        # While nobody listens on the first stream: coordinator2 removed, prosecutor2 added.
        removed_at = await remove_member(pro, d, case_id, "coordinator2",
                                         ["prosecutor", "coordinator"], 2)
        assert await sse2.next() is None  # closed, without seeing its own removal
        response2.close()
        key2 = CaseKey.generate(case_id, 2)  # only to wrap: the server never checks it
        await add_member(pro, case_id, key2, d.cast["prosecutor2"])

        # Resume with Last-Event-ID: exactly the two missed events, in order, once.
        response, sse = await open_sse(coord, case_id, last_event_id=add_index)
        first, second = await sse.next(), await sse.next()
        assert first is not None and second is not None
        assert (first.id, first.data["change"]) == (removed_at, "removed")
        assert second.data["participant"] == "prosecutor2" and second.id > removed_at
        # ... then live again, no duplicates.
        removed_again = await remove_member(pro, d, case_id, "prosecutor2",
                                            ["prosecutor", "coordinator"], 3)
        third = await sse.next()
        assert third is not None and third.id == removed_again
        response.close()

        # Long-poll: the backlog at once ...
        body = await json_of(await coord.request(
            "GET", f"/v1/cases/{case_id}/feed?after={add_index}"))
        assert [e["id"] for e in body["events"]] == [removed_at, second.id, removed_again]
        assert body["last_id"] == removed_again and body["closed"] is False
        # ... an empty answer after the wait ...
        started = time.monotonic()
        body = await json_of(await coord.request(
            "GET", f"/v1/cases/{case_id}/feed?after={removed_again}&wait=0.3"))
        assert body["events"] == [] and time.monotonic() - started >= 0.3
        # ... and a waiting poll answered by a new event.
        poll = asyncio.ensure_future(coord.request(
            "GET", f"/v1/cases/{case_id}/feed?after={removed_again}&wait=20"))
        newcomer = ParticipantIdentity.generate("coordinator-" + case_id[-6:])
        async with d.session("admin") as admin:
            await enrol(admin, newcomer, "coordinator")
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await add_member(pro, case_id, CaseKey.generate(case_id, 3), newcomer)
        body = await json_of(await poll)
        assert time.monotonic() - started < DELIVERY_S
        assert [e["event"] for e in body["events"]] == ["membership"]
        assert body["events"][0]["data"]["participant"] == newcomer.id


def test_feed_delivers_resumes_and_long_polls(sqlite_deployment: Deployment) -> None:
    run(feed_flow(sqlite_deployment))


async def feed_refusals(d: Deployment) -> None:
    case_id = new_case_id()
    async with d.session("prosecutor") as pro, d.session("prosecutor2") as outsider, \
            d.session("auditor") as auditor:
        await create_case(pro, d.cast["prosecutor"], case_id)
        index = await expect_problem(
            await outsider.request("GET", f"/v1/cases/{case_id}/feed",
                                   headers={"Accept": "text/event-stream"}),
            403, "not-a-member")
        entry = await entry_at(d, index)
        assert (entry["action"], entry["outcome"], entry["case"]) == (
            "case.feed", "denied", case_id)
        await expect_problem(await auditor.request("GET", f"/v1/cases/{case_id}/feed"),
                             403, "forbidden")
        await expect_problem(await pro.request("GET", "/v1/cases/case-none/feed"),
                             403, "not-a-member")  # as for a case that exists
        await expect_problem(await pro.request(
            "GET", f"/v1/cases/{case_id}/feed?wait=31"), 400, "invalid-request")
        await expect_problem(await pro.request(
            "GET", f"/v1/cases/{case_id}/feed", headers={
                "Accept": "text/event-stream", "Last-Event-ID": "x1"}), 400, "invalid-request")
        # Opening a feed is one case.feed entry.
        response = await pro.request("GET", f"/v1/cases/{case_id}/feed")
        await json_of(response)
        entry = await entry_at(d, int(response.headers[AUDIT_INDEX_HEADER]))
        assert (entry["action"], entry["outcome"]) == ("case.feed", "ok")
        assert entry["details"] == {"after": None, "mode": "poll"}


def test_feed_refusals_are_logged(sqlite_deployment: Deployment) -> None:
    run(feed_refusals(sqlite_deployment))


async def membership_feed(d: Deployment) -> None:
    case_id = new_case_id()
    async with d.session("prosecutor") as pro, d.session("prosecutor2") as pro2, \
            d.session("auditor") as auditor:
        opened = await pro2.request("GET", "/v1/memberships/feed")
        await json_of(opened)
        start = int(opened.headers[AUDIT_INDEX_HEADER])
        key = await create_case(pro, d.cast["prosecutor"], case_id)
        await add_member(pro, case_id, key, d.cast["coordinator"])  # not prosecutor2's event
        poll = asyncio.ensure_future(pro2.request(
            "GET", f"/v1/memberships/feed?after={start}&wait=20"))
        await asyncio.sleep(0.3)
        started = time.monotonic()
        added = await add_member(pro, case_id, key, d.cast["prosecutor2"])
        response = await poll
        body = await json_of(response)
        assert time.monotonic() - started < DELIVERY_S
        assert [(e["event"], e["data"]["change"], e["data"]["participant"], e["data"]["case_id"])
                for e in body["events"]] == [("membership", "added", "prosecutor2", case_id)]
        assert added["participant"] == "prosecutor2"
        entry = await entry_at(d, int(response.headers[AUDIT_INDEX_HEADER]))
        assert (entry["action"], entry["outcome"], entry["case"]) == (
            "membership.feed", "ok", None)
        # Its own removal is an event of its membership feed too (the case feed just closes).
        response, sse = await open_membership_sse(pro2, body["last_id"])
        removed_at = await remove_member(pro, d, case_id, "prosecutor2",
                                         ["prosecutor", "coordinator"], 2)
        event = await sse.next()
        assert event is not None and (event.id, event.data["change"]) == (removed_at, "removed")
        response.close()
        await expect_problem(await auditor.request("GET", "/v1/memberships/feed"),
                             403, "forbidden")


async def open_membership_sse(session: SignedSession,
                              last_event_id: int) -> tuple[aiohttp.ClientResponse, Sse]:
    response = await session.request("GET", "/v1/memberships/feed", headers={
        "Accept": "text/event-stream", "Last-Event-ID": str(last_event_id)})
    assert response.status == 200, await response.text()
    assert await asyncio.wait_for(response.content.readline(), DELIVERY_S) == b": feed open\n"
    return response, Sse(response)


def test_membership_feed_names_only_the_caller_in_any_case(
        sqlite_deployment: Deployment) -> None:
    run(membership_feed(sqlite_deployment))


def test_evidence_entries_become_evidence_events() -> None:
    """An ok evidence.commit entry is an evidence event; denied ones and others are not."""

    def entry(action: str, outcome: str = "ok") -> AuditEntry:
        return AuditEntry(index=7, time="2025-01-31T12:00:00.000000Z", actor="p1",
                          actor_key="fp", action=action, case="case-1", object="ev-1",
                          outcome="ok" if outcome == "ok" else "denied",
                          reason=None if outcome == "ok" else "forbidden", request=None,
                          details={"size": 10}, prev=bytes(32))

    event = event_from_entry(entry("evidence.commit"))
    assert event is not None
    assert (event.id, event.kind, event.case_id) == (7, "evidence", "case-1")
    assert event.data["evidence_id"] == "ev-1" and event.data["details"] == {"size": 10}
    assert event.sse().startswith(b"id: 7\nevent: evidence\ndata: {")
    assert event_from_entry(entry("evidence.commit", "denied")) is None
    assert event_from_entry(entry("case.show")) is None


async def two_processes(d: Deployment) -> None:
    case_id = new_case_id()
    async with d.session("prosecutor", process=0) as pro0, \
            d.session("prosecutor", process=1) as pro1, \
            d.session("coordinator", process=1) as coord1, \
            d.session("auditor", process=1) as auditor1:
        key = await create_case(pro0, d.cast["prosecutor"], case_id)
        await add_member(pro1, case_id, key, d.cast["coordinator"])

        # A feed on process 1 sees a change committed through process 0.
        response, sse = await open_sse(coord1, case_id)
        await add_member(pro0, case_id, key, d.cast["coordinator2"])
        event = await sse.next()
        assert event is not None and event.data["participant"] == "coordinator2"
        response.close()

        # Interleaved concurrent requests through both processes: one log.
        async def burst(session: SignedSession) -> list[int]:
            out = []
            for _ in range(10):
                response = await session.request("GET", "/v1/cases")
                await json_of(response)
                assert response.status == 200
                out.append(int(response.headers[AUDIT_INDEX_HEADER]))
            return out

        first, second = await asyncio.gather(burst(pro0), burst(pro1))
        assert len(set(first) | set(second)) == 20

        # A signed request replayed against the other process is refused.
        headers, _ = pro0.prepare("GET", "/v1/cases")
        async with pro0.session.get(pro0.url("/v1/cases"), headers=headers) as ok:
            assert ok.status == 200
        async with pro1.session.get(pro1.url("/v1/cases"), headers=headers) as replay:
            assert replay.status == 401
            assert (await replay.json(content_type=None))["type"].endswith("/replayed-nonce")

        # The whole log, fetched through process 1's API, verifies offline.
        response = await auditor1.request("GET", "/v1/audit/checkpoint")
        note = await response.read()
        size = open_checkpoint(note, d.log_vkey, origin=ORIGIN).checkpoint.size
        entries: list[bytes] = []
        for bundle in entry_bundles(0, size):
            response = await auditor1.request("GET", "/v1/audit/" + bundle.path())
            assert response.status == 200
            entries.extend(parse_bundle(await response.read(), bundle.width))
        report = verify_log(entries, d.log_vkey, note, origin=ORIGIN)
        assert report.ok, [str(f) for f in report.findings]
        assert set(first) | set(second) <= set(range(size))


def test_two_processes_on_one_postgres(tmp_path: Path) -> None:
    # One public URL for both processes, as behind a load balancer: a request signed
    # for one is valid for the other, which is what makes the replay test meaningful.
    with deployed(tmp_path, "postgres", processes=2,
                  extra_args=["--public-url", "http://exchange.test:8443"]) as d:
        run(two_processes(d))


async def _feed_open_during_sigterm(d: Deployment) -> float:
    case_id = new_case_id()
    async with d.session("prosecutor") as pro:
        await create_case(pro, d.cast["prosecutor"], case_id)
        response, sse = await open_sse(pro, case_id)
        # A second subscriber has hung up already (as a client stopping its watch does):
        # the server finds out only when it ends that stream.
        gone, _ = await open_sse(pro, case_id)
        assert gone.connection is not None and gone.connection.transport is not None
        gone.connection.transport.abort()
        gone.close()
        await asyncio.sleep(0.2)
        started = time.monotonic()
        code = await asyncio.to_thread(d.processes[0].stop, timeout_s=25.0)
        assert code == 0
        assert await sse.next() is None  # the stream was ended, not cut mid-event
        response.close()
        elapsed = time.monotonic() - started
    # Ending a feed at shutdown is routine: no error (nor traceback) in the operator's log.
    failures = [line for line in d.processes[0].lines if '"level": "error"' in line]
    assert failures == [], failures[:1]
    return elapsed


def test_sigterm_closes_open_feeds_instead_of_waiting_for_them(tmp_path: Path) -> None:
    """An idle SSE subscriber must not hold shutdown for the whole drain timeout (30 s)."""
    with deployed(tmp_path, "sqlite") as d:
        elapsed = run(_feed_open_during_sigterm(d))
    assert elapsed < 10.0, f"shutdown with an open feed took {elapsed:.1f} s"
