"""Pulling evidence into a directory: everything not yet pulled, then (``watch``) what arrives.

A ledger per destination (state file ``pulls/<key>.json``) remembers which
evidence was pulled, so reruns fetch only new files. Files are pulled one at
a time; a file that fails verification is reported and skipped, the others
continue (the caller decides the exit status from :class:`PullReport`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.client.cases import case_state
from exchange.client.download import (
    Evidence,
    Progress,
    PulledFile,
    download_evidence,
    open_evidence,
)
from exchange.client.errors import ClientError, ServerRefused, VerificationFailed
from exchange.client.feed import FeedEvent, follow, follow_memberships
from exchange.client.ids import check_case_id, check_evidence_id
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.client.state import LocalState
from exchange.crypto.chains import CaseState

__all__ = ["PullReport", "pull", "watch"]


@dataclass
class PullReport:
    """What one pull did: files pulled, already pulled (skipped) and failures."""

    pulled: list[PulledFile] = field(default_factory=list)
    skipped: int = 0
    failed: list[tuple[str, ClientError]] = field(default_factory=list)


def _ledger_name(dest: Path) -> str:
    return f"pulls/{LocalState.key(str(dest.resolve()))}.json"


class _Ledger:
    def __init__(self, client: Client, dest: Path) -> None:
        self.client, self.name = client, _ledger_name(dest)
        doc = client.state.read_json(self.name)
        self.pulled: dict[str, Any] = doc.get("pulled", {}) if isinstance(doc, dict) else {}
        self.dest = str(dest.resolve())

    def has(self, record: dict[str, Any]) -> bool:
        """Whether the evidence of ``record`` (a server record: any JSON) was pulled already."""
        evidence_id = record.get("evidence_id")
        return isinstance(evidence_id, str) and evidence_id in self.pulled

    def add(self, pulled: PulledFile) -> None:
        self.pulled[pulled.evidence_id] = {"path": str(pulled.path)}
        self.client.state.write_json(self.name, {"dest": self.dest, "pulled": self.pulled})


def _shown_id(record: Any) -> str:
    """The record's evidence id as a failure key: bounded and printable (it is the server's)."""
    value = record.get("evidence_id") if isinstance(record, dict) else None
    return printable(str(value), 64)


async def _cases(client: Client, case_ids: list[str] | None) -> list[str]:
    if case_ids is not None:
        return case_ids
    reply = await client.call("GET", "/v1/cases", doing="listing cases")
    return [check_case_id(c.get("case_id"), "listing cases")
            for c in reply.records("cases", "listing cases")]


async def _pull_one(client: Client, evidence: Evidence, dest: Path, *, ledger: _Ledger,
                    report: PullReport, progress: Callable[[Evidence], Progress | None] | None,
                    on_file: Callable[[PulledFile], None] | None) -> None:
    try:
        pulled = await download_evidence(client, evidence, dest,
                                         progress=progress(evidence) if progress else None)
    except ClientError as err:
        report.failed.append((evidence.evidence_id, err))
        return
    ledger.add(pulled)
    report.pulled.append(pulled)
    if on_file is not None:
        on_file(pulled)


async def pull(client: Client, case_ids: list[str] | None, dest: Path, *,
               progress: Callable[[Evidence], Progress | None] | None = None,
               on_file: Callable[[PulledFile], None] | None = None,
               only: str | None = None) -> PullReport:
    """Pull every evidence file of ``case_ids`` (None: all my cases) not yet in ``dest``.

    ``only``: just that evidence id (an erased one fails with the server's
    ``evidence-erased`` answer: when, and under which policy).
    """
    ledger, report = _Ledger(client, dest), PullReport()
    for case_id in await _cases(client, case_ids):
        if only is not None:
            try:
                reply = await client.call("GET", f"/v1/evidence/{only}",
                                          doing=f"reading evidence {only}")
            except ClientError as err:
                report.failed.append((printable(only, 64), err))
                continue
            records = [reply.object(f"reading evidence {only!r}")]
        else:
            reply = await client.call("GET", f"/v1/cases/{case_id}/evidence",
                                      doing=f"listing the evidence of case {case_id!r}")
            records = reply.records("evidence", f"listing case {case_id!r}")
        for record in records:
            if ledger.has(record):
                report.skipped += 1
                continue
            try:
                evidence = await open_evidence(client, record)
            except ClientError as err:
                report.failed.append((_shown_id(record), err))
                continue
            await _pull_one(client, evidence, dest, ledger=ledger, report=report,
                            progress=progress, on_file=on_file)
    return report


async def watch(client: Client, case_ids: list[str] | None, dest: Path, *,
                progress: Callable[[Evidence], Progress | None] | None = None,
                on_file: Callable[[PulledFile], None] | None = None,
                on_error: Callable[[str, ClientError], None] | None = None,
                on_ready: Callable[[str], None] | None = None,
                on_listening: Callable[[], None] | None = None,
                on_case: Callable[[str, bool], None] | None = None) -> None:
    """Pull what is missing, then follow the feeds of ``case_ids`` and pull new evidence.

    For each case the current checkpoint size is noted first, then everything
    listed is pulled, then the feed is followed from that size on (event ids
    are audit indexes), so nothing committed in between is missed.

    ``case_ids`` None means all my cases, and the cases shared with me from
    now on: the membership feed (opened from a checkpoint taken before the
    first listing, so no sharing in between is missed) says at once when I am
    added to or removed from a case. That is the server's word only: a case
    is followed once its signed statements, verified through the log, make
    me a member, and dropped once they no longer do. ``on_case(case_id,
    joined)`` reports each verified change, ``on_listening()`` the opening of
    the membership feed. Runs until cancelled; ``on_ready(case_id)`` is
    called once a case's feed is open.
    """
    ledger, report = _Ledger(client, dest), PullReport()
    lock = asyncio.Lock()  # one download at a time: bounded memory and disk load
    reported = 0

    def flush_errors() -> None:
        nonlocal reported
        if on_error is not None:
            for failed_id, failure in report.failed[reported:]:
                on_error(failed_id, failure)
        reported = len(report.failed)

    async def pull_record(record: dict[str, Any]) -> None:
        if ledger.has(record):
            return
        try:
            evidence = await open_evidence(client, record)
        except ClientError as err:
            report.failed.append((_shown_id(record), err))
            return
        await _pull_one(client, evidence, dest, ledger=ledger, report=report,
                        progress=progress, on_file=on_file)

    async def on_event(event: FeedEvent) -> None:
        if event.kind != "evidence":
            return
        try:
            evidence_id = check_evidence_id(event.data.get("evidence_id"),
                                            f"reading the feed of case {event.case_id}")
        except ClientError as err:
            report.failed.append((_shown_id(event.data), err))
            flush_errors()
            return
        async with lock:
            try:
                reply = await client.call("GET", f"/v1/evidence/{evidence_id}",
                                          doing=f"reading evidence {evidence_id}")
            except ClientError as err:
                report.failed.append((evidence_id, err))
            else:
                try:
                    record = reply.object(f"reading evidence {evidence_id!r}")
                except ClientError as err:
                    report.failed.append((evidence_id, err))
                else:
                    await pull_record(record)
            flush_errors()

    async def start(case_id: str) -> asyncio.Task[None]:
        async with lock:
            checkpoint = await client.checkpoint()
            reply = await client.call("GET", f"/v1/cases/{case_id}/evidence",
                                      doing=f"listing the evidence of case {case_id!r}")
            for record in reply.records("evidence", f"listing case {case_id!r}"):
                await pull_record(record)
            flush_errors()
        ready = (lambda: on_ready(case_id)) if on_ready else None
        return asyncio.create_task(follow(client, case_id, on_event,
                                          after=checkpoint.size - 1, on_open=ready))

    tasks: dict[str, asyncio.Task[None]] = {}
    starting: set[str] = set()
    changed = asyncio.Event()  # the set of followed cases changed

    async def begin(case_id: str) -> None:
        if case_id in tasks or case_id in starting:
            return
        starting.add(case_id)  # the listing and the membership feed may both name it
        try:
            tasks[case_id] = await start(case_id)
        finally:
            starting.discard(case_id)
        changed.set()

    def dropped(case_id: str) -> None:
        tasks.pop(case_id).cancel()
        if on_case is not None:
            on_case(case_id, False)

    async def verified(case_id: str) -> CaseState | None:
        """The verified state of ``case_id``; None when the server refuses me its statements
        (I am not a member now: enough to stop following a case, never to start)."""
        try:
            return await case_state(client, case_id, fresh=True)
        except ServerRefused as err:
            if err.status >= 500:
                raise
            return None

    async def member(case_id: str) -> bool:
        """Whether the verified statements of ``case_id`` make me a member now."""
        try:
            case = await verified(case_id)
        except VerificationFailed:
            return False
        return case is not None and client.identity.id in case.members

    def refuse(case_id: str, err: ClientError) -> None:
        report.failed.append((case_id, err))
        flush_errors()

    async def on_membership(event: FeedEvent) -> None:
        case_id, change, me = event.case_id, event.data.get("change"), client.identity.id
        if change == "added" and case_id not in tasks and case_id not in starting:
            try:
                case = await verified(case_id)
            except VerificationFailed as err:
                refuse(case_id, err)
                return
            if case is None or me not in case.members:
                # Refused, or removed again since (a backlog): nothing to follow. Otherwise
                # the server claims a membership no signed statement makes.
                if case is not None and me not in case.former:
                    refuse(case_id, VerificationFailed(
                        f"the server says you were added to case {case_id!r}, but no verified "
                        "statement makes you a member; nothing was pulled from it",
                        "keep the state directory as evidence and tell your auditor"))
                return
            if on_case is not None:
                on_case(case_id, True)
            await begin(case_id)
        elif change == "removed" and case_id in tasks and not await member(case_id):
            dropped(case_id)
            changed.set()

    extra: set[asyncio.Task[Any]] = set()
    try:
        if case_ids is None:
            checkpoint = await client.checkpoint()
            extra.add(asyncio.create_task(follow_memberships(
                client, on_membership, after=checkpoint.size - 1, on_open=on_listening)))
        for case_id in await _cases(client, case_ids):
            await begin(case_id)
        while True:
            waiting = asyncio.create_task(changed.wait())
            try:
                # A feed that fails (refused, or a hostile stream) ends the watch at once,
                # unless it is a case the verified statements no longer make me a member of.
                done, _ = await asyncio.wait({*tasks.values(), *extra, waiting},
                                             return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiting.cancel()
            changed.clear()
            for task in done & extra:
                task.result()  # the membership feed only ends by raising
            for case_id in [c for c, task in tasks.items() if task in done]:
                error = tasks[case_id].exception()  # a feed only ends by raising
                if case_ids is None and not await member(case_id):
                    dropped(case_id)
                elif error is not None:
                    raise error
    finally:
        everything = [*tasks.values(), *extra]
        for task in everything:
            task.cancel()
        await asyncio.gather(*everything, return_exceptions=True)
