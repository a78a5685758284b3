"""Versioned migrations: applied once at start-up, recorded, newer schemas refused."""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from exchange.storage import schema
from exchange.storage.errors import SchemaTooNew
from tests.unit.storage.helpers import Backend, run


def test_migrations_are_numbered_without_gaps() -> None:
    for dialect in ("sqlite", "postgres"):
        found = schema.migrations(dialect)  # type: ignore[arg-type]
        assert [m.version for m in found] == list(range(1, len(found) + 1))
        assert schema.known_version(dialect) == len(found)  # type: ignore[arg-type]
        assert all(s.rstrip().endswith(";") for s in schema.split_statements(found[0].sql))


def test_pending_on_a_newer_database_is_refused() -> None:
    known = schema.known_version("sqlite")
    assert schema.pending("sqlite", known) == []
    with pytest.raises(SchemaTooNew) as caught:
        schema.pending("sqlite", known + 1)
    assert caught.value.database_version == known + 1
    assert "upgrade exchange" in str(caught.value)


async def _versions(backend: Backend) -> list[int]:
    if backend.name == "sqlite":
        with sqlite3.connect(backend.path) as db:
            return [r[0] for r in db.execute("SELECT version FROM schema_version ORDER BY 1")]
    conn = await asyncpg.connect(backend.dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT version FROM schema_version ORDER BY 1")]
    finally:
        await conn.close()


async def _set_version(backend: Backend, version: int) -> None:
    sql = "INSERT INTO schema_version (version, name, applied_at) VALUES ({}, 'future', 0)"
    if backend.name == "sqlite":
        with sqlite3.connect(backend.path) as db:
            db.execute(sql.format(version))
        return
    conn = await asyncpg.connect(backend.dsn)
    try:
        await conn.execute(sql.format(version))
    finally:
        await conn.close()


def test_start_up_migrates_once_and_refuses_a_newer_schema(backend: Backend) -> None:
    known = schema.known_version("sqlite")

    async def body() -> None:
        async with backend.open():
            pass
        async with backend.open():  # reopening applies nothing again
            pass
        assert await _versions(backend) == list(range(1, known + 1))
        await _set_version(backend, known + 1)
        with pytest.raises(SchemaTooNew) as caught:
            async with backend.open():
                pass
        assert caught.value.known_version == known

    run(body())
