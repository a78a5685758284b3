"""Group commit and audit-log reads shared by the SQLite and PostgreSQL stores.

Theory of operation. ``transaction()`` queues a unit of work for one sequencer
task per store. The sequencer takes every queued unit (up to ``max_batch``),
opens one database transaction holding the log's write lock (SQLite's
``BEGIN IMMEDIATE``; PostgreSQL's advisory lock), reads the log tail, then
runs the units one after another, each inside its own savepoint: the unit's
``async with`` body runs in the caller's task while the sequencer waits for it
to end, and a body that raises is rolled back to its savepoint (its audit
entries too) without disturbing the others. Then the buffered audit entries
are written, the transaction commits, and only then are the units' ``async
with`` blocks allowed to return: nothing is acknowledged before it is durable.

``run_unit(name, body)`` is the same unit without the two hand-overs: the
sequencer runs ``body(tx)`` itself, each step in the caller's context, so on
SQLite (whose statements run on the loop thread) a batch of such units runs
back to back in one turn of the event loop. With ``async with``, each unit
costs two turns (the caller's task wakes to run its body, then the sequencer
wakes to go on); under load a turn takes milliseconds, and a batch of fifty
units took 100-300 ms, which every unit queued behind it waited for (issue 17).

Batches are numbered as their ``COMMIT`` is sent (``_commits``); a store whose
``COMMIT`` is durable when it returns (PostgreSQL) acknowledges at once, one
that flushes after it (SQLite, ``_acknowledge``) when the flush is done, and the
next batch need not wait for that flush. ``wait_durable(n)`` returns once the
first ``n`` batches are durable: what a request read outside a unit leaves the
server only then (``exchange.storage.durability``).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from exchange.audit.tree import MerkleTree
from exchange.errors import ExchangeError, StorageError
from exchange.storage import waits
from exchange.storage._auditlog import AuditLog, unpack_frontier
from exchange.storage._sqltx import Row, SqlConn, SqlTransaction, fetch_participant
from exchange.storage.errors import NotFound, StoreClosed
from exchange.storage.metadata import (
    CheckpointSigner,
    NodeId,
    Participant,
    StoredCheckpoint,
    StoredEntry,
)

#: Units per database transaction: enough to amortise one fsync over many
#: operations, few enough that a batch stays short.
MAX_BATCH = 256
#: The most entries one ``audit_entries`` call returns (a tile's worth).
MAX_ENTRIES_PER_READ = 256

_inside_unit: contextvars.ContextVar[bool] = contextvars.ContextVar("_inside_unit", default=False)

T = TypeVar("T")
#: What :meth:`SqlStore.run_unit` runs: the unit's body, given its transaction.
UnitBody = Callable[[SqlTransaction], Coroutine[Any, Any, T]]


@dataclass(eq=False)
class _Unit:
    name: str
    granted: asyncio.Future[SqlTransaction]
    ended: asyncio.Future[bool]
    committed: asyncio.Future[None]
    extra: Callable[[SqlTransaction], None] | None = field(default=None)
    # A unit of run_unit: the body the sequencer runs, in the caller's context, and
    # what came of it (value, or the error it raised); when it began and ended.
    body: UnitBody[Any] | None = None
    context: contextvars.Context | None = None
    value: Any = None
    error: Exception | None = None
    started: float = 0.0
    ended_at: float = 0.0

    def abandon(self) -> None:
        if not self.granted.done():
            self.granted.cancel()
        if not self.ended.done():
            self.ended.set_result(False)

    def refuse(self, error: BaseException) -> None:
        """This unit will not run: tell its caller, who waits for its turn or, with a
        body (``run_unit``), for its commit."""
        if not self.granted.done():
            self.granted.set_exception(error)
            if self.body is not None:
                self.granted.exception()  # retrieved: run_unit's caller waits on committed
        if self.body is not None:
            _settle(self.committed, error)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


async def _run_body(unit: _Unit, tx: SqlTransaction) -> bool:
    """Run a :meth:`SqlStore.run_unit` body to its end; return whether it succeeded.

    Its value or error is kept in the unit for its caller.
    """
    assert unit.body is not None and unit.context is not None
    unit.started = time.perf_counter()
    try:
        unit.value = await _run_in_context(unit.context, unit.body, tx)
    except Exception as err:  # the caller's to raise; its writes are rolled back
        unit.error = err
        return False
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the sequencer itself is stopping: its own handler undoes the batch
        unit.committed.cancel()  # something the body awaited was cancelled: so is its caller
        return False
    finally:
        unit.ended_at = time.perf_counter()
    return True


async def _run_in_context(context: contextvars.Context, body: UnitBody[T],
                          tx: SqlTransaction) -> T:
    """Await ``body(tx)`` from this task, running each of its steps in ``context``.

    A coroutine is driven as an asyncio task drives one: a step runs until the
    body awaits a future that is not done; this task then waits for that
    future, and the next step resumes the body. A body whose awaits all
    complete at once (SQLite's statements) therefore runs in one go, with no
    turn of the event loop. ``_inside_unit`` is set in ``context``, so the body
    cannot open another unit. If this task is cancelled, the body is closed
    (its ``finally`` blocks run) and the cancellation goes on.
    """
    context.run(_inside_unit.set, True)
    coroutine = context.run(body, tx)
    try:
        while True:
            try:
                awaited = context.run(coroutine.send, None)
            except StopIteration as returned:
                return returned.value  # type: ignore[no-any-return]
            if awaited is None:  # a bare yield (asyncio.sleep(0)): let the loop turn once
                await asyncio.sleep(0)
            elif getattr(awaited, "_asyncio_future_blocking", False):
                awaited._asyncio_future_blocking = False
                await asyncio.wait((awaited,))
            else:
                raise RuntimeError(f"a unit of work awaited {awaited!r}, not an asyncio future")
    finally:
        context.run(coroutine.close)


class _UnitOfWork:
    """``async with store.transaction(name) as tx``: one unit in the next group commit.

    Entering queues the unit and waits for the sequencer to grant it a
    transaction (inside the batch, after its savepoint); leaving ends the body
    and waits until the batch is committed, so nothing is acknowledged before
    it is durable. A class rather than a generator-based context manager: every
    request opens one, and contextlib's wrapper around a generator cost about as
    many bytecodes as the unit's own bookkeeping.
    """

    __slots__ = ("_name", "_store", "_token", "_unit")

    def __init__(self, store: SqlStore, name: str) -> None:
        self._store = store
        self._name = name
        self._unit: _Unit | None = None
        self._token: contextvars.Token[bool] | None = None

    async def __aenter__(self) -> SqlTransaction:
        unit = self._store._enqueue(self._name)
        self._unit = unit
        asked = time.perf_counter()
        try:
            tx = await unit.granted
        except BaseException:
            unit.abandon()
            raise
        queued = time.perf_counter() - asked
        waits.add("lock", tx.opened_in_s)
        waits.add("queued", max(0.0, queued - tx.opened_in_s))
        self._token = _inside_unit.set(True)
        return tx

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: object,
    ) -> None:
        unit = self._unit
        assert unit is not None and self._token is not None
        _inside_unit.reset(self._token)
        if exc is not None:
            unit.abandon()
            if unit.committed.done() and not unit.committed.cancelled():
                unit.committed.exception()  # the sequencer failed it; the body's error wins
            return  # the body's error propagates
        if not unit.ended.done():  # done already when the sequencer failed meanwhile
            unit.ended.set_result(True)
        ended = time.perf_counter()
        try:
            await unit.committed
        finally:
            waits.add("commit", time.perf_counter() - ended)


class SqlStore:
    """The dialect-free half of a metadata store; subclasses supply connections.

    Subclasses implement ``_begin`` (open a write transaction holding the log's
    write lock and return its connection), ``_commit``, ``_rollback``,
    ``_reader`` (a read-only connection seeing committed data) and ``_shutdown``.
    ``clock`` gives Unix seconds; entry times and ``created_at`` come from it.
    """

    def __init__(
        self, *, signer: CheckpointSigner | None = None,
        clock: Callable[[], float] = time.time, max_batch: int = MAX_BATCH,
    ) -> None:
        self._signer = signer
        self._clock = clock
        self._max_batch = max_batch
        self._queue: deque[_Unit] = deque()
        self._wakeup = asyncio.Event()
        self._closed = False
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # committed batches, for benchmarks and tests
        self._commits = 0  # batches whose COMMIT was sent: what they wrote may be visible
        self._durable = 0  # every batch up to this number is durable
        self._durable_waiters: list[tuple[int, asyncio.Future[None]]] = []
        # Set when the database could not make committed work durable: nothing more is
        # accepted, since what was acknowledged and what is on disk may now differ.
        self._broken: StorageError | None = None

    # -- hooks -------------------------------------------------------------------

    async def _begin(self) -> SqlConn:
        raise NotImplementedError

    async def _commit(self) -> None:
        raise NotImplementedError

    async def _rollback(self) -> None:
        raise NotImplementedError

    def _reader(self) -> contextlib.AbstractAsyncContextManager[SqlConn]:
        raise NotImplementedError

    def _acknowledge(self, number: int, done: list[_Unit]) -> None:
        """Batch ``number`` committed: acknowledge its units once it is durable.

        Here at once: the ``COMMIT`` that returned was durable. A store that
        flushes after ``COMMIT`` overrides this.
        """
        self._mark_durable(number)
        for finished in done:
            _settle(finished.committed, None)

    # -- durability ------------------------------------------------------------------

    async def wait_durable(self, commit: int) -> None:
        """Return once the first ``commit`` batches are durable (see ``MetadataStore``)."""
        if commit <= self._durable:
            return
        if self._broken is not None:
            raise self._broken
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._durable_waiters.append((commit, future))
        await future

    def _mark_durable(self, number: int) -> None:
        """Every batch up to ``number`` is durable: release whoever waited for them."""
        if number <= self._durable:
            return
        self._durable = number
        waiting = self._durable_waiters
        self._durable_waiters = [(n, f) for n, f in waiting if n > number]
        for n, future in waiting:
            if n <= number and not future.done():
                future.set_result(None)

    def _fail_durability(self, error: StorageError) -> None:
        """Committed work could not be made durable: refuse everything from now on."""
        self._broken = error
        waiting, self._durable_waiters = self._durable_waiters, []
        for _, future in waiting:
            if not future.done():
                future.set_exception(error)

    async def _shutdown(self) -> None:
        raise NotImplementedError

    # -- units of work -------------------------------------------------------------

    def queued_units(self) -> int:
        """Return how many units of work wait for the next group commit (for metrics)."""
        return len(self._queue)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._sequencer(), name="sequencer")

    def transaction(self, name: str = "tx") -> _UnitOfWork:
        """Open a unit of work (see ``MetadataStore.transaction``)."""
        return _UnitOfWork(self, name)

    async def run_unit(self, name: str, body: UnitBody[T]) -> T:
        """Run ``body(tx)`` as one unit of work; return its value once committed durably.

        As ``async with transaction(name) as tx: return await body(tx)``, but
        the sequencer runs the body itself, each step in a copy of the
        caller's context (module notes: no hand-over to the caller's task and
        back). The body's error is raised here, its writes undone. Cancelled
        before its turn, the body never runs; once it has begun it runs to its
        end and commits, as an ``async with`` body past its last ``await`` would.
        """
        unit = self._enqueue(name, body=body, context=contextvars.copy_context())
        asked = time.perf_counter()
        try:
            await unit.committed
        except asyncio.CancelledError:
            unit.abandon()
            raise
        finally:
            if unit.started:
                opened_in_s = unit.granted.result().opened_in_s
                waits.add("lock", opened_in_s)
                waits.add("queued", max(0.0, unit.started - asked - opened_in_s))
                if unit.ended_at:
                    waits.add("commit", time.perf_counter() - unit.ended_at)
        return unit.value  # type: ignore[no-any-return]

    def _enqueue(self, name: str, *, body: UnitBody[Any] | None = None,
                 context: contextvars.Context | None = None) -> _Unit:
        """Queue a unit for the next batch and wake the sequencer; refuse when it cannot run."""
        if _inside_unit.get():
            raise RuntimeError("internal error: a transaction block opened another transaction")
        if self._closed or self._task is None:
            raise StoreClosed("the metadata store is closed")
        if self._task.done():
            raise StoreClosed(_STOPPED)
        if self._broken is not None:
            raise self._broken
        loop = asyncio.get_running_loop()
        unit = _Unit(name, loop.create_future(), loop.create_future(), loop.create_future(),
                     body=body, context=context)
        self._queue.append(unit)
        self._wakeup.set()
        return unit

    async def _sequencer(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._closed:
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                    continue
                batch: list[_Unit] = []
                while self._queue and len(batch) < self._max_batch:
                    batch.append(self._queue.popleft())
                await self._run_batch(batch)
        except BaseException:
            # Cancelled (event-loop teardown, a task group) or interrupted: no
            # one will serve the queue again, so every waiting unit fails now
            # and ``transaction()`` refuses new ones instead of waiting forever.
            while self._queue:
                queued = self._queue.popleft()
                queued.refuse(StoreClosed(_STOPPED))
            raise

    async def _run_batch(self, batch: list[_Unit]) -> None:
        unit: _Unit | None
        began = time.perf_counter()
        try:
            conn = await self._begin()
            log = await AuditLog.load(conn)
        except Exception as err:
            error = _as_storage_error(err, "failed to begin a write transaction")
            with contextlib.suppress(Exception):
                await self._rollback()
            for queued in batch:
                queued.refuse(error)
            return
        opened_in_s = time.perf_counter() - began
        done: list[_Unit] = []
        remaining = deque(batch)
        unit = None
        tx: SqlTransaction | None = None
        # One round trip per unit boundary: the previous unit's RELEASE travels
        # with the next unit's SAVEPOINT, and COMMIT ends the last one.
        boundary = "SAVEPOINT unit"
        number = 0  # this batch's number, once its COMMIT is sent
        try:
            while remaining:
                unit = remaining.popleft()
                if unit.granted.done():  # the caller went away before its turn
                    continue
                mark = log.mark()
                if boundary:
                    await conn.script(boundary)
                tx = SqlTransaction(conn, log, entry_time(self._clock()), unit.name)
                tx.opened_in_s = opened_in_s
                unit.granted.set_result(tx)
                ok = await (unit.ended if unit.body is None else _run_body(unit, tx))
                tx.active = False
                if ok and not conn.failed:
                    boundary = "RELEASE SAVEPOINT unit; SAVEPOINT unit"
                    done.append(unit)
                else:
                    # The savepoint survives ROLLBACK TO, empty: the next unit reuses it.
                    await conn.script("ROLLBACK TO SAVEPOINT unit")
                    boundary = ""
                    log.reset(mark)
                    if ok:  # the body swallowed a database error: it must not commit
                        _settle(unit.committed, StorageError(
                            f"transaction {unit.name!r} hit a database error and was undone"
                        ))
                    elif unit.error is not None:  # run_unit's caller gets its body's error
                        _settle(unit.committed, unit.error)
                    conn.failed = False
                unit = None
            await log.flush(conn)
            self._commits += 1
            number = self._commits
            await self._commit()
        except BaseException as err:
            error = _as_storage_error(err, "failed to commit a write transaction")
            if not isinstance(err, Exception):
                # The sequencer itself is being cancelled: its callers are not,
                # and must learn that their work was undone, not be cancelled.
                error = StoreClosed(f"{_STOPPED}; the transaction was rolled back")
            if tx is not None and tx.active:
                tx.active = False  # the body may still run: never outside a transaction
                tx.aborted = True
            with contextlib.suppress(Exception):
                await self._rollback()
            if unit is not None:
                if not unit.granted.done():
                    unit.granted.set_exception(error)
                unit.abandon()
                _settle(unit.committed, error)
            for finished in done:
                _settle(finished.committed, error)
            # Units that never got their turn did nothing yet: queue them again.
            self._queue.extendleft(reversed([u for u in remaining if not u.granted.done()]))
            if not isinstance(err, Exception):
                raise
            if number:  # a reader may have noted this number: let it be passed
                self._acknowledge(number, [])
            return
        self.batches += 1
        self._acknowledge(number, done)

    async def close(self) -> None:
        """Finish queued units, stop the sequencer and release connections."""
        if self._closed:
            return
        self._closed = True
        self._wakeup.set()
        task = self._task
        if task is not None:
            if not task.done():
                await asyncio.wait((task,))  # a cancelled sequencer does not cancel close()
            if not task.cancelled():
                task.exception()  # retrieved; its units were failed already
        await self._shutdown()
        # A batch cut short by cancellation was never flushed: no one may wait for it.
        self._fail_durability(StoreClosed("the metadata store is closed"))

    # -- authentication outside the log's order ---------------------------------------

    async def get_participant(self, participant_id: str) -> Participant:
        """Return the participant as last committed; ``NotFound`` if unknown.

        Read outside any unit, so authenticating a request never waits for the
        group commit: requests that are authenticated without being logged
        (checkpoint and tile reads, the gate before an upload's PATCH) stay
        fast while the writer is busy.
        """
        async with self._reader() as conn:
            return await fetch_participant(conn, participant_id)

    async def record_nonce(self, keyid: str, nonce: str, expires_at: int) -> None:
        """Spend a request nonce durably; ``ReplayedNonce`` if this key used it before.

        Here a unit of its own (SQLite has one writer); PostgreSQL overrides it
        with a single autocommitted insert beside the group commit.
        """
        async def unit(tx: SqlTransaction) -> None:
            await tx.record_nonce(keyid, nonce, expires_at)

        await self.run_unit("nonce", unit)

    # -- checkpoints -----------------------------------------------------------------

    async def publish_checkpoint(self) -> StoredCheckpoint:
        """Sign and keep a checkpoint of the tree (see ``MetadataStore.publish_checkpoint``)."""
        if self._signer is None:
            raise StorageError("this store was opened without a checkpoint signer")
        signer = self._signer

        async def unit(tx: SqlTransaction) -> StoredCheckpoint:
            return await self._keep_checkpoint(tx._conn, signer, tx._audit.size,
                                               tx._audit.root())

        return await self.run_unit("publish_checkpoint", unit)

    async def _keep_checkpoint(self, conn: SqlConn, signer: CheckpointSigner, size: int,
                               root: bytes) -> StoredCheckpoint:
        """Return the checkpoint kept for ``size``, signing and keeping ``root`` if none is.

        ``(size, root)`` must be a committed state of the tree. A checkpoint of
        the same size kept meanwhile (another process) wins: it is returned.
        """
        made = StoredCheckpoint(size=size, root_hash=root, note=signer(size, root),
                                created_at=int(self._clock()))
        if await conn.execute(
            "INSERT INTO audit_checkpoints (size, root_hash, note, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            made.size, made.root_hash, made.note, made.created_at,
        ):
            return made
        kept = await _kept_checkpoint(conn, size)
        if kept is None:
            raise StorageError(f"the checkpoint of size {size} was not kept")
        return kept

    async def recent_checkpoints(self, limit: int) -> list[StoredCheckpoint]:
        """Return up to ``limit`` kept checkpoints, largest size first."""
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT size, root_hash, note, created_at FROM audit_checkpoints "
                "ORDER BY size DESC LIMIT ?", limit,
            )
        return [_checkpoint(row) for row in rows]

    async def replace_checkpoint_note(self, size: int, note: bytes) -> None:
        """Replace the kept note of ``size`` (the same checkpoint with more cosignatures)."""
        async with self.transaction("add_cosignatures") as tx:
            await tx._conn.execute(
                "UPDATE audit_checkpoints SET note = ? WHERE size = ?", note, size)

    async def latest_checkpoint(self) -> StoredCheckpoint:
        """Return the largest kept checkpoint; ``NotFound`` if none."""
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT size, root_hash, note, created_at FROM audit_checkpoints "
                "ORDER BY size DESC LIMIT 1"
            )
        if not rows:
            raise NotFound("no checkpoint has been published yet")
        return _checkpoint(rows[0])

    async def checkpoint(self, size: int) -> StoredCheckpoint:
        """Return the kept checkpoint for ``size``; ``NotFound`` if none."""
        async with self._reader() as conn:
            kept = await _kept_checkpoint(conn, size)
        if kept is None:
            raise NotFound(f"no checkpoint kept for tree size {size}")
        return kept

    # -- audit reads -------------------------------------------------------------------

    async def tree_size(self) -> int:
        """Return the committed tree size."""
        async with self._reader() as conn:
            rows = await conn.fetch("SELECT size FROM audit_state")
        return int(rows[0][0])

    async def root_hash(self) -> tuple[int, bytes]:
        """Return the committed (tree size, root hash)."""
        async with self._reader() as conn:
            rows = await conn.fetch("SELECT size, frontier FROM audit_state")
        size, frontier = int(rows[0][0]), unpack_frontier(bytes(rows[0][1]))
        return size, MerkleTree.from_state(size, frontier).root()

    async def audit_entries(self, start: int, end: int) -> list[StoredEntry]:
        """Return entries ``[start, end)`` (at most ``MAX_ENTRIES_PER_READ``)."""
        if not 0 <= start <= end or end - start > MAX_ENTRIES_PER_READ:
            raise ValueError(
                f"entry range [{start}, {end}) must be ascending and at most "
                f"{MAX_ENTRIES_PER_READ} long"
            )
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT idx, entry, leaf_hash FROM audit_entries WHERE idx >= ? AND idx < ? "
                "ORDER BY idx", start, end,
            )
        if len(rows) != end - start:
            raise NotFound(f"entries [{start}, {end}) reach past the tree size")
        return [StoredEntry(index=r[0], entry=bytes(r[1]), leaf_hash=bytes(r[2])) for r in rows]

    async def audit_entries_at(self, indexes: Sequence[int]) -> dict[int, StoredEntry]:
        """Return the committed entries at ``indexes`` by index (absent ones left out)."""
        async with self._reader() as conn:
            rows = await _fetch_in(
                conn, "SELECT idx, entry, leaf_hash FROM audit_entries WHERE idx IN (",
                "CAST(? AS BIGINT)", [(index,) for index in sorted(set(indexes))])
        return {r[0]: StoredEntry(index=r[0], entry=bytes(r[1]), leaf_hash=bytes(r[2]))
                for r in rows}

    async def evidence_blobs(
        self, after: str = "", limit: int = MAX_ENTRIES_PER_READ,
    ) -> list[tuple[str, str, int]]:
        """Return up to ``limit`` (evidence id, blob id, ciphertext size), ids after ``after``.

        For ``exchange server check`` and backups, which walk every evidence
        record page by page (keyset pagination: flat memory however many).
        """
        async with self._reader() as conn:
            rows = await conn.fetch(
                "SELECT id, blob_id, ciphertext_size FROM evidence WHERE id > ? "
                "ORDER BY id LIMIT ?", after, limit,
            )
        return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]

    async def node_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Return the hashes of full-subtree nodes ``ids`` in order; ``NotFound`` if missing."""
        if not ids:
            return []
        async with self._reader() as conn:
            rows = await _fetch_in(
                conn, "SELECT level, idx, hash FROM audit_nodes WHERE (level, idx) IN (VALUES ",
                "(CAST(? AS INTEGER), CAST(? AS BIGINT))", sorted(set(ids)))
        found = {(r[0], r[1]): bytes(r[2]) for r in rows}
        missing = [node for node in ids if node not in found]
        if missing:
            raise NotFound(f"tree node {missing[0]} is not stored")
        return [found[node] for node in ids]


_STOPPED = "the metadata store's writer was stopped (cancelled); reopen the store"


def entry_time(unix_s: float) -> str:
    """Return ``unix_s`` as an audit-entry time: RFC 3339 UTC with microseconds."""
    moment = datetime.datetime.fromtimestamp(unix_s, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def _fetch_in(conn: SqlConn, head: str, one: str,
                    keys: Sequence[tuple[object, ...]]) -> list[Row]:
    """Return the rows of ``head`` followed by ``one`` per key and ``)``, 100 keys a query.

    Only placeholders are interpolated; the keys' values travel as parameters.
    """
    rows: list[Row] = []
    for start in range(0, len(keys), 100):
        chunk = keys[start : start + 100]
        sql = head
        sql += ", ".join(one for _ in chunk) + ")"
        rows += await conn.fetch(sql, *[value for key in chunk for value in key])
    return rows


async def _kept_checkpoint(conn: SqlConn, size: int) -> StoredCheckpoint | None:
    rows = await conn.fetch(
        "SELECT size, root_hash, note, created_at FROM audit_checkpoints WHERE size = ?", size)
    return _checkpoint(rows[0]) if rows else None


def _checkpoint(row: Row) -> StoredCheckpoint:
    return StoredCheckpoint(size=int(row[0]), root_hash=bytes(row[1]), note=bytes(row[2]),
                            created_at=int(row[3]))


def _as_storage_error(err: BaseException, message: str) -> BaseException:
    if isinstance(err, ExchangeError) or not isinstance(err, Exception):
        return err
    wrapped = StorageError(message)
    wrapped.__cause__ = err
    return wrapped


__all__ = ["MAX_BATCH", "MAX_ENTRIES_PER_READ", "SqlStore", "entry_time"]
