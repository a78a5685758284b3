"""Helpers of the fault-injection and attack tests: restartable servers, clusters, filesystems.

Everything here drives real processes: ``exchange serve`` subprocesses that a
test SIGKILLs and restarts (always with the same public URL, so signatures
stay valid across restarts while the listening port changes), a private
PostgreSQL cluster that a test may stop and start again without disturbing
the session's shared cluster, and a size-limited tmpfs for the data directory.
Audit entries named by acknowledged responses are checked against the store
together with the offline verifier (``exchange.audit.verify_log``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from exchange.audit.verify import verify_log
from exchange.crypto.envelope import CaseKey
from exchange.crypto.keys import ParticipantIdentity
from exchange.storage.pgcluster import PgCluster, PostgresUnavailable
from exchange.storage.postgres_store import PostgresStore
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER, PROBLEM_BASE
from exchange.wire.httpsig import content_digest
from exchange.wire.tus import PATCH_CONTENT_TYPE, TUS_VERSION
from tests import statements
from tests.server_harness import (
    CAST,
    ORIGIN,
    Deployment,
    ServerProcess,
    drop_postgres,
    enrol,
    fresh_postgres,
    init_server,
    read_log,
    run,
)
from tests.support import skip_or_fail

__all__ = [
    "CONNECTION_ERRORS",
    "PUBLIC_URL",
    "TUS",
    "AckLog",
    "Acked",
    "RestartableCluster",
    "b64",
    "case_head",
    "check_acked_entries",
    "deployment_with",
    "index_of",
    "kill",
    "new_case",
    "patch",
    "private_cluster",
    "problem_slug",
    "restart",
    "sha256_hex",
    "slow_source",
    "tmpfs",
]

#: Every fault deployment answers for this URL, whatever port a restarted process got.
PUBLIC_URL = "https://exchange.test"
TUS = {"Tus-Resumable": TUS_VERSION}
#: Connection errors a client sees when the server process dies under it.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientError, ConnectionError, asyncio.TimeoutError,
)


def b64(data: bytes) -> str:
    """Return ``data`` as standard base64 text."""
    return base64.b64encode(data).decode("ascii")


def sha256_hex(data: bytes) -> str:
    """Return the SHA-256 of ``data`` in lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def index_of(response: aiohttp.ClientResponse) -> int:
    """Return the ``Exchange-Audit-Index`` a response names."""
    return int(response.headers[AUDIT_INDEX_HEADER])


def problem_slug(body: Any) -> str:
    """Return the slug of a problem+json body (``""`` when it is not one)."""
    kind = body.get("type", "") if isinstance(body, dict) else ""
    return kind.removeprefix(PROBLEM_BASE) if kind.startswith(PROBLEM_BASE) else ""


# -- deployments that survive restarts ------------------------------------------------


def _start(data_dir: Path, database_url: str | None) -> ServerProcess:
    return ServerProcess(data_dir, database_url=database_url,
                         extra_args=("--public-url", PUBLIC_URL))


@contextlib.contextmanager
def deployment_with(
    base: Path, backend: str, *, limits: Mapping[str, int] | None = None,
    database_url: str | None = None, data_dir: Path | None = None,
) -> Iterator[Deployment]:
    """A one-process deployment answering for :data:`PUBLIC_URL`, with ``limits`` configured.

    On ``postgres`` without ``database_url`` a fresh database of the session's
    cluster is made and dropped. ``data_dir`` (which must not exist yet)
    places the data directory elsewhere, e.g. on a small filesystem.
    """
    name = None
    if backend == "postgres" and database_url is None:
        name, database_url = fresh_postgres()
    data_dir = data_dir or base / "data"
    admin = ParticipantIdentity.generate("admin")
    try:
        log_vkey = init_server(data_dir, admin, database_url=database_url)
        if limits:
            config = json.loads((data_dir / "server.json").read_text())
            config["limits"] = dict(limits)
            (data_dir / "server.json").write_text(json.dumps(config))
        deployment = Deployment(
            backend=backend, data_dir=data_dir, database_url=database_url, log_vkey=log_vkey,
            processes=[_start(data_dir, database_url)], cast={"admin": admin},
            public_url=PUBLIC_URL,
        )
        try:
            run(_enrol_cast(deployment))
            yield deployment
        finally:
            deployment.stop()
    finally:
        if name is not None:
            drop_postgres(name)


async def _enrol_cast(deployment: Deployment) -> None:
    async with deployment.session("admin") as admin:
        for who, role in CAST.items():
            identity = ParticipantIdentity.generate(who)
            await enrol(admin, identity, role)
            deployment.cast[who] = identity


def kill(deployment: Deployment) -> None:
    """SIGKILL the deployment's (first) server process and reap it."""
    proc = deployment.processes[0]
    proc.proc.kill()
    proc.proc.wait(30)
    proc.stop()


def restart(deployment: Deployment) -> ServerProcess:
    """Start a fresh server process on the deployment's data (replacing the first one)."""
    proc = _start(deployment.data_dir, deployment.database_url)
    deployment.processes[0] = proc
    return proc


# -- requests ---------------------------------------------------------------------------


async def new_case(d: Deployment, session: SignedSession, *members: str,
                   owner: str = "prosecutor") -> tuple[str, CaseKey]:
    """Create a case as ``owner`` with ``members`` added; return its id and epoch-1 key.

    ``session`` is ``owner``'s: the case.create and case.member_add statements
    are signed by it (tests/statements.py).
    """
    assert session.keyid == d.cast[owner].id, "new_case needs the owner's session"
    answer, case_id, key = await statements.create_case(session, d.anchor)
    assert answer.status == 201, answer.body
    for member in members:
        added = await statements.add_member(session, d.anchor, case_id, member, {1: key})
        assert added.status == 201, added.body
    return case_id, key


async def case_head(d: Deployment, session: SignedSession, case_id: str) -> str:
    """Return the case chain head a commit to ``case_id`` names (read through ``session``)."""
    return await statements.case_head(session, d.anchor, case_id)


def slow_source(data: bytes, *, piece: int = 64 * 1024, delay_s: float = 0.0,
                on_piece: Callable[[int], None] | None = None,
                ) -> Callable[[int, int], AsyncIterator[bytes]]:
    """Return a byte source yielding ``piece``-sized slices, pausing ``delay_s`` after each.

    ``on_piece(sent)`` is called after each slice (bytes of this range sent so
    far): fault tests use it to kill the server mid-body.
    """
    async def source(start: int, end: int) -> AsyncIterator[bytes]:
        sent = 0
        for at in range(start, end, piece):
            chunk = data[at:min(end, at + piece)]
            yield chunk
            sent += len(chunk)
            if on_piece is not None:
                on_piece(sent)
            if delay_s:
                await asyncio.sleep(delay_s)

    return source


async def patch(session: SignedSession, path: str, offset: int, data: bytes, *,
                source: Callable[[int, int], AsyncIterator[bytes]] | None = None,
                ) -> aiohttp.ClientResponse:
    """PATCH ``data`` at ``offset`` (streamed from ``source`` if given) with its digest."""
    headers = {**TUS, "Upload-Offset": str(offset), "Content-Type": PATCH_CONTENT_TYPE,
               "Content-Length": str(len(data))}
    body = (source or slow_source(data))(0, len(data))
    return await session.request("PATCH", path, data=body, headers=headers,
                                 digest=content_digest(data))


# -- what was acknowledged ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Acked:
    """One acknowledged request: the audit entry its response named."""

    index: int
    action: str
    actor: str
    outcome: str = "ok"


@dataclass
class AckLog:
    """Every acknowledged request of a test, to be found again in the log."""

    items: list[Acked] = field(default_factory=list)

    def add(self, response: aiohttp.ClientResponse, action: str, actor: str,
            outcome: str = "ok") -> int:
        index = index_of(response)
        self.items.append(Acked(index, action, actor, outcome))
        return index


async def check_acked_entries(d: Deployment, acked: Sequence[Acked]) -> list[bytes]:
    """Verify the whole log offline and find every acknowledged entry in it; return entries.

    Fails if the log does not verify (a gap breaks the ``prev`` chain and the
    tree), if two acknowledgements name one index, or if an acknowledged
    index holds another action, actor or outcome.
    """
    entries, note = await read_log(d)
    report = verify_log(entries, d.log_vkey, note, origin=ORIGIN)
    assert report.ok, [str(f) for f in report.findings][:10]
    indexes = [a.index for a in acked]
    assert len(set(indexes)) == len(indexes), "two acknowledged requests share an entry"
    for ack in acked:
        assert ack.index < len(entries), f"acknowledged entry {ack.index} is missing"
        entry = json.loads(entries[ack.index])
        found = (entry["action"], entry["actor"], entry["outcome"])
        assert found == (ack.action, ack.actor, ack.outcome), (ack, found)
    return entries


# -- a PostgreSQL cluster a test may stop and start ---------------------------------------


class RestartableCluster(PgCluster):
    """A private :class:`PgCluster` whose server can be stopped and started again.

    Private so that stopping it never disturbs the session's shared cluster.
    """

    def start(self) -> str:
        """Create and start the cluster (see ``PgCluster.start``)."""
        dsn = super().start()
        self._options = (
            f"-p {self.port} -k {self._dir} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={self._max_connections} -c shared_buffers=128MB"
        )
        return dsn

    def _ctl(self, *args: str) -> None:
        assert self._dir is not None
        self._run(str(self._bindir / "pg_ctl"), "-D", str(self._dir / "data"), *args)

    def stop_server(self, mode: str = "fast") -> None:
        """Stop the server (``pg_ctl stop -m mode``), keeping its files."""
        self._ctl("-m", mode, "-w", "-t", "60", "stop")

    def start_server(self) -> None:
        """Start the stopped server again on the same port and socket directory."""
        assert self._dir is not None
        self._ctl("-l", str(self._dir / "server.log"), "-w", "-t", "60", "-o", self._options,
                  "start")

    async def new_database(self) -> str:
        """Create and migrate a database; return its DSN."""
        name = "exchange_" + secrets.token_hex(4)
        admin = await asyncpg.connect(self.dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8'")
        finally:
            await admin.close()
        dsn = self.dsn_for(name)
        await (await PostgresStore.open(dsn)).close()
        return dsn


@contextlib.contextmanager
def private_cluster() -> Iterator[RestartableCluster]:
    """A started :class:`RestartableCluster`, destroyed afterwards (skip/fail without one)."""
    try:
        cluster = RestartableCluster()
        cluster.start()
    except PostgresUnavailable as err:
        skip_or_fail("POSTGRES", str(err))
        raise
    try:
        yield cluster
    finally:
        cluster.stop()


# -- a small filesystem -------------------------------------------------------------------


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of ``size_bytes`` at ``mountpoint`` (skip/fail when mounting is refused)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0700", "tmpfs", str(mountpoint)],
        capture_output=True, text=True, check=False, timeout=30,
    )
    if result.returncode != 0:
        skip_or_fail("MOUNT", f"cannot mount a tmpfs here: {result.stderr.strip()[:200]}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False,
                       timeout=30)
