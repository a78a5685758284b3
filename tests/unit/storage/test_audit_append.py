"""Transactional audit append: one prev chain under concurrency, group commit, checkpoints."""

from __future__ import annotations

import asyncio
import base64
import random
import subprocess
import sys

import pytest

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint, verify_checkpoint
from exchange.audit.entry import AuditEntry
from exchange.audit.note import Ed25519Signer
from exchange.audit.proof import (
    consistency_nodes,
    inclusion_nodes,
    verify_consistency,
    verify_inclusion,
)
from exchange.errors import AuditError, StorageError
from exchange.service.auditlog import inclusion_proof, inclusion_proofs
from exchange.storage.errors import InvalidValue, NotFound, ReplayedNonce, StoreClosed
from exchange.storage.metadata import MetadataStore
from tests.support import ROOT
from tests.unit.storage.helpers import Backend, entry_for, run, verify_log

ORIGIN = "exchange.test/log"


def test_concurrent_writers_make_one_chain(backend: Backend) -> None:
    """64 tasks append 2,000 entries, some units failing: no gaps, no forks, nothing lost."""
    rng = random.Random(1)
    failing = set(rng.sample(range(2000), 100))

    async def unit(store: MetadataStore, i: int) -> None:
        async with store.transaction("op") as tx:
            await tx.record_nonce("writer", f"n-{i}", 10**9)
            await tx.append_audit(entry_for(f"op-{i}"))
            if i in failing:
                raise LookupError(i)

    async def body() -> None:
        async with backend.open() as store:
            sem = asyncio.Semaphore(64)

            async def guarded(i: int) -> None:
                async with sem:
                    try:
                        await unit(store, i)
                    except LookupError:
                        assert i in failing

            await asyncio.gather(*(guarded(i) for i in range(2000)))
            entries = await verify_log(store)
            assert sorted(e.object or "" for e in entries) == sorted(
                f"op-{i}" for i in range(2000) if i not in failing)
            assert store.batches < 1900  # type: ignore[attr-defined]  (units were grouped)
            # each logged operation exists, each failed one left nothing behind
            async with store.transaction() as tx:
                for i in rng.sample(range(2000), 50):
                    if i in failing:
                        await tx.record_nonce("writer", f"n-{i}", 10**9)
                    else:
                        with pytest.raises(ReplayedNonce):
                            await tx.record_nonce("writer", f"n-{i}", 10**9)

    run(body())


def test_committed_unit_is_visible_to_another_store(backend: Backend) -> None:
    """Leaving the block means committed: a second connection sees the entry at once."""
    async def body() -> None:
        async with backend.open() as writer, backend.open() as reader:
            for i in range(5):
                async with writer.transaction() as tx:
                    appended = await tx.append_audit(entry_for(f"x-{i}"))
                assert appended.index == i
                assert await reader.tree_size() == i + 1

    run(body())


def test_entry_at_wrong_position_is_refused(backend: Backend) -> None:
    def wrong_index(index: int, prev: bytes, time: str) -> AuditEntry:
        return entry_for("x")(index + 1, prev, time)

    def wrong_prev(index: int, prev: bytes, time: str) -> AuditEntry:
        return entry_for("x")(index, bytes(32) if index else prev, time)

    def too_big(index: int, prev: bytes, time: str) -> AuditEntry:
        made = entry_for("x")(index, prev, time)
        return AuditEntry(**{**{f: getattr(made, f) for f in made.__dataclass_fields__},
                             "details": {f"k{i}": "v" * 4000 for i in range(20)}})

    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await tx.append_audit(entry_for("first"))
                with pytest.raises(InvalidValue):
                    await tx.append_audit(wrong_index)
                with pytest.raises(InvalidValue):
                    await tx.append_audit(wrong_prev)
                with pytest.raises((InvalidValue, AuditError)):
                    await tx.append_audit(too_big)
                await tx.append_audit(entry_for("second"))
            entries = await verify_log(store)
            assert [e.object for e in entries] == ["first", "second"]

    run(body())


def test_checkpoints_and_proofs_from_the_stored_tree(backend: Backend) -> None:
    log_key = Ed25519Signer.generate(ORIGIN)

    def signer(size: int, root: bytes) -> bytes:
        return sign_checkpoint(Checkpoint(ORIGIN, size, root), log_key)

    async def body() -> None:
        async with backend.open(signer=signer) as store:
            with pytest.raises(NotFound):
                await store.latest_checkpoint()
            kept = []
            for batch in (1, 6, 6, 13):
                for i in range(batch):
                    async with store.transaction() as tx:
                        await tx.append_audit(entry_for(f"e-{i}"))
                kept.append(await store.publish_checkpoint())
            assert [c.size for c in kept] == [1, 7, 13, 26]
            assert await store.publish_checkpoint() == kept[-1]  # idempotent per size
            assert await store.latest_checkpoint() == kept[-1]
            assert await store.checkpoint(7) == kept[1]
            with pytest.raises(NotFound):
                await store.checkpoint(8)
            assert await store.recent_checkpoints(2) == [kept[3], kept[2]]
            cosigned = kept[1].note + "\u2014 witness.test AAAAAQ==\n".encode()
            await store.replace_checkpoint_note(7, cosigned)
            assert (await store.checkpoint(7)).note == cosigned
            await store.replace_checkpoint_note(7, kept[1].note)
            for c in kept:
                body_ = verify_checkpoint(c.note, log_key.verifier(), origin=ORIGIN)
                assert (body_.size, body_.root) == (c.size, c.root_hash)
            latest = kept[-1]
            entries = await store.audit_entries(0, latest.size)
            for stored in entries:
                nodes = inclusion_nodes(stored.index, latest.size)
                proof = nodes.rehash(await store.node_hashes(nodes.ids))
                verify_inclusion(stored.leaf_hash, stored.index, latest.size, proof,
                                 latest.root_hash)
            # The sparse, batched read and the batched proofs agree with the one-by-one ones.
            picked = [25, 0, 7, 7, 300, 13]
            at = await store.audit_entries_at(picked)
            assert sorted(at) == [0, 7, 13, 25]
            assert all(at[i] == entries[i] for i in at)
            proofs = await inclusion_proofs(store, [0, 7, 13, 25], latest.size)
            for index, proof in proofs.items():
                one = await inclusion_proof(store, index, latest.size)
                assert [base64.b64encode(h).decode() for h in proof] == one["hashes"]
                verify_inclusion(entries[index].leaf_hash, index, latest.size, proof,
                                 latest.root_hash)
            for old in kept[:-1]:
                nodes = consistency_nodes(old.size, latest.size)
                proof = nodes.rehash(await store.node_hashes(nodes.ids))
                verify_consistency(old.size, latest.size, proof, old.root_hash,
                                   latest.root_hash)

    run(body())


def test_audit_reads_refuse_missing_data(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open(signer=None) as store:
            async with store.transaction() as tx:
                for i in range(3):
                    await tx.append_audit(entry_for(f"e-{i}"))
            with pytest.raises(NotFound):
                await store.audit_entries(2, 4)
            with pytest.raises(ValueError):
                await store.audit_entries(3, 1)
            with pytest.raises(NotFound):
                await store.node_hashes([(0, 0), (2, 0)])  # (2, 0) needs 4 leaves
            assert len(await store.node_hashes([(1, 0), (0, 2), (1, 0)])) == 3
            with pytest.raises(StorageError):
                await store.publish_checkpoint()  # no signer

    run(body())


def test_closed_store_refuses_work(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            pass
        with pytest.raises(StoreClosed):
            async with store.transaction():
                pass

    run(body())


def test_cancelled_waiter_does_not_stall_the_others(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            release = asyncio.Event()

            async def slow() -> None:
                async with store.transaction() as tx:
                    await tx.append_audit(entry_for("slow"))
                    await release.wait()

            async def quick(name: str) -> None:
                async with store.transaction() as tx:
                    await tx.append_audit(entry_for(name))

            first = asyncio.create_task(slow())
            await asyncio.sleep(0.05)
            doomed = asyncio.create_task(quick("doomed"))
            survivor = asyncio.create_task(quick("survivor"))
            await asyncio.sleep(0.05)
            doomed.cancel()
            release.set()
            await asyncio.gather(first, survivor)
            with pytest.raises(asyncio.CancelledError):
                await doomed
            assert [e.object for e in await verify_log(store)] == ["slow", "survivor"]

    run(body())


def test_nested_transaction_is_an_internal_error(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            with pytest.raises(RuntimeError, match="internal error"):
                async with store.transaction(), store.transaction():
                    pass
            async with store.transaction() as tx:  # the store still works
                await tx.append_audit(entry_for("after"))
            assert len(await verify_log(store)) == 1

    run(body())


def test_two_processes_append_to_one_postgres_log(pg_database: str) -> None:
    """Two OS processes, 16 writers each, 1,500 enrolments each: one verified log."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.unit.storage._worker", "enrol", "postgres",
             pg_database, tag, "1500", "16"], cwd=ROOT,
        )
        for tag in ("a", "b")
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0

    async def body() -> None:
        async with Backend("postgres", ROOT, pg_database).open() as store:
            entries = await verify_log(store)
            assert len(entries) == 3000
            async with store.transaction() as tx:
                ids = {p.participant_id for p in await tx.list_participants()}
            assert ids == {e.object for e in entries}

    run(body())
