"""Versioned, append-only SQL migrations for the metadata stores (STYLE.md item 40).

Migrations live in ``exchange/storage/migrations/NNNN_name.sql``, or as a pair
``NNNN_name.sqlite.sql`` / ``NNNN_name.postgres.sql`` where the dialects
differ. The stores apply the missing ones at start-up inside one transaction
and record each in ``schema_version``; a database newer than the code is
refused with :class:`~exchange.storage.errors.SchemaTooNew`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from exchange.storage.errors import SchemaTooNew

Dialect = Literal["sqlite", "postgres"]

_NAME_RE = re.compile(r"(\d{4})_([a-z0-9_]+?)(?:\.(sqlite|postgres))?\.sql")

SCHEMA_VERSION_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Migration:
    """One numbered migration in one dialect."""

    version: int
    name: str
    sql: str


def migrations(dialect: Dialect) -> list[Migration]:
    """Return the migrations for ``dialect`` in version order.

    A dialect-specific file wins over a shared one of the same number; numbers
    must run 1, 2, 3… without gaps (a gap means a file went missing).
    """
    found: dict[int, tuple[bool, Migration]] = {}
    folder = resources.files("exchange.storage").joinpath("migrations")
    for item in folder.iterdir():
        match = _NAME_RE.fullmatch(item.name)
        if match is None or match.group(3) not in (None, dialect):
            continue
        version = int(match.group(1))
        specific = match.group(3) is not None
        migration = Migration(version=version, name=match.group(2), sql=item.read_text("utf-8"))
        if version not in found or specific:
            found[version] = (specific, migration)
    ordered = [found[v][1] for v in sorted(found)]
    for expected, migration in enumerate(ordered, start=1):
        if migration.version != expected:
            raise RuntimeError(
                f"internal error: migration {expected:04d} missing, found {migration.version:04d}"
            )
    return ordered


def known_version(dialect: Dialect) -> int:
    """Return the newest schema version this code knows for ``dialect``."""
    return len(migrations(dialect))


def pending(dialect: Dialect, database_version: int) -> list[Migration]:
    """Return the migrations to apply on top of ``database_version``.

    Raises :class:`SchemaTooNew` when the database is ahead of the code.
    """
    known = migrations(dialect)
    if database_version > len(known):
        raise SchemaTooNew(
            f"database schema version {database_version} is newer than this exchange "
            f"understands (version {len(known)}); upgrade exchange to a release that knows "
            f"schema {database_version}, or point it at a database made by this release",
            database_version=database_version, known_version=len(known),
        )
    return known[database_version:]


def split_statements(sql: str) -> list[str]:
    """Split a migration into statements (for drivers that run one at a time).

    Migrations are plain DDL and DML: statements end with ``;`` at end of line
    and contain no triggers, so a line-based split is exact. Comments go.
    """
    statements: list[str] = []
    current: list[str] = []
    for line in sql.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("--"):
            continue
        current.append(line)
        if stripped.endswith(";"):
            statements.append("\n".join(current))
            current = []
    if current:
        statements.append("\n".join(current))
    return statements


__all__ = [
    "SCHEMA_VERSION_DDL",
    "Dialect",
    "Migration",
    "known_version",
    "migrations",
    "pending",
    "split_statements",
]
