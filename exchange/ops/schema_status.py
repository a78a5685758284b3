"""Where a database's schema stands against this release's migrations, read without writing.

``exchange serve`` prints one status line from it at start-up, and
``exchange server migrate --dry-run`` lists what would run. Reading never
takes a write lock and never creates the database.
"""

from __future__ import annotations

import asyncio
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from exchange.config import ServerConfig
from exchange.errors import StorageError
from exchange.storage import schema
from exchange.storage.schema import Dialect, Migration
from exchange.storage.sqlite_store import DATABASE_NAME

__all__ = ["SchemaStatus", "schema_status"]


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """A database's schema version, the newest this release knows, and what is pending."""

    dialect: Dialect
    version: int
    known: int
    pending: tuple[Migration, ...]

    @property
    def current(self) -> bool:
        """Whether nothing is pending."""
        return not self.pending

    def describe(self) -> str:
        """Return the human status line (``database schema version 3 of 3 (sqlite)``)."""
        text = f"database schema version {self.version} of {self.known} ({self.dialect})"
        if self.pending:
            names = ", ".join(f"{m.version:04d}_{m.name}" for m in self.pending)
            text += f"; pending: {names}"
        return text

    def to_json(self) -> dict[str, object]:
        """Return the status for ``--json`` output."""
        return {"dialect": self.dialect, "version": self.version, "known": self.known,
                "pending": [f"{m.version:04d}_{m.name}" for m in self.pending]}


def _sqlite_version(path: Path) -> int:
    if not path.exists():
        return 0
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            exists = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                                "AND name = 'schema_version'").fetchone()
            if not exists:
                return 0
            return int(db.execute("SELECT coalesce(max(version), 0) FROM schema_version")
                       .fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error as err:
        raise StorageError(f"cannot read the schema version of {str(path)!r}: {err}") from err


async def _postgres_version(dsn: str) -> int:
    try:
        conn = await asyncpg.connect(dsn)
    except (asyncpg.PostgresError, OSError) as err:
        raise StorageError(f"cannot connect to postgresql: {type(err).__name__}") from err
    try:
        if await conn.fetchval("SELECT to_regclass('schema_version')") is None:
            return 0
        return int(await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_version"))
    finally:
        await conn.close()


async def schema_status(config: ServerConfig) -> SchemaStatus:
    """Return the schema status of the configured database.

    Raises ``SchemaTooNew`` when the database is ahead of this release and
    ``StorageError`` when it cannot be read.
    """
    dialect: Dialect
    if config.database_url is not None:
        dialect, version = "postgres", await _postgres_version(config.database_url)
    else:
        path = config.data_dir / DATABASE_NAME
        dialect, version = "sqlite", await asyncio.to_thread(_sqlite_version, path)
    pending = schema.pending(dialect, version)
    return SchemaStatus(dialect=dialect, version=version, known=schema.known_version(dialect),
                        pending=tuple(pending))
