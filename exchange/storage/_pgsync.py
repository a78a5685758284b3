"""PostgreSQL connections whose statements are answered without a turn of the event loop.

Theory of operation. Through asyncpg every statement ends by waking the
waiting task, which runs only after every callback already queued on the
event loop. Under the 100-client load a turn of the loop takes milliseconds,
so each round trip cost that much: a unit of five statements tens of
milliseconds, a batch of units hundreds, and every unit queued behind it (in
this process, or in another waiting for the advisory lock) waited as long; a
read of the audit log, a few statements, as much again (issue 17: small-request
p99 418 ms on two processes). Measured on this machine: 61 µs per ``SELECT 1``
on an idle loop, 92 ms beside 100 busy tasks.

So the store's write connection and its reading connection are synchronous
psycopg ones, and their statements run on the event-loop thread, one after the
other, as SQLite's writer's do: a batch or a read costs its round trips (about
0.1 ms each over a local socket) and no turns. What may wait for long runs on
the connection's own thread instead, never on the loop: connecting, ``BEGIN``
with the advisory lock (another process may hold it for its whole batch) and
``COMMIT`` (it waits for the WAL flush). Statements that wait for a flush
(the autocommitted nonce and checkpoint inserts) stay on asyncpg's pool.

The cost: a statement that waits in PostgreSQL (a row lock held by another
transaction; this store's only other writers are single autocommitted inserts,
and reads take no row locks) holds the loop meanwhile. A table lock taken from
outside (an operator's ``LOCK TABLE``, a newer server's migration during a
rolling upgrade) would hold it for as long as it is held, so the connections
wait at most :data:`LOCK_TIMEOUT_MS` for a lock and the statement then fails
(503); only the wait for the log's lock, on the thread, is unbounded. A
database host that stops answering mid-statement holds the loop too. For a
database reached over TCP the connection sets ``tcp_user_timeout`` and
keepalives, so a dead peer fails the statement (503) after :data:`DEAD_PEER_S`
seconds instead of hanging; a lost connection fails at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg

from exchange.errors import StorageError
from exchange.storage._sqltx import DatabaseError, Row

__all__ = ["DEAD_PEER_S", "LOCK_TIMEOUT_MS", "SyncConn", "connect_sync", "reopened"]

#: Seconds after which an unanswered statement to a TCP peer fails.
DEAD_PEER_S = 10
_CONNECT_TIMEOUT_S = 10
#: How long a batch tries the log's lock from the loop before waiting for it on a thread.
_TRY_LOCK_S = 0.05
_TRY_LOCK_EVERY_S = 0.001
#: How long a statement on the loop may wait for a lock before it fails (503) rather than
#: hold the loop: an operator's ``LOCK TABLE``, or a migration run by a newer server during
#: a rolling upgrade, takes table locks for as long as it runs.
LOCK_TIMEOUT_MS = 2000
#: libpq options that fail a silent TCP peer (libpq ignores them for a Unix socket).
_TCP_OPTIONS: dict[str, Any] = {
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": DEAD_PEER_S * 1000,
}

_cache: dict[str, str] = {}


def _pyformat(sql: str) -> str:
    """Return ``sql`` with ``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    converted = _cache.get(sql)
    if converted is None:
        converted = _cache[sql] = sql.replace("%", "%%").replace("?", "%s")
    return converted


class SyncConn:
    """A :class:`~exchange.storage._sqltx.SqlConn` over one synchronous psycopg connection.

    The four SQL calls run on the calling (event-loop) thread; :meth:`begin`,
    :meth:`commit`, :meth:`rollback` and :meth:`close` on the connection's own
    thread (module notes).
    """

    def __init__(self, raw: psycopg.Connection[Any],
                 thread: concurrent.futures.ThreadPoolExecutor) -> None:
        self.raw = raw
        self.failed = False
        self._thread = thread

    def usable(self) -> bool:
        """Whether the connection is still open (a lost one is replaced before a batch)."""
        return not (self.raw.closed or self.raw.broken)

    def _wrap(self, err: Exception) -> DatabaseError:
        self.failed = True
        return DatabaseError(f"postgresql refused a statement: {type(err).__name__}")

    def _run(self, sql: str, args: Sequence[object]) -> psycopg.Cursor[Any]:
        try:
            if args:
                return self.raw.execute(_pyformat(sql), tuple(args))
            return self.raw.execute(sql)
        except psycopg.Error as err:
            raise self._wrap(err) from err

    async def execute(self, sql: str, *args: object) -> int:
        return self._run(sql, args).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        try:
            with self.raw.cursor() as cursor:
                cursor.executemany(_pyformat(sql), rows)
        except psycopg.Error as err:
            raise self._wrap(err) from err

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        cursor = self._run(sql, args)
        try:
            return cursor.fetchall()
        except psycopg.Error as err:
            raise self._wrap(err) from err

    async def script(self, sql: str) -> None:
        self._run(sql, ())

    async def _on_thread(self, sql: str) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self.raw.execute, sql)
        except psycopg.Error as err:
            raise self._wrap(err) from err

    async def begin(self, lock_key: int) -> None:
        """Open the batch's transaction holding the log's advisory lock ``lock_key``.

        The lock is tried on the loop, then again at each turn for up to
        :data:`_TRY_LOCK_S`, and only then waited for on the connection's thread.
        A lock granted to that thread stays held, unused, until the loop turns to
        go on (milliseconds under load), and another process's batch waits that
        long too; one taken by a try is used at once.
        """
        self.failed = False
        self._run("BEGIN", ())
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + _TRY_LOCK_S
        while not self._run(f"SELECT pg_try_advisory_xact_lock({int(lock_key)})",
                            ()).fetchall()[0][0]:
            if loop.time() >= give_up_at:
                # Off the loop, the other process's batch may take as long as it takes.
                await self._on_thread("SET LOCAL lock_timeout = 0; "
                                      f"SELECT pg_advisory_xact_lock({int(lock_key)})")
                return
            await asyncio.sleep(_TRY_LOCK_EVERY_S)

    async def commit(self) -> None:
        """Commit; returns once PostgreSQL reports the commit durable.

        On the connection's thread: the commit waits for the WAL flush, which a
        slow disk can stretch to seconds, and the loop must not wait for it.
        Committing on the loop was measured too (small-read p99 152 ms against
        185 ms, but the loop's lag p99 46 ms against 29 ms; docs/performance.md).
        """
        await self._on_thread("COMMIT")

    async def rollback(self) -> None:
        """Roll the open transaction back, if the connection still works."""
        if self.usable():
            await self._on_thread("ROLLBACK")

    async def close(self) -> None:
        """Close the connection and stop its thread."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._thread, self.raw.close)
        finally:
            self._thread.shutdown(wait=False)


async def connect_sync(dsn: str, role: str) -> SyncConn:
    """Open a connection for ``role`` ("writer", "reader"), in autocommit mode (the store
    sends BEGIN and COMMIT itself).

    Raises ``StorageError`` when PostgreSQL cannot be reached.
    """
    thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"pg-{role}")
    loop = asyncio.get_running_loop()

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=_CONNECT_TIMEOUT_S,
                               application_name=f"exchange-{role}",
                               options=f"-c lock_timeout={LOCK_TIMEOUT_MS}", **_TCP_OPTIONS)

    try:
        raw = await loop.run_in_executor(thread, connect)
    except psycopg.Error as err:
        thread.shutdown(wait=False)
        raise StorageError(f"cannot reach postgresql: {type(err).__name__}") from err
    return SyncConn(raw, thread)


async def reopened(conn: SyncConn | None, dsn: str, role: str) -> SyncConn:
    """Return ``conn`` if it still works, else close it and open a new one for ``role``.

    A lost connection (PostgreSQL restarted, the session ended) fails the calls
    in flight; the next call gets a new one. Raises ``StorageError`` while
    PostgreSQL cannot be reached, and the call after tries again.
    """
    if conn is not None and conn.usable():
        return conn
    if conn is not None:
        with contextlib.suppress(Exception):
            await conn.close()
    return await connect_sync(dsn, role)
