"""A consistent, read-only view of a running server's database, for backups.

SQLite: the online backup API copies the database page by page into a new
file while the server keeps writing (WAL readers do not block the writer),
and the copy is one consistent state. PostgreSQL: a REPEATABLE READ
transaction exports its snapshot (``pg_export_snapshot``) and ``pg_dump
--snapshot`` dumps exactly that state, so the facts and the evidence list we
read in the same transaction match the dump byte for byte.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import shutil
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from exchange.errors import StorageError

__all__ = [
    "PAGE",
    "Facts",
    "Snapshot",
    "find_pg_tool",
    "pg_tool_args",
    "postgres_snapshot",
    "sqlite_snapshot",
]

#: Evidence records read per query (keyset pagination keeps memory flat).
PAGE = 1000
_FACTS_SQL = (
    "SELECT (SELECT coalesce(max(version), 0) FROM schema_version),"
    " (SELECT size FROM audit_state),"
    " (SELECT note FROM audit_checkpoints ORDER BY size DESC LIMIT 1)"
)
_EVIDENCE_SQL = ("SELECT id, blob_id, ciphertext_size FROM evidence WHERE id > {p1} "
                 "ORDER BY id LIMIT {p2}")


class BackupError(StorageError):
    """A backup or restore could not be made as asked; nothing was left half-written."""

    problem_type = "backup"


@dataclass(frozen=True, slots=True)
class Facts:
    """What the snapshot holds: schema version, audit tree size, latest signed checkpoint."""

    schema_version: int
    tree_size: int
    checkpoint: bytes | None


class Snapshot(Protocol):
    """A frozen database state: the dump file and reads that see exactly that state."""

    dump: Path
    dump_name: str

    async def facts(self) -> Facts:
        """Return the snapshot's schema version, tree size and latest checkpoint."""
        ...

    async def evidence(self, after: str) -> list[tuple[str, str, int]]:
        """Return up to :data:`PAGE` (evidence id, blob id, size) with ids after ``after``."""
        ...


def pg_tool_args(dsn: str) -> tuple[str, dict[str, str]]:
    """Return (``dsn`` without its password, environment for a libpq tool).

    A password in a command line is visible to every user in the process
    list; libpq tools read it from ``PGPASSWORD`` instead.
    """
    parts = urlsplit(dsn)
    env = dict(os.environ)
    if parts.password is None:
        return dsn, env
    env["PGPASSWORD"] = unquote(parts.password)
    user = f"{parts.username}@" if parts.username else ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit((parts.scheme, user + host + port, parts.path, parts.query,
                       parts.fragment)), env


def find_pg_tool(name: str) -> str:
    """Return the path of a PostgreSQL client tool (``pg_dump``, ``pg_restore``)."""
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        return candidate
    raise BackupError(f"{name} not found on PATH or in /usr/lib/postgresql/*/bin; install the "
                      "PostgreSQL client tools (Debian: postgresql-client)")


class _SqliteSnapshot:
    dump_name = "exchange.sqlite3"

    def __init__(self, dump: Path) -> None:
        self.dump = dump

    def _query(self, sql: str, *args: object) -> list[Any]:
        db = sqlite3.connect(f"file:{self.dump}?mode=ro", uri=True)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()

    async def facts(self) -> Facts:
        row = (await asyncio.to_thread(self._query, _FACTS_SQL))[0]
        return Facts(int(row[0]), int(row[1]), None if row[2] is None else bytes(row[2]))

    async def evidence(self, after: str) -> list[tuple[str, str, int]]:
        rows = await asyncio.to_thread(
            self._query, _EVIDENCE_SQL.format(p1="?", p2="?"), after, PAGE)
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def _sqlite_copy(source: Path, target: Path) -> None:
    if not source.is_file():
        raise BackupError(f"no database at {str(source)!r}")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)  # the online backup API: one consistent state
        finally:
            dst.close()
    finally:
        src.close()


@contextlib.asynccontextmanager
async def sqlite_snapshot(database: Path, workdir: Path) -> AsyncIterator[Snapshot]:
    """Yield a snapshot of the SQLite database file ``database`` (copied into ``workdir``)."""
    target = workdir / _SqliteSnapshot.dump_name
    try:
        await asyncio.to_thread(_sqlite_copy, database, target)
    except sqlite3.Error as err:
        raise BackupError(f"sqlite backup of {str(database)!r} failed: {err}") from err
    yield _SqliteSnapshot(target)


class _PostgresSnapshot:
    dump_name = "exchange.pgdump"

    def __init__(self, dump: Path, conn: Any) -> None:
        self.dump = dump
        self._conn = conn

    async def facts(self) -> Facts:
        row = await self._conn.fetchrow(_FACTS_SQL)
        return Facts(int(row[0]), int(row[1]), None if row[2] is None else bytes(row[2]))

    async def evidence(self, after: str) -> list[tuple[str, str, int]]:
        rows = await self._conn.fetch(_EVIDENCE_SQL.format(p1="$1", p2="$2"), after, PAGE)
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


@contextlib.asynccontextmanager
async def postgres_snapshot(dsn: str, workdir: Path) -> AsyncIterator[Snapshot]:
    """Yield a snapshot of the PostgreSQL database ``dsn``, dumped by ``pg_dump -Fc``."""
    pg_dump = find_pg_tool("pg_dump")
    try:
        conn = await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, OSError) as err:
        raise BackupError(f"cannot connect to postgresql: {type(err).__name__}") from err
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot_id = await conn.fetchval("SELECT pg_export_snapshot()")
            target = workdir / _PostgresSnapshot.dump_name
            url, env = pg_tool_args(dsn)
            proc = await asyncio.create_subprocess_exec(
                pg_dump, "--format=custom", "--no-owner", "--no-privileges",
                f"--snapshot={snapshot_id}", f"--file={target}", f"--dbname={url}",
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env=env,
            )
            _, errors = await proc.communicate()
            if proc.returncode != 0:
                last = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                raise BackupError(f"pg_dump failed (exit {proc.returncode}): {last[0][:300]}")
            yield _PostgresSnapshot(target, conn)
    finally:
        await conn.close()
