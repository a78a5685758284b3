"""The simulated clients of the load test: real ``exchange.client`` uploads, downloads, listings.

Each :class:`SimClient` is one participant with its own :class:`Client`
(own state directory, own connection pool whose requests are recorded by
``tests.load.accounting``). :func:`client_loop` repeats operations drawn by
role until the deadline or an operation bound: prosecutors upload random
files (0 B to the maximum, log-uniform so most are small), list, download
and probe a case they are not in (a refusal the log must record);
coordinators list and download. Some keep a case feed open
(:func:`follow_feed`). Every acknowledged upload goes into the
:class:`Ledger`, against which downloads, listings, feeds and the final
store check are compared.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from exchange.client import (
    Client,
    ClientError,
    FeedEvent,
    ServerRefused,
    download_evidence,
    follow,
    list_evidence,
    upload_file,
)
from exchange.client.download import open_evidence
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from tests.load.accounting import RequestLog, trace_config

__all__ = [
    "Acked",
    "DataSource",
    "Ledger",
    "SimClient",
    "Stats",
    "client_loop",
    "follow_feed",
    "open_client",
    "pick_size",
]

PUBLIC_URL = "https://exchange.load.test"
_PIECE = 4 * 1024 * 1024
_TAG_BYTES = 16
#: Operation weights per role (they need not sum to one).
WEIGHTS = {
    "prosecutor": {"upload": 0.5, "list": 0.2, "download": 0.25, "probe": 0.05},
    "coordinator": {"list": 0.3, "download": 0.65, "probe": 0.05},
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Acked:
    """An upload the server acknowledged (committed), with what the client really sent."""

    evidence_id: str
    case_id: str
    uploader: str
    plaintext_sha256: str
    ciphertext_sha256: str
    plaintext_size: int
    ciphertext_size: int
    audit_index: int | None
    acked_at: float


class Ledger:
    """Acknowledged uploads, by case (appended from the event loop only)."""

    def __init__(self) -> None:
        self.all: list[Acked] = []
        self.by_case: dict[str, list[Acked]] = {}

    def add(self, acked: Acked) -> None:
        """Record an acknowledged upload."""
        self.all.append(acked)
        self.by_case.setdefault(acked.case_id, []).append(acked)

    def in_cases(self, cases: Sequence[str]) -> list[Acked]:
        """Return the acknowledged uploads of ``cases``."""
        return [a for case in cases for a in self.by_case.get(case, ())]


@dataclass
class Stats:
    """What the clients observed besides the per-request records."""

    op_latency_s: dict[str, list[float]] = field(default_factory=dict)
    uploaded_bytes: int = 0
    downloaded_bytes: int = 0
    upload_hash_mismatches: int = 0
    download_mismatches: int = 0
    listing_missing: int = 0
    probes_refused: int = 0
    probes_accepted: int = 0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    #: (client, case) -> audit indexes of the evidence events received on its feed.
    feed_events: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    def op_done(self, op: str, started: float) -> None:
        """Record an operation's end-to-end latency."""
        self.op_latency_s.setdefault(op, []).append(time.perf_counter() - started)


class DataSource:
    """Random bytes for upload files: a buffer reused from a random offset, plus a random tag.

    Writing files from one random buffer keeps client CPU for the exchange
    itself; the 16-byte random tag at the front makes every file distinct.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.buffer = random.Random(seed).randbytes(max(size, _TAG_BYTES))

    def write_file(self, path: Path, size: int, tag: bytes, offset: int) -> str:
        """Write a ``size``-byte file at ``path``; return its SHA-256 (hex). Blocking."""
        hasher = hashlib.sha256()
        view = memoryview(self.buffer)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            head = tag[:size]
            hasher.update(head)
            _write_all(fd, head)
            left, at = size - len(head), offset % len(view)
            while left > 0:
                piece = view[at:at + min(left, _PIECE, len(view) - at)]
                hasher.update(piece)
                _write_all(fd, piece)
                left -= len(piece)
                at = (at + len(piece)) % len(view)
        finally:
            os.close(fd)
        return hasher.hexdigest()


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def pick_size(rng: random.Random, max_bytes: int) -> int:
    """Return a file size: 5 % empty, else log-uniform in [1, max_bytes] (most files small)."""
    if max_bytes <= 0 or rng.random() < 0.05:
        return 0
    return min(max_bytes, int(math.exp(rng.uniform(0.0, math.log(max_bytes + 1)))))


@dataclass
class SimClient:
    """One simulated participant and its connection."""

    name: str
    role: str
    identity: ParticipantIdentity
    client: Client
    session: aiohttp.ClientSession
    tmp: Path
    rng: random.Random
    cases: list[str] = field(default_factory=list)

    async def close(self) -> None:
        """Close the client and its counted session."""
        await self.client.close()
        await self.session.close()


def open_client(name: str, role: str, identity: ParticipantIdentity, connect_url: str, *,
                anchor: TrustAnchor, base: Path, log: RequestLog, seed: int,
                warn: Callable[[str], None]) -> SimClient:
    """Return a :class:`SimClient` whose every request is recorded in ``log``.

    Only 127.0.0.1 is ever contacted (``connect_url`` is checked).
    """
    if not connect_url.startswith("http://127.0.0.1:"):
        raise ValueError(f"load clients only talk to 127.0.0.1, found {connect_url[:60]!r}")
    home = base / name
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    client = Client(identity, PUBLIC_URL, anchor=anchor, state_dir=home / "state",
                    connect_url=connect_url, warn=warn)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=120),
        trace_configs=[trace_config(log, identity.id)])
    # The library's own session stays unused: requests go through the counted one.
    client.http = SignedSession(PUBLIC_URL, identity, connect_url=connect_url, session=session)
    return SimClient(name=name, role=role, identity=identity, client=client, session=session,
                     tmp=home / "tmp", rng=random.Random(seed))


async def _upload(sim: SimClient, ledger: Ledger, stats: Stats, source: DataSource,
                  max_bytes: int, chunk_bytes: int, number: int) -> None:
    case = sim.rng.choice(sim.cases)
    size = pick_size(sim.rng, max_bytes)
    path = sim.tmp / f"evidence-{number}.bin"
    expected = await asyncio.to_thread(source.write_file, path, size, sim.rng.randbytes(16),
                                       sim.rng.randrange(1 << 30))
    started = time.perf_counter()
    try:
        result = await upload_file(sim.client, case, path, chunk_bytes=chunk_bytes)
    finally:
        path.unlink(missing_ok=True)
    stats.op_done("upload", started)
    stats.uploaded_bytes += result.ciphertext_size
    if result.plaintext_sha256 != expected:
        stats.upload_hash_mismatches += 1
    ledger.add(Acked(
        evidence_id=result.evidence_id, case_id=case, uploader=sim.identity.id,
        plaintext_sha256=expected, ciphertext_sha256=result.ciphertext_sha256,
        plaintext_size=result.plaintext_size, ciphertext_size=result.ciphertext_size,
        audit_index=result.audit_index, acked_at=time.monotonic()))


async def _download(sim: SimClient, ledger: Ledger, stats: Stats) -> bool:
    candidates = ledger.in_cases(sim.cases)
    if not candidates:
        return False
    acked = sim.rng.choice(candidates)
    started = time.perf_counter()
    reply = await sim.client.call("GET", f"/v1/evidence/{acked.evidence_id}",
                                  doing="reading an evidence record")
    evidence = await open_evidence(sim.client, dict(reply.body))
    pulled = await download_evidence(sim.client, evidence, sim.tmp / "pulled")
    try:
        stats.op_done("download", started)
        stats.downloaded_bytes += evidence.manifest.ciphertext_size
        if evidence.manifest.plaintext_sha256 != acked.plaintext_sha256 or \
                pulled.plaintext_size != acked.plaintext_size:
            stats.download_mismatches += 1
    finally:
        pulled.path.unlink(missing_ok=True)
        pulled.custody_path.unlink(missing_ok=True)
    return True


async def _list(sim: SimClient, ledger: Ledger, stats: Stats) -> None:
    case = sim.rng.choice(sim.cases)
    started = time.perf_counter()
    known = {a.evidence_id for a in ledger.by_case.get(case, ())}
    listed = await list_evidence(sim.client, case)
    stats.op_done("list", started)
    stats.listing_missing += len(known - {e.evidence_id for e in listed})


async def _probe(sim: SimClient, all_cases: Sequence[str], stats: Stats) -> None:
    others = [c for c in all_cases if c not in sim.cases]
    if not others:
        return
    case = sim.rng.choice(others)
    started = time.perf_counter()
    try:
        await sim.client.call("GET", f"/v1/cases/{case}/evidence", doing="probing")
    except ServerRefused as err:
        if err.status in (403, 404):
            stats.probes_refused += 1
            stats.op_done("probe", started)
            return
        raise
    stats.probes_accepted += 1
    stats.errors.append(f"probe: {sim.identity.id} read case {case} without being a member")


async def client_loop(sim: SimClient, *, all_cases: Sequence[str], ledger: Ledger,
                      stats: Stats, source: DataSource, deadline: float, max_ops: int,
                      max_file_bytes: int, chunk_bytes: int) -> int:
    """Run operations until ``deadline`` (monotonic) or ``max_ops``; return how many ran.

    A failed operation is recorded in ``stats.errors`` and the loop goes on.
    """
    weights = WEIGHTS[sim.role]
    ops, kinds = 0, list(weights)
    while time.monotonic() < deadline and ops < max_ops:
        # The first operation is always a probe, so every run holds logged refusals.
        op = "probe" if ops == 0 else sim.rng.choices(kinds, weights=[weights[k] for k in kinds])[0]
        ops += 1
        try:
            if op == "upload":
                await _upload(sim, ledger, stats, source, max_file_bytes, chunk_bytes, ops)
            elif op == "download":
                if not await _download(sim, ledger, stats):
                    await _list(sim, ledger, stats)
            elif op == "list":
                await _list(sim, ledger, stats)
            else:
                await _probe(sim, all_cases, stats)
        except (ClientError, aiohttp.ClientError, OSError, TimeoutError) as err:
            stats.errors.append(f"{op} by {sim.identity.id}: {type(err).__name__}: "
                                f"{str(err)[:200]}")
            await asyncio.sleep(0.2)
    return ops


async def follow_feed(sim: SimClient, case: str, *, after: int, stats: Stats) -> None:
    """Follow ``case``'s feed from after audit index ``after``, recording evidence events.

    Runs until cancelled; a refusal ends it and is recorded as an error.
    """
    received = stats.feed_events.setdefault((sim.identity.id, case), set())

    async def on_event(event: FeedEvent) -> None:
        if event.kind == "evidence":
            received.add(event.id)

    try:
        await follow(sim.client, case, on_event, after=after)
    except ClientError as err:
        stats.errors.append(f"feed of {case} for {sim.identity.id}: {str(err)[:200]}")
