"""Fixtures of the storage suite: one parametrised metadata backend (sqlite, postgres)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.storage.fs_blobs import FsBlobStore
from tests import pg
from tests.unit.storage.helpers import Backend


@pytest.fixture(scope="session", autouse=True)
def _stop_postgres() -> Iterator[None]:
    yield
    pg.stop()


@pytest.fixture
def pg_database() -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for this test; yields its DSN."""
    server = pg.server()
    name, dsn = asyncio.run(server.fresh())
    yield dsn
    asyncio.run(server.drop(name))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Either backend, on a fresh database."""
    if request.param == "postgres":
        dsn = request.getfixturevalue("pg_database")
        return Backend("postgres", tmp_path, dsn)
    return Backend("sqlite", tmp_path / "db")


@pytest.fixture
def blobs(tmp_path: Path) -> FsBlobStore:
    return FsBlobStore(tmp_path / "data")
