"""The rollback guard on its own (grows only, detects a shorter log and a different one),
and how PostgreSQL tools get their password."""

from __future__ import annotations

from pathlib import Path

import pytest

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.note import Ed25519Signer
from exchange.ops.rollback import (
    GUARD_FILE,
    LogRolledBack,
    find_rollback,
    read_published,
    record_published,
)
from exchange.ops.snapshot import pg_tool_args
from exchange.storage.sqlite_store import SqliteStore
from tests.unit.storage.helpers import entry_for, run

SIGNER = Ed25519Signer("exchange.test/log", bytes(range(32)))
VERIFIER = SIGNER.verifier()


def sign(size: int, root: bytes) -> bytes:
    return sign_checkpoint(Checkpoint(origin=SIGNER.name, size=size, root=root), SIGNER)


async def grow(store: SqliteStore, names: list[str]) -> None:
    for name in names:
        async with store.transaction("t") as tx:
            await tx.append_audit(entry_for(name))


def test_guard_grows_only_and_detects_rollback_and_divergence(tmp_path: Path) -> None:
    async def scenario() -> None:
        guard = tmp_path / "guard"
        guard.mkdir()
        first = await SqliteStore.open(tmp_path / "a", signer=sign)
        other = await SqliteStore.open(tmp_path / "b", signer=sign)
        try:
            assert await find_rollback(first, guard, VERIFIER) is None  # nothing recorded yet
            await grow(first, ["x", "y", "z"])
            small = await first.publish_checkpoint()
            record_published(guard, small, VERIFIER)
            await grow(first, ["w"])
            large = await first.publish_checkpoint()
            record_published(guard, large, VERIFIER)
            record_published(guard, small, VERIFIER)  # a slower process: ignored
            known = read_published(guard, VERIFIER)
            assert known is not None and known[0].size == 4
            assert await find_rollback(first, guard, VERIFIER) is None

            await grow(other, ["x", "y"])
            shorter = await find_rollback(other, guard, VERIFIER)
            assert shorter is not None and "2 entries the log had are missing" in shorter.reason
            await grow(other, ["different", "entries", "here"])
            diverged = await find_rollback(other, guard, VERIFIER)
            assert diverged is not None and "differ from the published ones" in diverged.reason

            record_published(guard, await other.publish_checkpoint(), VERIFIER, replace=True)
            assert await find_rollback(other, guard, VERIFIER) is None
        finally:
            await first.close()
            await other.close()

    run(scenario())


def test_guard_file_signed_by_another_key_is_refused(tmp_path: Path) -> None:
    stranger = Ed25519Signer("exchange.test/log", bytes(32))
    note = sign_checkpoint(Checkpoint(origin=stranger.name, size=1, root=bytes(32)), stranger)
    (tmp_path / GUARD_FILE).write_bytes(note)
    with pytest.raises(LogRolledBack, match="does not verify under the log key"):
        read_published(tmp_path, VERIFIER)


def test_pg_tools_get_the_password_from_the_environment() -> None:
    url, env = pg_tool_args("postgresql://exchange:s%40cret@db.example:5433/ex?sslmode=require")
    assert url == "postgresql://exchange@db.example:5433/ex?sslmode=require"
    assert env["PGPASSWORD"] == "s@cret"
    plain, _ = pg_tool_args("postgresql://exchange@[::1]/ex")
    assert plain == "postgresql://exchange@[::1]/ex"
    assert pg_tool_args("postgresql://u:p@[::1]:5432/x")[0] == "postgresql://u@[::1]:5432/x"
