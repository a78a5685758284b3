"""Helpers for the storage tests: a fake clock, a test signer, entry factories, log checks."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from exchange.audit.entry import AuditEntry, entry_hash, parse_entry
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.storage.metadata import MetadataStore
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore, flush_wal

T = TypeVar("T")
ZERO = bytes(32)


def run(coro: Awaitable[T]) -> T:
    """Run one coroutine to completion on a fresh event loop."""
    async def main() -> T:
        return await coro

    return asyncio.run(main())


#: Generous for a wait that would otherwise hang: every wait here is milliseconds.
LIMIT_S = 10


class GatedFlush:
    """A SQLite WAL flush (``SqliteStore.open(flush=...)``) held until ``open()``; counts calls."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self.calls = 0
        self.started = threading.Semaphore(0)
        self.failure: OSError | None = None

    def open(self) -> None:
        self._open.set()

    def __call__(self, path: Path) -> None:
        self.calls += 1
        self.started.release()
        if not self._open.wait(LIMIT_S):
            raise TimeoutError("the test never opened the gate")
        if self.failure is not None:
            raise self.failure
        flush_wal(path)

    async def reached(self) -> None:
        """Wait until one more flush has reached the gate."""
        assert await asyncio.to_thread(self.started.acquire, True, LIMIT_S)


class FakeClock:
    """A settable clock returning Unix seconds."""

    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_signer(size: int, root: bytes) -> bytes:
    """A stand-in checkpoint signer: deterministic bytes naming size and root."""
    return b"test-log\n%d\n%s\n" % (size, root.hex().encode())


def entry_for(obj: str, *, action: str = "case.list", actor: str = "alice") -> Callable[
    [int, bytes, str], AuditEntry
]:
    """Return a ``make_entry`` that logs ``action`` on ``obj``."""
    def make(index: int, prev: bytes, time: str) -> AuditEntry:
        return AuditEntry(
            index=index, time=time, actor=actor, actor_key="", action=action, case=None,
            object=obj, outcome="ok", reason=None, request=None, details={}, prev=prev,
        )

    return make


async def verify_log(store: MetadataStore) -> list[AuditEntry]:
    """Check the stored log with the audit core: no gaps, one prev chain, root matches.

    Returns the parsed entries.
    """
    size, root = await store.root_hash()
    tree = MerkleTree()
    prev = ZERO
    entries: list[AuditEntry] = []
    for start in range(0, size, 256):
        for stored in await store.audit_entries(start, min(size, start + 256)):
            entry = parse_entry(stored.entry)
            assert entry.index == stored.index == len(entries), "gap or duplicate in the log"
            assert entry.prev == prev, f"prev chain broken at {entry.index}"
            assert stored.leaf_hash == leaf_hash(stored.entry)
            tree.append(stored.leaf_hash)
            prev = entry_hash(stored.entry)
            entries.append(entry)
    assert tree.size == size
    assert tree.root() == root, "recomputed root differs from the stored root"
    return entries


@dataclass
class Backend:
    """Opens metadata stores of one backend on one test database."""

    name: str
    path: Path
    dsn: str = ""
    clock: FakeClock = field(default_factory=FakeClock)

    @contextlib.asynccontextmanager
    async def open(self, **kwargs: Any) -> AsyncIterator[MetadataStore]:
        kwargs.setdefault("signer", test_signer)
        kwargs.setdefault("clock", self.clock)
        store: SqliteStore | PostgresStore
        if self.name == "sqlite":
            store = await SqliteStore.open(self.path, **kwargs)
        else:
            store = await PostgresStore.open(self.dsn, **kwargs)
        try:
            yield store
        finally:
            await store.close()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Ticker:
    """Counts the event loop's turns while it runs."""

    def __init__(self) -> None:
        self.turns = 0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        while True:
            self.turns += 1
            await asyncio.sleep(0)

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
