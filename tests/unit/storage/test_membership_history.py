"""Memberships on both backends: one active row per (case, participant) plus history rows.

Regression for migration 0003: the old primary key included ``added_at``, so a
participant removed and re-added within the same second hit ``AlreadyExists``.
Also checks that a schema-2 database keeps its membership rows when upgraded.
"""

from __future__ import annotations

import sqlite3

import asyncpg
import pytest

from exchange.storage import schema
from exchange.storage.errors import AlreadyExists, NotFound
from exchange.storage.metadata import Membership
from tests.unit.storage.helpers import Backend, run
from tests.unit.storage.test_metadata import seed


def _member(added_at: int, role: str = "reader") -> Membership:
    return Membership(case_id="case-1", participant_id="p-bob", role=role, added_at=added_at)


def test_remove_and_re_add_within_one_second(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
                await tx.add_member(_member(500))
                await tx.remove_member("case-1", "p-bob", 500)
                await tx.add_member(_member(500, role="editor"))  # same second: allowed
                assert (await tx.get_membership("case-1", "p-bob")).role == "editor"
                with pytest.raises(AlreadyExists):  # still one active membership
                    await tx.add_member(_member(500))
                await tx.remove_member("case-1", "p-bob", 500)
                with pytest.raises(NotFound):
                    await tx.remove_member("case-1", "p-bob", 500)
                await tx.add_member(_member(500))
            async with store.transaction() as tx:
                history = [(m.role, m.added_at, m.removed_at)
                           for m in await tx.list_members("case-1", include_removed=True)
                           if m.participant_id == "p-bob"]
                assert history == [("reader", 500, 500), ("editor", 500, 500),
                                   ("reader", 500, None)]
                assert [m.role for m in await tx.list_members("case-1")
                        if m.participant_id == "p-bob"] == ["reader"]

    run(body())


_ROWS = [  # (case, participant, role, added_at, removed_at) as schema 2 held them
    ("case-1", "p-alice", "owner", 100, None),
    ("case-1", "p-bob", "reader", 200, 250),
    ("case-1", "p-bob", "reader", 260, None),
]


async def _schema_2_database(backend: Backend) -> None:
    """Turn the backend's database into a schema-2 one holding ``_ROWS``."""
    statements = ["INSERT INTO participants VALUES ('{0}', 'prosecutor', 'o', 'FR', 'd', "
                  "{1}, 'age1', 'fp-{0}', 'active', 1, NULL)".format(
                      pid, "X'01'" if backend.name == "sqlite" else "'\\x01'::bytea")
                  for pid in ("p-alice", "p-bob")]
    statements.append("INSERT INTO cases VALUES ('case-1', {}, 'p-alice', 1)".format(
        "X'00'" if backend.name == "sqlite" else "'\\x00'::bytea"))
    statements += [
        "INSERT INTO memberships (case_id, participant_id, role, added_at, removed_at) "
        "VALUES ('{}', '{}', '{}', {}, {})".format(*row[:4], "NULL" if row[4] is None else row[4])
        for row in _ROWS
    ]
    if backend.name == "sqlite":
        db = sqlite3.connect(backend.path, isolation_level=None)
        try:
            db.execute(schema.SCHEMA_VERSION_DDL)
            for migration in schema.migrations("sqlite")[:2]:
                for statement in schema.split_statements(migration.sql):
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?, ?, 0)",
                           (migration.version, migration.name))
            for statement in statements:
                db.execute(statement)
        finally:
            db.close()
        return
    conn = await asyncpg.connect(backend.dsn)
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await conn.execute(schema.SCHEMA_VERSION_DDL)
        for migration in schema.migrations("postgres")[:2]:
            await conn.execute(migration.sql)
            await conn.execute("INSERT INTO schema_version VALUES ($1, $2, 0)",
                               migration.version, migration.name)
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def test_upgrade_from_schema_2_keeps_memberships(backend: Backend) -> None:
    async def body() -> None:
        await _schema_2_database(backend)
        async with backend.open() as store, store.transaction() as tx:
            rows = [(m.case_id, m.participant_id, m.role, m.added_at, m.removed_at)
                    for m in await tx.list_members("case-1", include_removed=True)]
            assert rows == _ROWS
            await tx.remove_member("case-1", "p-bob", 300)
            await tx.add_member(_member(300))  # the fixed behaviour, on upgraded data
            assert len(await tx.list_members("case-1", include_removed=True)) == 4

    run(body())
