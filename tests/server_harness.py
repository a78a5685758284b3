"""Real ``exchange serve`` processes for the integration tests, on SQLite or PostgreSQL.

``deploy()`` creates a data directory with ``exchange server init`` (in
process), starts one or more ``exchange serve`` subprocesses on port 0 (the
URL is read from their ``exchange: serving on URL`` line) and enrols the
standard cast over signed HTTP: an administrator, two prosecutors, two
coordinators and an auditor. PostgreSQL databases come from ``tests.pg`` (a
throwaway cluster, template-cloned per deployment). ``verify_audit_log()``
reads the log straight from the store and runs the offline verifier over it.

The fixtures ``deployment`` (both backends, module scope) and
``sqlite_deployment`` are registered for ``tests/integration`` by its conftest::

    def test_x(deployment: Deployment) -> None:
        run(scenario(deployment))
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest

from exchange.audit.verify import VerifyReport, verify_log
from exchange.cli.main import main as cli_main
from exchange.client.upload import RetryPolicy
from exchange.crypto.anchor import TrustAnchor, parse_anchor
from exchange.crypto.chains import TrustState
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.keystore import Argon2Params, seal_keystore
from exchange.keyfiles import write_keystore
from exchange.storage.metadata import MetadataStore
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER, PROBLEM_BASE
from exchange.transport.server import checkpoint_signer, load_log_signer
from tests import pg, statements

T = TypeVar("T")
ORIGIN = "exchange.test/log"
#: Argon2id parameters that make test keystores open in milliseconds (never for real keys).
CHEAP_ARGON2 = Argon2Params(time_cost=1, memory_kib=64, parallelism=1)
START_TIMEOUT_S = 30.0
#: The upload retry policy tests pass to the one upload path: short waits, few attempts.
FAST_RETRY = RetryPolicy(attempts=5, base_s=0.05, cap_s=2.0)


def run(coro: Awaitable[T]) -> T:
    """Run one coroutine on a fresh event loop."""
    async def main() -> T:
        return await coro

    return asyncio.run(main())


def core_split() -> tuple[set[int] | None, set[int] | None]:
    """Return (client cores, server cores) for benchmarks: the first and second usable core.

    With a single usable core both sides share it and nothing is pinned (None, None).
    """
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None, None
    return {usable[0]}, {usable[1]}


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run the block with this thread pinned to ``cpus`` (None: unchanged), then restore.

    Processes spawned inside inherit the affinity, and so do the threads they start, so a
    server started here stays on ``cpus``: benchmarks keep its CPU apart from the client's.
    """
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def write_test_keystore(path: Path, identity: ParticipantIdentity, passphrase: str) -> None:
    """Write ``identity`` as a keystore with cheap Argon2 parameters (tests only)."""
    write_keystore(path, seal_keystore(identity, passphrase, params=CHEAP_ARGON2))


class ServerProcess:
    """One ``exchange serve`` subprocess; stderr is collected in :attr:`lines`."""

    def __init__(
        self, data_dir: Path, *, database_url: str | None = None,
        extra_args: Sequence[str] = (), env: dict[str, str] | None = None,
        launcher: Sequence[str] = (), start_timeout_s: float | None = None,
    ) -> None:
        # ``launcher`` runs the interpreter under another program (bench/instructions.py:
        # valgrind), which may need a longer ``start_timeout_s``.
        argv = [*launcher, sys.executable, "-m", "exchange", "serve", "--data-dir",
                str(data_dir), "--port", "0", *extra_args]
        if database_url:
            argv += ["--database", database_url]
        full_env = dict(os.environ)
        full_env.pop("EXCHANGE_DATABASE_URL", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=full_env)
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.url = ""
        self._reader = threading.Thread(target=self._drain, daemon=True)
        self._reader.start()
        if not self._ready.wait(start_timeout_s or START_TIMEOUT_S) or not self.url:
            self.stop()
            raise RuntimeError("exchange serve did not start:\n" + "".join(self.lines[-40:]))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("exchange: serving on "):
                # "serving on PUBLIC_URL [(listening on URL)]": connect to where it listens.
                self.url = line.split()[-1].rstrip(")")
                self._ready.set()
        self._ready.set()

    def stop(self, *, timeout_s: float = 20.0) -> int:
        """SIGTERM the server and wait for it; return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(5)
        return self.proc.returncode


@dataclass
class Deployment:
    """A running server (one or more processes) and its enrolled cast."""

    backend: str
    data_dir: Path
    database_url: str | None
    log_vkey: str
    processes: list[ServerProcess]
    cast: dict[str, ParticipantIdentity] = field(default_factory=dict)
    public_url: str | None = None

    @property
    def anchor(self) -> TrustAnchor:
        """The trust anchor ``exchange server init`` wrote (what participants pin)."""
        return statements.load_anchor(self.data_dir)

    @property
    def trust_file(self) -> Path:
        """The trust anchor file (``--trust`` / ``EXCHANGE_TRUST``)."""
        return self.data_dir / "trust.json"

    @property
    def url(self) -> str:
        """The first process's base URL."""
        return self.processes[0].url

    def session(self, name: str, *, process: int = 0) -> SignedSession:
        """Return a signing session for the cast member ``name`` (to one process)."""
        url = self.processes[process].url
        return SignedSession(self.public_url or url, self.cast[name], connect_url=url)

    def stop(self) -> None:
        """Stop every server process."""
        for proc in self.processes:
            proc.stop()

    async def open_store(self) -> MetadataStore:
        """Open the deployment's metadata store directly (with the log's signer)."""
        signer = checkpoint_signer(load_log_signer(self.data_dir))
        if self.database_url:
            return await PostgresStore.open(self.database_url, signer=signer)
        return await SqliteStore.open(self.data_dir, signer=signer)


#: The standard cast: name -> role.
CAST = {
    "prosecutor": "prosecutor",
    "prosecutor2": "prosecutor",
    "coordinator": "coordinator",
    "coordinator2": "coordinator",
    "auditor": "auditor",
}


def init_server(data_dir: Path, admin: ParticipantIdentity, *,
                database_url: str | None = None, extra_args: Sequence[str] = ()) -> str:
    """Run ``exchange server init`` in process; return the printed log verifier key."""
    bundle = data_dir.parent / f"{data_dir.name}-admin.bundle.json"
    bundle.write_bytes(admin.public_bundle().encode())
    argv = ["server", "init", "--data-dir", str(data_dir), "--origin", ORIGIN,
            "--admin", str(bundle), "--organisation", "Ministry", "--country", "NL"]
    if database_url:
        argv += ["--database", database_url]
    argv += extra_args
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main(argv)
    if code != 0:
        raise RuntimeError(f"exchange server init failed with exit status {code}")
    return out.getvalue().strip()


async def server_anchor(session: SignedSession) -> TrustAnchor:
    """Return the trust anchor the server serves (trusted here: the harness sets it up)."""
    async with session.session.get(session.url("/v1/trust-anchor")) as response:
        return parse_anchor(await response.read())


async def enrol(session: SignedSession, identity: ParticipantIdentity, role: str, *,
                state: TrustState | None = None) -> dict[str, Any]:
    """Enrol ``identity`` with ``role`` through ``session`` (an administrator's).

    Pass one ``state`` (``statements.server_state``) to enrol several in a row
    without reading the directory back each time.
    """
    anchor = state.anchor if state is not None else await server_anchor(session)
    answer = await statements.enrol(session, anchor, identity, role, state=state)
    if answer.status != 201:
        raise RuntimeError(f"enrolment of {identity.id} failed: {answer.status} {answer.body}")
    result: dict[str, Any] = answer.body
    return result


def fresh_postgres() -> tuple[str, str]:
    """Return (database name, DSN) of a fresh migrated PostgreSQL database (or skip/fail)."""
    return asyncio.run(pg.server().fresh())


def drop_postgres(name: str) -> None:
    """Drop a database made by :func:`fresh_postgres`."""
    asyncio.run(pg.server().drop(name))


def deploy(base: Path, backend: str, *, processes: int = 1,
           database_url: str | None = None, extra_args: Sequence[str] = ()) -> Deployment:
    """Create and start a server on ``backend`` ("sqlite" or "postgres") and enrol the cast."""
    data_dir = base / "data"
    admin = ParticipantIdentity.generate("admin")
    log_vkey = init_server(data_dir, admin, database_url=database_url)
    procs: list[ServerProcess] = []
    try:
        for _ in range(processes):
            procs.append(ServerProcess(data_dir, database_url=database_url,
                                       extra_args=extra_args))
    except BaseException:
        for proc in procs:
            proc.stop()
        raise
    public_url = None
    if "--public-url" in extra_args:
        public_url = extra_args[list(extra_args).index("--public-url") + 1]
    deployment = Deployment(backend=backend, data_dir=data_dir, database_url=database_url,
                            log_vkey=log_vkey, processes=procs, cast={"admin": admin},
                            public_url=public_url)

    async def enrol_cast() -> None:
        async with deployment.session("admin") as admin_session:
            state = await statements.server_state(admin_session, deployment.anchor)
            for name, role in CAST.items():
                identity = ParticipantIdentity.generate(name)
                await enrol(admin_session, identity, role, state=state)
                deployment.cast[name] = identity

    try:
        run(enrol_cast())
    except BaseException:
        deployment.stop()
        raise
    return deployment


@contextlib.contextmanager
def deployed(base: Path, backend: str, *, processes: int = 1,
             extra_args: Sequence[str] = ()) -> Iterator[Deployment]:
    """Context manager around :func:`deploy` that also makes and drops the PostgreSQL database."""
    name = dsn = None
    if backend == "postgres":
        name, dsn = fresh_postgres()
    deployment = deploy(base, backend, processes=processes, database_url=dsn,
                        extra_args=extra_args)
    try:
        yield deployment
    finally:
        deployment.stop()
        if name is not None:
            drop_postgres(name)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """A running server with the standard cast, once per module and backend."""
    with deployed(tmp_path_factory.mktemp(f"server-{request.param}"), request.param) as d:
        yield d


@pytest.fixture(scope="module")
def sqlite_deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """A running server on SQLite only (for tests where the backend does not matter)."""
    with deployed(tmp_path_factory.mktemp("server-sqlite"), "sqlite") as d:
        yield d


async def read_log(deployment: Deployment) -> tuple[list[bytes], bytes]:
    """Return every stored audit entry and a freshly published checkpoint covering them."""
    store = await deployment.open_store()
    try:
        checkpoint = await store.publish_checkpoint()
        entries: list[bytes] = []
        for start in range(0, checkpoint.size, 256):
            end = min(start + 256, checkpoint.size)
            entries.extend(e.entry for e in await store.audit_entries(start, end))
        return entries, checkpoint.note
    finally:
        await store.close()


async def verify_audit_log(deployment: Deployment) -> tuple[VerifyReport, list[bytes]]:
    """Verify the deployment's whole log with ``exchange.audit.verify``; return it and entries."""
    entries, note = await read_log(deployment)
    report = verify_log(entries, deployment.log_vkey, note, origin=ORIGIN)
    return report, entries


async def json_of(response: aiohttp.ClientResponse) -> Any:
    """Return a response's JSON body (problem+json too) and release it."""
    async with response:
        return await response.json(content_type=None)


def wait_until(predicate: Any, *, timeout_s: float = 10.0) -> None:
    """Poll ``predicate()`` until true or fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


async def _problem(response: aiohttp.ClientResponse, status: int, slug: str) -> dict[str, Any]:
    """Assert ``response`` is an RFC 9457 problem with ``status`` and ``slug``; return its body.

    Also checks the shape (type URI, title, status, detail; no traceback).
    """
    async with response:
        text = await response.text()
        assert response.status == status, f"want {status} {slug}, got {response.status}: {text}"
        assert response.headers["Content-Type"].startswith("application/problem+json")
        body: dict[str, Any] = json.loads(text)
        assert body["type"] == PROBLEM_BASE + slug, body
        assert body["status"] == status
        assert isinstance(body["title"], str) and body["title"]
        assert isinstance(body["detail"], str)
        assert "Traceback" not in text and "/work/" not in text
        body["_index_header"] = response.headers.get(AUDIT_INDEX_HEADER)
        return body


async def expect_problem(response: aiohttp.ClientResponse, status: int, slug: str) -> int:
    """Assert a problem answer (see :func:`_problem`) naming its audit entry; return its index."""
    body = await _problem(response, status, slug)
    index = int(body["_index_header"])
    assert body["audit_index"] == index
    return index


async def expect_unlogged_problem(response: aiohttp.ClientResponse, status: int,
                                  slug: str) -> None:
    """Assert a problem answer (see :func:`_problem`) that names no audit entry.

    Requests whose signature does not verify are not accesses by anyone and
    are never appended to the transparency log.
    """
    body = await _problem(response, status, slug)
    assert body["_index_header"] is None and "audit_index" not in body, body


async def entries_at(deployment: Deployment, indexes: Sequence[int]) -> list[dict[str, Any]]:
    """Return the decoded audit entries at ``indexes`` (read from the store)."""
    store = await deployment.open_store()
    try:
        out = []
        for index in indexes:
            (stored,) = await store.audit_entries(index, index + 1)
            out.append(json.loads(stored.entry))
        return out
    finally:
        await store.close()


async def entry_at(deployment: Deployment, index: int) -> dict[str, Any]:
    """Return the decoded audit entry at ``index``."""
    return (await entries_at(deployment, [index]))[0]
