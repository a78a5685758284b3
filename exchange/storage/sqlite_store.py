"""The embedded SQLite metadata store: one file in the data directory (DESIGN.md §8).

WAL journal, foreign keys on. One writer connection runs each batch in ``BEGIN
IMMEDIATE`` (SQLite's write lock also serialises other processes); reads of the
audit log run on a small pool of reader threads with their own connections,
after datasette's pattern.

Reads outside units run on the event-loop thread: in WAL mode a reader takes
no lock a writer holds, and a read of the log (tens of microseconds in the page
cache) cost less than the turn of the loop a hop to a thread and back costs
under load (the slowest small reads spent 49 ms of their 101 ms there; issue
17). That connection never waits for a lock (``busy_timeout`` 0): the rare
read refused ``SQLITE_BUSY`` (another process recovering the log's index, say)
runs again on a reader thread, which may wait.

Flushes that overlap. The writer runs with ``synchronous=NORMAL``: its
``COMMIT`` appends the batch to the write-ahead log and returns without waiting
for the disk, so the next batch can begin at once. A flusher thread then
``fdatasync``s the log, and the batch's units are acknowledged only when a
flush that *began after their COMMIT returned* has ended (the log is written in
commit order, so such a flush covers the batch and every one before it). A unit
thus waits for one flush, its own, instead of the flush of the batch ahead of it
and then its own, as with ``synchronous=FULL``; batches committed while a flush
is queued share it. A crash before the flush loses only unacknowledged batches,
and always a suffix of them: the log's frames carry cumulative checksums, so
recovery keeps a prefix of the commits. What other readers see of a batch
before its flush must not leave the server before that flush either: see
``exchange.storage.durability``. A flush that fails leaves the store refusing
every unit (``StorageError``), as PostgreSQL stops on a failed fsync: the
kernel may have dropped the pages, so retrying could report lost work durable.

Where the writer's calls run: the ones that can block for long (``BEGIN
IMMEDIATE`` when another process holds the lock, waiting up to
``BUSY_TIMEOUT_MS``; ``COMMIT`` waiting for fsync; ``ROLLBACK``; migrations)
run on the writer thread; ``BEGIN IMMEDIATE`` is first tried on the loop
thread with a zero busy timeout. The statements *inside* a batch run directly
on the event-loop thread:
with the write lock held they never wait for a lock, and they touch only
SQLite's page cache and the WAL (no fsync before ``COMMIT``), so each takes
tens of microseconds, less than a hop to a thread and back costs (measured:
about a third of the server's CPU time per small request went to those hops).
The sequencer awaits every call in order, so the connection is never used by
two threads at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from exchange.errors import StorageError
from exchange.fsutil import datasync
from exchange.storage import durability, schema, waits
from exchange.storage._sqlstore import MAX_BATCH, SqlStore, _settle, _Unit
from exchange.storage._sqltx import DatabaseError, Row
from exchange.storage.metadata import CheckpointSigner

#: The file name of the database inside the data directory.
DATABASE_NAME = "exchange.sqlite3"
#: Wait this long for another process's write lock before failing.
BUSY_TIMEOUT_MS = 30_000
#: STRICT tables (3.37) and the upsert/row-value syntax the shared SQL uses.
MIN_SQLITE_VERSION = (3, 37, 0)
#: Flushes of the write-ahead log that may run at once: a batch's flush need not wait
#: for the one before it to end (a later flush covers it anyway).
FLUSHERS = 4

T = TypeVar("T")


def _connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                         timeout=BUSY_TIMEOUT_MS / 1000)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA synchronous = FULL")
    return db


def flush_wal(path: Path) -> None:
    """``fdatasync`` the write-ahead log at ``path``: every COMMIT that returned is then durable.

    Opened by name for each flush (SQLite keeps the file while a connection is
    open, and may truncate it; a descriptor kept open would survive a rename
    under it and flush the wrong file).
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        datasync(fd)
    finally:
        os.close(fd)


class _Flush:
    """One flush of the write-ahead log and the batches it makes durable."""

    __slots__ = ("number", "started", "units")

    def __init__(self) -> None:
        self.number = 0  # the last batch it covers
        self.units: list[_Unit] = []
        self.started = False  # set on the flusher thread just before the fdatasync


def _busy(err: sqlite3.Error) -> bool:
    """Whether SQLite refused for a lock (``SQLITE_BUSY``/``SQLITE_LOCKED``, extended too)."""
    code = getattr(err, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


class _Conn:
    """A :class:`~exchange.storage._sqltx.SqlConn` running statements on one thread."""

    def __init__(
        self, run: Callable[[Callable[[], Any]], Any] | None,
        db: Callable[[], sqlite3.Connection], *, when_busy: _Conn | None = None,
    ) -> None:
        self._run = run  # None: run statements on the calling (event-loop) thread
        self._db = db
        self._when_busy = when_busy  # where a statement refused for a lock runs again
        self.failed = False

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def job() -> T:
            return fn(self._db())

        try:
            result: T = job() if self._run is None else await self._run(job)
        except sqlite3.Error as err:
            if self._when_busy is not None and _busy(err):
                return await self._when_busy._call(fn)
            self.failed = True
            raise DatabaseError(f"sqlite refused a statement: {type(err).__name__}") from err
        return result

    async def execute(self, sql: str, *args: object) -> int:
        return await self._call(lambda db: db.execute(sql, args).rowcount)

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        await self._call(lambda db: db.executemany(sql, rows))

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        return await self._call(lambda db: db.execute(sql, args).fetchall())

    async def script(self, sql: str) -> None:
        def run(db: sqlite3.Connection) -> None:
            for statement in sql.split(";"):
                if statement.strip():
                    db.execute(statement)

        await self._call(run)


class SqliteStore(SqlStore):
    """A :class:`~exchange.storage.metadata.MetadataStore` in one SQLite file."""

    def __init__(self, path: Path, *, signer: CheckpointSigner | None,
                 clock: Callable[[], float], max_batch: int, readers: int,
                 flush: Callable[[Path], None]) -> None:
        super().__init__(signer=signer, clock=clock, max_batch=max_batch)
        self.path = path
        self._wal_path = path.with_name(path.name + "-wal")
        self._flush_wal = flush
        self._flush_pool = ThreadPoolExecutor(FLUSHERS, thread_name_prefix="sqlite-flush")
        self._next_flush: _Flush | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")
        self._reader_pool = ThreadPoolExecutor(readers, thread_name_prefix="sqlite-reader")
        self._writer_db: sqlite3.Connection | None = None
        self._local = threading.local()
        self._reader_dbs: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        # Statements inside a held write transaction: inline (see the module docstring).
        self._conn = _Conn(None, self._writer)
        # Reads on the loop thread, never waiting for a lock: one refused for a lock runs
        # again on a reader thread, which may wait (see the module docstring).
        self._read_conn = _Conn(None, self._loop_reader_db,
                                when_busy=_Conn(self._on_reader, self._reader_db))

    @classmethod
    async def open(
        cls, path: Path, *, signer: CheckpointSigner | None = None,
        clock: Callable[[], float] = time.time, max_batch: int = MAX_BATCH,
        readers: int = 2, flush: Callable[[Path], None] = flush_wal,
    ) -> SqliteStore:
        """Open (creating and migrating as needed) the database at ``path``.

        ``path`` may be a data directory, in which case the file is
        ``<path>/exchange.sqlite3``. Raises ``SchemaTooNew`` on a newer schema
        and ``StorageError`` when SQLite cannot give the durability we need.
        ``flush`` makes the write-ahead log durable (:func:`flush_wal`; tests
        pass one they can hold back).
        """
        path = Path(path)
        if path.is_dir():
            path = path / DATABASE_NAME
        store = cls(path, signer=signer, clock=clock, max_batch=max_batch, readers=readers,
                    flush=flush)
        try:
            await store._on_writer(store._prepare)
        except BaseException:
            await store._shutdown()
            raise
        store._start()
        return store

    def _writer(self) -> sqlite3.Connection:
        if self._writer_db is None:
            raise RuntimeError("internal error: sqlite writer used before open")
        return self._writer_db

    def _reader_db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = _connect(self.path)
            db.execute("PRAGMA query_only = ON")
            self._local.db = db
            with self._lock:
                self._reader_dbs.append(db)
        return db

    def _loop_reader_db(self) -> sqlite3.Connection:
        """The event-loop thread's reading connection: it never waits for a lock."""
        db = self._reader_db()
        if not getattr(self._local, "never_waits", False):
            db.execute("PRAGMA busy_timeout = 0")
            self._local.never_waits = True
        return db

    async def _on_writer(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer_pool, job)

    async def _on_reader(self, job: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._reader_pool, job)

    def _prepare(self) -> None:
        """Open the writer connection, check the pragmas we rely on, apply migrations.

        SQLite's own errors (an unwritable file, a full disk) become a
        ``StorageError`` naming the database file, with the original as cause.
        """
        try:
            self._prepare_writer()
        except sqlite3.Error as err:
            raise StorageError(
                f"sqlite could not open or migrate {str(self.path)!r:.200}: "
                f"{type(err).__name__}: {err}"
            ) from err

    def _prepare_writer(self) -> None:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StorageError(
                f"sqlite {sqlite3.sqlite_version} is too old, want at least "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))}; upgrade the system sqlite library"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = _connect(self.path)
        self._writer_db = db
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StorageError(
                f"sqlite journal mode is {mode!r}, want 'wal'; put the data directory on a "
                "local filesystem that supports shared memory"
            )
        if db.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
            raise StorageError("sqlite foreign keys could not be enabled")
        if not self._schema_current(db):
            self._migrate(db)
        # From here the flusher makes commits durable (module docstring); the
        # migrations above committed with synchronous=FULL.
        db.execute("PRAGMA synchronous = NORMAL")

    def _migrate(self, db: sqlite3.Connection) -> None:
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute(schema.SCHEMA_VERSION_DDL)
            current = db.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            version = int(current.fetchone()[0])
            for migration in schema.pending("sqlite", version):
                for statement in schema.split_statements(migration.sql):
                    db.execute(statement)
                db.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, int(time.time())),
                )
            db.execute("COMMIT")
        except BaseException:
            # A failed BEGIN leaves no transaction, and SQLite ends one by itself
            # on I/O errors, a full disk or busy timeouts: a blind ROLLBACK would
            # then raise "no transaction is active" and hide the real error.
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    @staticmethod
    def _schema_current(db: sqlite3.Connection) -> bool:
        """Whether the schema is exactly the known one (checked without the write lock)."""
        exists = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not exists:
            return False
        version = int(db.execute("SELECT coalesce(max(version), 0) FROM schema_version")
                      .fetchone()[0])
        return not schema.pending("sqlite", version)

    async def _on_writer_sql(self, sql: str) -> None:
        """Run one argument-free statement that may wait (lock, fsync) on the writer thread."""
        def job() -> None:
            self._writer().execute(sql)

        try:
            await self._on_writer(job)
        except sqlite3.Error as err:
            raise DatabaseError(f"sqlite refused {sql!r}: {type(err).__name__}") from err

    def _begin_if_free(self) -> bool:
        """Take the write lock now if no other process holds it; False if one does.

        Run on the loop thread with a zero busy timeout, so it never waits:
        a batch usually finds the lock free and saves the thread hop.
        """
        db = self._writer()
        db.execute("PRAGMA busy_timeout = 0")
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as err:
            if err.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise
            return False
        finally:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return True

    async def _begin(self) -> _Conn:
        try:
            free = self._begin_if_free()
        except sqlite3.Error as err:
            raise DatabaseError(f"sqlite refused 'BEGIN IMMEDIATE': {type(err).__name__}") from err
        if not free:  # another process writes: wait for it (busy timeout) off the loop
            await self._on_writer_sql("BEGIN IMMEDIATE")
        self._conn.failed = False
        return self._conn

    async def _commit(self) -> None:
        await self._on_writer_sql("COMMIT")

    def _acknowledge(self, number: int, done: list[_Unit]) -> None:
        """Acknowledge batch ``number`` after a flush that begins after its COMMIT returned.

        A flush queued but not begun covers it too: the batch joins it.
        """
        flush = self._next_flush
        if flush is None or flush.started:
            flush = self._next_flush = _Flush()
            task = asyncio.get_running_loop().create_task(self._run_flush(flush))
            self._flushes.add(task)
            task.add_done_callback(self._flushes.discard)
        flush.number = number  # batch numbers only grow
        flush.units.extend(done)

    async def _run_flush(self, flush: _Flush) -> None:
        def job() -> None:
            flush.started = True  # batches committed from now on need a later flush
            self._flush_wal(self._wal_path)

        try:
            await asyncio.get_running_loop().run_in_executor(self._flush_pool, job)
        except Exception as err:
            error = StorageError(
                f"sqlite could not flush its write-ahead log {str(self._wal_path)!r:.200} "
                f"({type(err).__name__}); committed work may not be on disk: the store "
                "refuses all work until the server is restarted"
            )
            self._fail_durability(error)
            for unit in flush.units:
                _settle(unit.committed, error)
            return
        self._mark_durable(flush.number)
        for unit in flush.units:
            _settle(unit.committed, None)

    async def _rollback(self) -> None:
        def rollback() -> None:
            db = self._writer()
            if db.in_transaction:
                db.execute("ROLLBACK")

        await self._on_writer(rollback)

    @contextlib.asynccontextmanager
    async def _reader(self) -> AsyncIterator[_Conn]:
        started = time.perf_counter()
        try:
            yield self._read_conn
        finally:
            # Whatever the read saw was committed by one of the batches begun so far.
            durability.saw(self._commits)
            waits.add("read", time.perf_counter() - started)

    async def _shutdown(self) -> None:
        if self._flushes:  # let the last batches be acknowledged
            await asyncio.wait(set(self._flushes))
        self._flush_pool.shutdown(wait=True)

        def close_writer() -> None:
            if self._writer_db is not None:
                self._writer_db.close()
                self._writer_db = None

        await asyncio.get_running_loop().run_in_executor(self._writer_pool, close_writer)
        self._writer_pool.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        with self._lock:
            for db in self._reader_dbs:
                db.close()
            self._reader_dbs.clear()


__all__ = ["DATABASE_NAME", "SqliteStore"]
