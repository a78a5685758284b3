"""The load test engine (issue 7, item 2), shared by ``bench/load.py`` and ``tests/load``.

:func:`run_load` starts its own PostgreSQL cluster (or uses a given empty
database, or SQLite), runs ``exchange server init`` and 1 or 2 ``exchange
serve`` processes sharing that database and one data directory, enrols a
cast (prosecutors and coordinators, one identity per simulated client),
creates cases through ``exchange.client`` and adds members, then runs the
clients of ``tests.load.workload`` concurrently for the configured time while
sampling the servers' memory. Afterwards ``tests.load.checks`` verifies
that nothing was lost and that the audit log holds one entry per request.
Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from exchange.client import add_member, create_case
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.envelope import CaseKey
from exchange.crypto.keys import ParticipantIdentity
from exchange.storage.pgcluster import PgCluster
from exchange.transport.client import SignedSession
from tests.load.accounting import MemorySampler, RequestLog, RequestRecord
from tests.load.checks import LoadResult, RunData, check_run, open_store
from tests.load.cpu_window import postmaster_pid, snapshot, use
from tests.load.loop_lag import lag_window, scrape_lag_buckets
from tests.load.probe import PASSPHRASE as PROBE_PASSPHRASE
from tests.load.workload import (
    PUBLIC_URL,
    DataSource,
    Ledger,
    SimClient,
    Stats,
    client_loop,
    follow_feed,
    open_client,
)
from tests.server_harness import enrol, init_server, pinned, write_test_keystore
from tests.statements import load_anchor

__all__ = ["LoadConfig", "LoadResult", "run_load"]

MIB = 1024 * 1024
START_TIMEOUT_S = 60.0
#: How long feeds get, after the load, to deliver the last commits (servers poll at ~1 s).
FEED_CATCH_UP_S = 15.0
_DATABASE = "exchange_load"


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadConfig:
    """What to run; sizes in bytes, times in seconds."""

    clients: int = 100
    duration_s: float = 180.0
    processes: int = 1
    max_file_bytes: int = 256 * MIB
    backend: str = "postgres"
    #: An existing, empty PostgreSQL database; None: a private cluster is started.
    database_url: str | None = None
    #: One PATCH (and audit entry) per chunk; the client holds three chunks per upload.
    chunk_bytes: int = 8 * MIB
    #: Operations per client at most (the loop also stops at the deadline).
    max_ops_per_client: int = 100_000
    #: Time in-flight operations get to finish after the deadline before they are cut.
    grace_s: float = 300.0
    #: Decrypt every stored blob at the end and compare its plaintext hash (else ciphertext only).
    verify_plaintext: bool = True
    seed: int = 1
    #: Cores for the database and the server processes, and for this (client) process;
    #: None: anywhere. Pinned apart, the clients' CPU does not show as server latency.
    server_cpus: frozenset[int] | None = None
    client_cpus: frozenset[int] | None = None
    #: How often the disk probe (``tests.load.flush_probe``) times a flush; 0: no probe.
    disk_probe_interval_s: float = 0.1
    #: Where the clients keep their files (keystores, the files they upload, what they
    #: pull), in a directory of their own made there and removed after; None: in the
    #: work directory, on the data's disk. A deployment's clients write to their own
    #: disks, not the server's: given another filesystem (``/dev/shm``), the data's
    #: disk carries the server's writes only, as it would in service.
    client_dir: Path | None = None

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise ValueError(f"clients must be at least 2, found {self.clients}")
        if self.processes not in (1, 2):
            raise ValueError(f"processes must be 1 or 2, found {self.processes}")
        if self.backend not in ("postgres", "sqlite"):
            raise ValueError(f"backend must be postgres or sqlite, found {self.backend!r}")
        if self.backend == "sqlite" and self.processes != 1:
            raise ValueError("several server processes need the postgres backend")
        if self.max_file_bytes < 0 or self.chunk_bytes <= 0 or self.duration_s <= 0:
            raise ValueError("sizes and the duration must be positive")


class _Server:
    """One ``exchange serve`` subprocess; its stderr goes to a file (no reader in this process)."""

    def __init__(self, data_dir: Path, database_url: str | None, log_path: Path) -> None:
        argv = [sys.executable, "-m", "exchange", "serve", "--data-dir", str(data_dir),
                "--port", "0", "--public-url", PUBLIC_URL, "--metrics-port", "0"]
        if database_url:
            argv += ["--database", database_url]
        env = {k: v for k, v in os.environ.items() if k != "EXCHANGE_DATABASE_URL"}
        self.log_path = log_path
        with log_path.open("wb") as stderr:
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr, env=env)
        self.metrics_url = ""  # its loop-lag histogram (tests.load.loop_lag)
        self.url = self._wait_for_url()

    def _wait_for_url(self) -> str:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            for line in self.log_path.read_text(errors="replace").splitlines():
                if line.startswith("exchange: metrics on "):
                    self.metrics_url = line.split()[-1]
                if line.startswith("exchange: serving on ") and self.metrics_url:
                    return line.split()[-1].rstrip(")")
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"exchange serve did not start:\n{tail}")

    def stop(self) -> None:
        """SIGTERM the server and wait for it (SIGKILL after 30 s)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@contextlib.contextmanager
def _database(config: LoadConfig) -> Iterator[str | None]:
    """Yield the DSN to use (None for SQLite), starting and removing a private cluster if needed."""
    if config.backend == "sqlite":
        yield None
        return
    if config.database_url:
        yield config.database_url
        return
    cluster = PgCluster()
    try:
        cluster.start()

        async def create() -> None:
            admin = await asyncpg.connect(cluster.dsn)
            try:
                await admin.execute(f"CREATE DATABASE {_DATABASE} ENCODING 'UTF8'")
            finally:
                await admin.close()

        asyncio.run(create())
        yield cluster.dsn_for(_DATABASE)
    finally:
        cluster.stop()


def run_load(config: LoadConfig, work_dir: Path) -> LoadResult:
    """Deploy, run the load described by ``config`` in ``work_dir``, check it; return figures."""
    work_dir.mkdir(parents=True, exist_ok=True)
    data_dir = work_dir / "data"
    server_cpus = set(config.server_cpus) if config.server_cpus else None
    client_cpus = set(config.client_cpus) if config.client_cpus else None
    with contextlib.ExitStack() as stack:
        with pinned(server_cpus):
            dsn = stack.enter_context(_database(config))
        clients_dir = work_dir / "clients" if config.client_dir is None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(
                prefix="exchange-load-clients-", dir=config.client_dir)))
        admin = ParticipantIdentity.generate("admin")
        log_key = init_server(data_dir, admin, database_url=dsn)
        servers: list[_Server] = []
        try:
            with pinned(server_cpus):
                for number in range(config.processes):
                    servers.append(_Server(data_dir, dsn, work_dir / f"server-{number}.log"))
            with pinned(client_cpus):
                data = asyncio.run(_drive(config, work_dir, clients_dir, data_dir, dsn,
                                          admin, log_key, servers))
        finally:
            for server in servers:
                server.stop()
        return asyncio.run(check_run(data, config_json=_config_json(config, dsn)))


def _config_json(config: LoadConfig, dsn: str | None) -> dict[str, object]:
    return {"clients": config.clients, "duration_s": config.duration_s,
            "processes": config.processes, "max_file_mib": round(config.max_file_bytes / MIB, 3),
            "backend": config.backend, "chunk_mib": round(config.chunk_bytes / MIB, 3),
            "private_cluster": config.backend == "postgres" and not config.database_url,
            "seed": config.seed, "disk_probe_interval_s": config.disk_probe_interval_s,
            "server_cpus": sorted(config.server_cpus) if config.server_cpus else None,
            "client_cpus": sorted(config.client_cpus) if config.client_cpus else None,
            "client_dir": str(config.client_dir) if config.client_dir else None}


def _roles(clients: int) -> list[tuple[str, str]]:
    """Return (identity name, role) per client: 60 % prosecutors, at least one coordinator."""
    prosecutors = min(clients - 1, max(1, round(clients * 0.6)))
    return [(f"p{i:03d}", "prosecutor") for i in range(prosecutors)] + \
           [(f"c{i:03d}", "coordinator") for i in range(clients - prosecutors)]


async def _setup(config: LoadConfig, clients_dir: Path, admin: ParticipantIdentity,
                 anchor: TrustAnchor, urls: list[str], log: RequestLog, stats: Stats,
                 probe: ParticipantIdentity
                 ) -> tuple[list[SimClient], dict[str, dict[int, CaseKey]]]:
    """Enrol the cast and the probe, create the cases and memberships; return clients, keys.

    The probe is a coordinator in no case: its case list is answered (an administrator's
    would be refused) and stays empty, so it measures a small logged read.
    """
    roles = _roles(config.clients)
    identities = [ParticipantIdentity.generate(name) for name, _ in roles]
    async with SignedSession(PUBLIC_URL, admin, connect_url=urls[0]) as session:
        # One after the other: each participant.enrol statement extends the directory chain.
        for identity, (_, role) in zip(identities, roles, strict=True):
            await enrol(session, identity, role)
        await enrol(session, probe, "coordinator")
    sims = [open_client(name, role, identity, urls[n % len(urls)], anchor=anchor,
                        base=clients_dir, log=log, seed=config.seed * 100_003 + n,
                        warn=stats.warnings.append)
            for n, ((name, role), identity) in enumerate(zip(roles, identities, strict=True))]
    prosecutors = [s for s in sims if s.role == "prosecutor"]
    coordinators = [s for s in sims if s.role == "coordinator"]
    n_cases = max(2, config.clients // 8)
    creators = [prosecutors[k % len(prosecutors)] for k in range(n_cases)]
    case_ids = [""] * n_cases  # made by the server (derived from each case's first key)
    members: dict[int, list[SimClient]] = {k: [] for k in range(n_cases)}
    for i, sim in enumerate(prosecutors):
        members[i % n_cases].append(sim)
    for j, sim in enumerate(coordinators):
        members[j % n_cases].append(sim)
        members[(j + 1) % n_cases].append(sim)

    async def make_case(k: int) -> None:
        creator = creators[k]
        case_ids[k] = (await create_case(creator.client, f"load case {k}")).case_id
        creator.cases.append(case_ids[k])
        for sim in members[k]:
            if case_ids[k] not in sim.cases:
                await add_member(creator.client, case_ids[k], sim.identity.id)
                sim.cases.append(case_ids[k])

    # Cases sharing a creator are made one after the other (one client, one state dir).
    by_creator: dict[str, list[int]] = {}
    for k, creator in enumerate(creators):
        by_creator.setdefault(creator.name, []).append(k)

    async def make_cases(ks: list[int]) -> None:
        for k in ks:
            await make_case(k)

    await asyncio.gather(*(make_cases(ks) for ks in by_creator.values()))
    keys: dict[str, dict[int, CaseKey]] = {}
    for creator in creators:
        for (case_id, epoch), key in creator.client.case_keys.items():
            keys.setdefault(case_id, {})[epoch] = key
    return [s for s in sims if s.cases], keys


async def _drive(config: LoadConfig, work_dir: Path, clients_dir: Path, data_dir: Path,
                 dsn: str | None, admin: ParticipantIdentity, log_key: str,
                 servers: list[_Server]) -> RunData:
    """Set up the cast and cases, run the clients, let feeds catch up; return what was seen."""
    loop = asyncio.get_running_loop()
    # Uploads and downloads park worker threads while they wait for their producers.
    loop.set_default_executor(concurrent.futures.ThreadPoolExecutor(4 * config.clients + 16))
    sampler = MemorySampler([s.proc.pid for s in servers])
    log, stats, ledger = RequestLog(), Stats(), Ledger()
    setup_started = time.monotonic()
    sims: list[SimClient] = []
    feeds: list[asyncio.Task[None]] = []
    probe_identity = ParticipantIdentity.generate("probe")
    try:
        sims, case_keys = await _setup(config, clients_dir, admin, load_anchor(data_dir),
                                       [s.url for s in servers], log, stats, probe_identity)
        store = await open_store(data_dir, dsn)
        try:
            start_size = await store.tree_size()
        finally:
            await store.close()
        source = DataSource(min(config.max_file_bytes, 32 * MIB), config.seed)
        log.recording = True
        probe = _start_probe(config, work_dir, probe_identity, servers[0].url)
        flush_probe = (_start_flush_probe(config, work_dir)
                       if config.disk_probe_interval_s > 0 else None)
        database = postmaster_pid(dsn)
        lag_before = await loop.run_in_executor(None, _lag_buckets, servers)
        cpu_before = snapshot([s.proc.pid for s in servers], database)
        started = time.monotonic()
        feeds = [asyncio.create_task(follow_feed(sim, sim.cases[0], after=start_size - 1,
                                                 stats=stats))
                 for n, sim in enumerate(sims) if sim.role == "coordinator" or n % 4 == 0]
        await _load(config, sims, sorted(case_keys), ledger, stats, source)
        ended = time.monotonic()
        cpu = use(cpu_before, snapshot([s.proc.pid for s in servers], database),
                  ended - started)
        lag = lag_window(lag_before, await loop.run_in_executor(None, _lag_buckets, servers))
        probe_records = await loop.run_in_executor(None, _probe_result, probe, stats)
        flush_s = ([] if flush_probe is None else
                   await loop.run_in_executor(None, _flush_result, flush_probe, stats))
        await _catch_up(stats, ledger)
    finally:
        for feed in feeds:
            feed.cancel()
        for problem in await asyncio.gather(*feeds, return_exceptions=True):
            if isinstance(problem, Exception):
                stats.errors.append(f"feed: {type(problem).__name__}: {str(problem)[:200]}")
        log.recording = False
        sampler.stop()
        for sim in sims:
            await sim.close()
    return RunData(data_dir=data_dir, dsn=dsn, log_key=log_key, log=log, stats=stats,
                   ledger=ledger, case_keys=case_keys, start_size=start_size,
                   started=started, ended=ended, setup_s=started - setup_started,
                   sampler=sampler, verify_plaintext=config.verify_plaintext,
                   probe_records=probe_records, flush_s=flush_s, cpu=cpu,
                   server_logs=[s.log_path for s in servers], loop_lag=lag)


def _lag_buckets(servers: list[_Server]) -> list[dict[float, float]]:
    return [scrape_lag_buckets(server.metrics_url) for server in servers]


def _start_child(module: str, *args: str) -> subprocess.Popen[bytes]:
    """Start ``python -m module ARGS`` from this checkout, its output piped."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.Popen([sys.executable, "-m", module, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _child_output(child: subprocess.Popen[bytes], stats: Stats, what: str) -> bytes | None:
    """Wait for ``child``; return its standard output, or None (and an error) if it failed."""
    try:
        out, err = child.communicate(timeout=START_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        child.kill()
        out, err = child.communicate()
    if child.returncode != 0:
        stats.errors.append(f"{what} failed: {err.decode(errors='replace')[-300:]}")
        return None
    return out


def _start_probe(config: LoadConfig, work_dir: Path, identity: ParticipantIdentity,
                 url: str) -> subprocess.Popen[bytes]:
    """Start the latency probe (``tests.load.probe``, as ``identity``) for the run."""
    keystore = work_dir / "probe.keystore"
    write_test_keystore(keystore, identity, PROBE_PASSPHRASE)
    return _start_child("tests.load.probe", url, PUBLIC_URL, str(keystore),
                        "--until", str(time.time() + config.duration_s))


def _probe_result(probe: subprocess.Popen[bytes], stats: Stats) -> list[RequestRecord]:
    """Wait for the probe; return its requests (none, and an error, if it failed).

    A probe that failed reports none of its logged reads, so their entries also show
    as unnamed in the accounting.
    """
    out = _child_output(probe, stats, "latency probe")
    return [] if out is None else [RequestRecord(**r) for r in json.loads(out)["requests"]]


def _start_flush_probe(config: LoadConfig, work_dir: Path) -> subprocess.Popen[bytes]:
    """Start the disk probe (``tests.load.flush_probe``) in ``work_dir`` for the run."""
    return _start_child("tests.load.flush_probe", str(work_dir),
                        "--until", str(time.time() + config.duration_s),
                        "--interval-ms", str(config.disk_probe_interval_s * 1000))


def _flush_result(probe: subprocess.Popen[bytes], stats: Stats) -> list[float]:
    """Wait for the disk probe; return its flush times in seconds (none if it failed)."""
    out = _child_output(probe, stats, "disk probe")
    return [] if out is None else [float(t) for t in json.loads(out)["flush_s"]]


async def _load(config: LoadConfig, sims: list[SimClient], all_cases: list[str],
                ledger: Ledger, stats: Stats, source: DataSource) -> None:
    """Run every client loop to the deadline (plus grace); record loops that died."""
    deadline = time.monotonic() + config.duration_s
    loops = [asyncio.create_task(client_loop(
        sim, all_cases=all_cases, ledger=ledger, stats=stats, source=source,
        deadline=deadline, max_ops=config.max_ops_per_client,
        max_file_bytes=config.max_file_bytes, chunk_bytes=config.chunk_bytes)) for sim in sims]
    try:
        await asyncio.wait(loops, timeout=config.duration_s + config.grace_s)
    finally:
        late = {task for task in loops if not task.done()}
        for task in late:
            task.cancel()
    if late:
        stats.errors.append(f"{len(late)} operations still ran after the grace period: cut")
    for outcome in await asyncio.gather(*loops, return_exceptions=True):
        if isinstance(outcome, Exception):
            stats.errors.append(f"client loop died: {type(outcome).__name__}: "
                                f"{str(outcome)[:200]}")


async def _catch_up(stats: Stats, ledger: Ledger) -> None:
    """Wait until every feed saw every acknowledged commit of its case (or the time is up)."""
    deadline = time.monotonic() + FEED_CATCH_UP_S
    while time.monotonic() < deadline:
        if all({a.audit_index for a in ledger.by_case.get(case, ())} <= seen
               for (_, case), seen in stats.feed_events.items()):
            return
        await asyncio.sleep(0.2)
