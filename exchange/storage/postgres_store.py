"""The PostgreSQL metadata store (DESIGN.md §8), safe for many processes.

The sequencer's write connection and the connection for reads are
synchronous psycopg ones whose statements need no turn of the event loop
(``exchange.storage._pgsync`` says why); an asyncpg pool serves the
autocommitted inserts that wait for a flush (nonces, checkpoints). Each batch
runs in one READ COMMITTED transaction that first takes
``pg_advisory_xact_lock(LOG_LOCK_KEY)``: every process's writers queue on that
lock, so the log tail read next is the latest committed one and entries get
consecutive indices with one ``prev`` chain (DESIGN.md §7).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg

from exchange.errors import StorageError
from exchange.storage import schema, waits
from exchange.storage._pgsync import SyncConn, connect_sync, reopened
from exchange.storage._sqlstore import MAX_BATCH, SqlStore
from exchange.storage._sqltx import DatabaseError, Row, insert_nonce
from exchange.storage.metadata import CheckpointSigner, StoredCheckpoint

#: Advisory-lock key serialising audit appends (arbitrary, fixed: "exchange" in ASCII).
LOG_LOCK_KEY = 0x65786368616E6765
#: Advisory-lock key serialising migrations of processes starting together.
MIGRATION_LOCK_KEY = LOG_LOCK_KEY + 1
#: Oldest server with the features we use (partial unique indexes with ON CONFLICT, row values).
MIN_SERVER_VERSION = 13
#: Where the DSN comes from when the caller gives none.
DSN_ENV = "EXCHANGE_DATABASE_URL"

_PLACEHOLDER = re.compile(r"\?")


def _numbered(sql: str, cache: dict[str, str] = {}) -> str:  # noqa: B006 (a deliberate cache)
    """Return ``sql`` with ``?`` placeholders numbered ``$1, $2…`` (our SQL has no ``?`` else)."""
    converted = cache.get(sql)
    if converted is None:
        counter = iter(range(1, 10_000))
        converted = _PLACEHOLDER.sub(lambda _m: f"${next(counter)}", sql)
        cache[sql] = converted
    return converted


#: What a statement can raise when the database refuses it or goes away; OSError covers a
#: socket reset while PostgreSQL shuts down (asyncpg does not always wrap it).
#: ``InternalClientError`` ("cannot switch to state ...; another operation is in
#: progress") was seen while PostgreSQL went down under load: the connection's protocol
#: state is then unusable, so it is treated like a lost connection (503, reconnect).
_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError,
                  OSError)


class _Conn:
    """A :class:`~exchange.storage._sqltx.SqlConn` over one asyncpg connection."""

    def __init__(self, conn: Any) -> None:
        self.raw = conn
        self.failed = False

    def _wrap(self, err: Exception) -> DatabaseError:
        self.failed = True
        return DatabaseError(f"postgresql refused a statement: {type(err).__name__}")

    async def execute(self, sql: str, *args: object) -> int:
        try:
            status: str = await self.raw.execute(_numbered(sql), *args)
        except _DRIVER_ERRORS as err:
            raise self._wrap(err) from err
        last = status.rsplit(" ", 1)[-1]
        return int(last) if last.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        try:
            await self.raw.executemany(_numbered(sql), rows)
        except _DRIVER_ERRORS as err:
            raise self._wrap(err) from err

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        try:
            rows: list[Row] = await self.raw.fetch(_numbered(sql), *args)
        except _DRIVER_ERRORS as err:
            raise self._wrap(err) from err
        return rows

    async def script(self, sql: str) -> None:
        try:
            await self.raw.execute(sql)
        except _DRIVER_ERRORS as err:
            raise self._wrap(err) from err


async def _prepare(conn: Any) -> None:
    """Check the server and apply pending migrations under the migration lock."""
    version = conn.get_server_version()
    if version.major < MIN_SERVER_VERSION:
        raise StorageError(
            f"postgresql {version.major} is too old, want at least {MIN_SERVER_VERSION}; "
            "upgrade the database server"
        )
    encoding = await conn.fetchval("SHOW server_encoding")
    if encoding != "UTF8":
        raise StorageError(
            f"database encoding is {encoding!r}, want 'UTF8'; create the database with "
            "ENCODING 'UTF8'"
        )
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK_KEY)
        await conn.execute(schema.SCHEMA_VERSION_DDL)
        current = int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
        for migration in schema.pending("postgres", current):
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version, migration.name, int(time.time()),
            )


async def _keep_session(conn: Any) -> None:
    """Reset nothing when a connection returns to the pool (asyncpg rolls back an open
    transaction first).

    The default reset costs a round trip per release (``RESET ALL``, ``UNLISTEN
    *``, ...) and undoes nothing here: no statement of this store changes session
    state (no SET, LISTEN, cursor or session-level advisory lock; the log's lock
    is transaction-scoped).
    """


class PostgresStore(SqlStore):
    """A :class:`~exchange.storage.metadata.MetadataStore` in PostgreSQL."""

    def __init__(self, pool: Any, dsn: str, *, signer: CheckpointSigner | None,
                 clock: Callable[[], float], max_batch: int) -> None:
        super().__init__(signer=signer, clock=clock, max_batch=max_batch)
        self._pool = pool
        self._dsn = dsn
        self._writer: SyncConn | None = None
        self._read_conn: SyncConn | None = None
        self._read_connecting = asyncio.Lock()

    @classmethod
    async def open(
        cls, dsn: str | None = None, *, signer: CheckpointSigner | None = None,
        clock: Callable[[], float] = time.time, max_batch: int = MAX_BATCH,
        pool_size: int = 8,
    ) -> PostgresStore:
        """Connect (DSN from ``dsn`` or ``$EXCHANGE_DATABASE_URL``) and migrate.

        Raises ``SchemaTooNew`` on a newer schema and ``StorageError`` when the
        server cannot be reached or is unsuitable.
        """
        dsn = dsn or os.environ.get(DSN_ENV)
        if not dsn:
            raise StorageError(f"no postgresql dsn given; set {DSN_ENV} or the config's dsn")
        try:
            pool = await asyncpg.create_pool(dsn, min_size=2, max_size=max(2, pool_size),
                                             reset=_keep_session)
        except _DRIVER_ERRORS as err:
            raise StorageError(
                f"cannot connect to postgresql: {type(err).__name__}; check {DSN_ENV}"
            ) from err
        store = cls(pool, dsn, signer=signer, clock=clock, max_batch=max_batch)
        try:
            async with pool.acquire() as conn:
                await _prepare(conn)
            store._writer = await connect_sync(dsn, "writer")
        except BaseException:
            await pool.close()
            raise
        store._start()
        return store

    def pool_stats(self) -> tuple[int, int]:
        """Return (open, idle) connections of the pool (for metrics)."""
        return int(self._pool.get_size()), int(self._pool.get_idle_size())

    async def _acquire(self) -> Any:
        """Return a pooled connection; an unreachable server is a ``StorageError`` (503)."""
        try:
            return await self._pool.acquire()
        except _DRIVER_ERRORS as err:
            raise StorageError(f"cannot reach postgresql: {type(err).__name__}") from err

    async def _begin(self) -> SyncConn:
        writer = self._writer = await reopened(self._writer, self._dsn, "writer")
        await writer.begin(LOG_LOCK_KEY)
        return writer

    async def _commit(self) -> None:
        assert self._writer is not None
        await self._writer.commit()

    async def _rollback(self) -> None:
        if self._writer is not None:
            await self._writer.rollback()

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[SyncConn]:
        started = time.perf_counter()
        try:
            yield await self._read_connection()
        finally:
            waits.add("read", time.perf_counter() - started)

    async def _read_connection(self) -> SyncConn:
        """The reading connection; a lost one is replaced (one task connects, others wait)."""
        reader = self._read_conn
        if reader is not None and reader.usable():
            return reader
        async with self._read_connecting:
            reader = self._read_conn = await reopened(self._read_conn, self._dsn, "reader")
            return reader

    @contextlib.asynccontextmanager
    async def _pooled(self) -> AsyncIterator[_Conn]:
        """A pooled asyncpg connection, for the inserts that wait for a flush (not a read)."""
        conn = await self._acquire()
        try:
            yield _Conn(conn)
        finally:
            await self._pool.release(conn)

    async def record_nonce(self, keyid: str, nonce: str, expires_at: int) -> None:
        """Spend a request nonce in one autocommitted insert, beside the group commit.

        The primary key decides a race with a unit inserting the same nonce:
        PostgreSQL makes the second insert wait for the first's transaction, so
        exactly one of them succeeds. The insert commits (and is flushed)
        before the request goes on, as inside a unit.
        """
        started = time.perf_counter()
        try:
            async with self._pooled() as conn:
                await insert_nonce(conn, keyid, nonce, expires_at)
        finally:
            waits.add("nonce", time.perf_counter() - started)

    async def publish_checkpoint(self) -> StoredCheckpoint:
        """Sign and keep a checkpoint of the committed tree, beside the group commit.

        The tree's committed (size, root) is read, signed and inserted
        autocommitted on a pooled connection, so a checkpoint read never waits
        for the audit writer under load; the size's primary key keeps the first
        of two concurrent publications, which both then return.
        """
        if self._signer is None:
            raise StorageError("this store was opened without a checkpoint signer")
        size, root = await self.root_hash()
        async with self._pooled() as conn:
            return await self._keep_checkpoint(conn, self._signer, size, root)

    async def _shutdown(self) -> None:
        for conn in (self._writer, self._read_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()
        self._writer = self._read_conn = None
        await self._pool.close()


__all__ = ["DSN_ENV", "LOG_LOCK_KEY", "PostgresStore"]
