"""PostgreSQL for the test suite: a throwaway cluster per session, or $EXCHANGE_TEST_DATABASE_URL.

A template database carries the migrated schema; each test gets a fresh
database cloned from it (``CREATE DATABASE x TEMPLATE t``), which takes
milliseconds instead of re-running migrations. Without PostgreSQL the tests
skip locally and fail in CI (``EXCHANGE_REQUIRE_POSTGRES=1``).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import os
import threading
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from exchange.storage.pgcluster import PgCluster, PostgresUnavailable
from exchange.storage.postgres_store import PostgresStore
from tests.support import skip_or_fail

TEMPLATE = "exchange_template"
ENV = "EXCHANGE_TEST_DATABASE_URL"

_lock = threading.Lock()
_server: _Server | None = None
_counter = itertools.count()


def _with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class _Server:
    """The session's PostgreSQL server and its template database."""

    def __init__(self) -> None:
        self.cluster: PgCluster | None = None
        url = os.environ.get(ENV)
        if url:
            self.admin_dsn = url
        else:
            self.cluster = PgCluster()
            self.admin_dsn = self.cluster.start()
        self.prefix = f"exchange_test_{os.getpid()}_"
        asyncio.run(self._make_template())

    async def _make_template(self) -> None:
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}_{os.getpid()}")
            await admin.execute(f"CREATE DATABASE {TEMPLATE}_{os.getpid()} ENCODING 'UTF8'")
        finally:
            await admin.close()
        store = await PostgresStore.open(self.dsn(f"{TEMPLATE}_{os.getpid()}"))
        await store.close()

    def dsn(self, database: str) -> str:
        if self.cluster is not None:
            return self.cluster.dsn_for(database)
        return _with_database(self.admin_dsn, database)

    async def fresh(self) -> tuple[str, str]:
        """Create a fresh migrated database; return (name, dsn)."""
        name = f"{self.prefix}{next(_counter)}"
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}_{os.getpid()}")
        finally:
            await admin.close()
        return name, self.dsn(name)

    async def drop(self, name: str) -> None:
        admin = await asyncpg.connect(self.admin_dsn)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
            self.cluster = None


def server() -> _Server:
    """Return the session's server, starting it on first use; skip or fail without PostgreSQL."""
    global _server  # noqa: PLW0603 (one cluster per test process, shared by all fixtures)
    with _lock:
        if _server is None:
            try:
                _server = _Server()
            except PostgresUnavailable as err:
                skip_or_fail("POSTGRES", str(err))
                raise
            atexit.register(_server.stop)
        return _server


def stop() -> None:
    """Stop the session's cluster (at session end)."""
    global _server  # noqa: PLW0603
    with _lock:
        if _server is not None:
            _server.stop()
            _server = None
