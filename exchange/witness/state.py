"""The witness's persisted state: per log origin, the checkpoint it cosigned last (SQLite).

One row per origin (size, root, the note as received). The tlog-witness
rule "the check against stored state and the update MUST be atomic" is kept
by running the check inside the write transaction: ``BEGIN IMMEDIATE`` takes
SQLite's write lock first (so two witness processes on one file serialise
too), the row is read, the caller's check runs, the new row is written and
the transaction commits with ``synchronous=FULL`` before anything is
returned, so the state is on disk before the cosignature leaves. Requests for
one origin in one process also queue on an asyncio lock, so the database
lock is never contended from inside the process.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from exchange.errors import StorageError
from exchange.witness.protocol import Stored

__all__ = ["DATABASE_NAME", "SCHEMA_VERSION", "WitnessState"]

DATABASE_NAME = "witness.sqlite3"
SCHEMA_VERSION = 1
# Another witness process may hold the write lock for one short transaction.
_BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS witness_state (
    origin TEXT PRIMARY KEY,
    size TEXT NOT NULL,        -- decimal: a uint64 does not fit SQLite's signed INTEGER
    root BLOB NOT NULL,
    note BLOB NOT NULL,
    updated_at INTEGER NOT NULL
)
"""


class WitnessState:
    """The state database of one witness; open with :meth:`open`, then :meth:`close`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._thread_lock = threading.Lock()
        self._origin_locks: dict[str, asyncio.Lock] = {}

    @classmethod
    def open(cls, data_dir: Path) -> WitnessState:
        """Open (creating it if needed) ``<data_dir>/witness.sqlite3``; refuse a newer schema."""
        path = Path(data_dir) / DATABASE_NAME
        try:
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                conn.close()
                raise StorageError(f"{str(path)!r} has witness schema {version}, newer than "
                                   f"this program's {SCHEMA_VERSION}: upgrade exchange")
            conn.execute(_SCHEMA)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except sqlite3.Error as err:
            raise StorageError(f"cannot open the witness state {str(path)!r}: {err}") from None
        return cls(conn)

    def close(self) -> None:
        """Close the database."""
        with self._thread_lock:
            self._conn.close()

    def _read(self, origin: str) -> Stored:
        row = self._conn.execute("SELECT size, root FROM witness_state WHERE origin = ?",
                                 (origin,)).fetchone()
        return Stored.nothing() if row is None else Stored(size=int(row[0]), root=bytes(row[1]))

    def _update(self, origin: str, check: Callable[[Stored], None], size: int, root: bytes,
                note: bytes) -> None:
        with self._thread_lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                check(self._read(origin))
                self._conn.execute(
                    "INSERT INTO witness_state (origin, size, root, note, updated_at) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
                    "size = excluded.size, root = excluded.root, note = excluded.note, "
                    "updated_at = excluded.updated_at",
                    (origin, str(size), root, note, int(time.time())))
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:  # also when COMMIT itself failed (disk full)
                    self._conn.execute("ROLLBACK")
                raise

    async def update(self, origin: str, check: Callable[[Stored], None], *, size: int,
                     root: bytes, note: bytes) -> None:
        """Run ``check(stored)`` and, unless it raises, store (size, root, note) atomically."""
        lock = self._origin_locks.setdefault(origin, asyncio.Lock())
        async with lock:
            try:
                await asyncio.to_thread(self._update, origin, check, size, root, note)
            except sqlite3.Error as err:
                raise StorageError(f"witness state write failed: {err}") from None

    async def get(self, origin: str) -> Stored:
        """Return what was cosigned last for ``origin`` (size 0 if nothing)."""
        def read() -> Stored:
            with self._thread_lock:
                return self._read(origin)

        try:
            return await asyncio.to_thread(read)
        except sqlite3.Error as err:
            raise StorageError(f"witness state read failed: {err}") from None
