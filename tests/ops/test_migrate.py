"""``server migrate`` on PostgreSQL, and databases newer than this release.

The PostgreSQL database is brought to schema N-1 with the project's own
numbered migrations (the way an older release left it), then upgraded.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg

from exchange.config import write_config_file
from exchange.storage import schema
from tests import pg
from tests.ops.test_backup_restore import cli
from tests.server_harness import deployed, run


def test_migrate_postgres_from_the_previous_schema(tmp_path: Path) -> None:
    name, dsn = run(_empty(pg.server()))
    try:
        known = schema.known_version("postgres")
        run(_apply_until(dsn, known - 1))
        data = tmp_path / "data"
        data.mkdir(mode=0o700)
        write_config_file(data, {"origin": "exchange.test/log", "database_url": dsn})

        dry = cli("server", "migrate", "--data-dir", str(data), "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        status = json.loads(dry.stdout)
        assert (status["dialect"], status["version"], status["known"]) == (
            "postgres", known - 1, known)
        assert len(status["pending"]) == 1
        assert run(_version(dsn)) == known - 1

        done = cli("server", "migrate", "--data-dir", str(data), "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["applied"] == status["pending"]
        assert run(_version(dsn)) == known
    finally:
        run(pg.server().drop(name))


def test_newer_database_is_refused_by_migrate_and_serve(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    with deployed(tmp_path / "s", "sqlite") as d:
        data = d.data_dir
    db = sqlite3.connect(data / "exchange.sqlite3")
    try:
        db.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (99, 'x', 0)")
        db.commit()
    finally:
        db.close()
    for args in (["server", "migrate", "--data-dir", str(data)],
                 ["serve", "--data-dir", str(data), "--port", "0"]):
        result = cli(*args)
        assert result.returncode == 1, result.stderr
        assert "database schema version 99 is newer than this exchange understands" in \
            result.stderr


async def _empty(server: Any) -> tuple[str, str]:
    name = f"{server.prefix}migrate_{id(server) % 100000}"
    admin = await asyncpg.connect(server.admin_dsn)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
    finally:
        await admin.close()
    return name, server.dsn(name)


async def _apply_until(dsn: str, version: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(schema.SCHEMA_VERSION_DDL)
        for migration in schema.migrations("postgres")[:version]:
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO schema_version (version, name, applied_at) "
                               "VALUES ($1, $2, 0)", migration.version, migration.name)
    finally:
        await conn.close()


async def _version(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT max(version) FROM schema_version"))
    finally:
        await conn.close()
