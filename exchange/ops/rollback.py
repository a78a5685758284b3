"""The rollback guard: the server never silently continues a log older than one it published.

Every checkpoint the server publishes is also written to
``<data_dir>/published-checkpoint`` (outside the database, so restoring an
old database — or pointing the server at one — leaves it behind). At
start-up the database's log must extend that checkpoint: the same or a larger
tree, consistent with it (an RFC 6962 consistency proof from the database's
own node hashes). Otherwise ``exchange serve`` refuses to start with
:class:`LogRolledBack`, because clients and auditors who saw the newer
checkpoint would refuse the older log anyway (exit 3) and new entries would
fork the history they hold.

An administrator who restored a backup on purpose starts the server once with
``--accept-rollback``: the decision is appended to
``<data_dir>/rollback-decisions.jsonl`` (with both checkpoints, so the
evidence stays) and written to the operational log, and the guard then
follows the restored log.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from exchange.audit.checkpoint import Checkpoint, open_checkpoint
from exchange.audit.note import Ed25519Verifier
from exchange.audit.proof import ProofError, RootMismatch, consistency_nodes, verify_consistency
from exchange.errors import ExchangeError, StorageError
from exchange.fsutil import append_line, write_atomic
from exchange.storage.metadata import MetadataStore, StoredCheckpoint

__all__ = [
    "DECISIONS_FILE",
    "GUARD_FILE",
    "LOCK_FILE",
    "LogRolledBack",
    "Rollback",
    "find_rollback",
    "read_published",
    "record_decision",
    "record_published",
]

GUARD_FILE = "published-checkpoint"
DECISIONS_FILE = "rollback-decisions.jsonl"
LOCK_FILE = ".published-checkpoint.lock"


class LogRolledBack(StorageError):
    """The database's log does not extend the last checkpoint this server published."""

    problem_type = "log-rolled-back"


@dataclass(frozen=True, slots=True)
class Rollback:
    """What the guard found: the published checkpoint and the database's current tree."""

    published: Checkpoint
    published_note: bytes
    size: int
    root: bytes
    reason: str

    def message(self) -> str:
        """Return the refusal text naming both trees."""
        return (f"the database's audit log (size {self.size}) does not extend the checkpoint "
                f"this server last published (size {self.published.size}): {self.reason}")


@contextlib.contextmanager
def _locked(data_dir: Path) -> Iterator[None]:
    """Serialise guard updates of the processes sharing one data directory."""
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def read_published(data_dir: Path, verifier: Ed25519Verifier) -> tuple[Checkpoint, bytes] | None:
    """Return the last published checkpoint (verified under the log key), or None if none."""
    try:
        note = (Path(data_dir) / GUARD_FILE).read_bytes()
    except FileNotFoundError:
        return None
    try:
        return open_checkpoint(note, verifier).checkpoint, note
    except ExchangeError as err:
        raise LogRolledBack(
            f"{GUARD_FILE!r} in the data directory does not verify under the log key: {err}"
        ) from None


def record_published(data_dir: Path, checkpoint: StoredCheckpoint, verifier: Ed25519Verifier,
                     *, replace: bool = False) -> None:
    """Remember ``checkpoint`` as published, unless a larger one is remembered already.

    ``replace`` (after an accepted rollback) writes it whatever the size.
    """
    data_dir = Path(data_dir)
    with _locked(data_dir):
        if not replace:
            known = read_published(data_dir, verifier)
            if known is not None and known[0].size >= checkpoint.size:
                return
        write_atomic(data_dir / GUARD_FILE, checkpoint.note, mode=0o600)


async def find_rollback(store: MetadataStore, data_dir: Path,
                        verifier: Ed25519Verifier) -> Rollback | None:
    """Return the rollback when the store's log does not extend the published checkpoint."""
    known = read_published(data_dir, verifier)
    if known is None:
        return None
    published, note = known
    size, root = await store.root_hash()
    if size < published.size:
        return Rollback(published, note, size, root,
                        f"{published.size - size} entries the log had are missing (a restored "
                        "backup or another database)")
    try:
        nodes = consistency_nodes(published.size, size)
        proof = nodes.rehash(await store.node_hashes(nodes.ids))
        verify_consistency(published.size, size, proof, published.root, root)
    except (ProofError, RootMismatch, ExchangeError) as err:
        return Rollback(published, note, size, root,
                        f"the first {published.size} entries differ from the published ones "
                        f"({err}); the log was rewritten or this is another log")
    return None


def record_decision(data_dir: Path, rollback: Rollback, *, now: float | None = None) -> dict[
        str, object]:
    """Append the administrator's decision to continue from ``rollback`` to the decisions file.

    Returns the record written (also for the operational log).
    """
    record: dict[str, object] = {
        "time": int(time.time() if now is None else now),
        "decision": "accept-rollback",
        "published_size": rollback.published.size,
        "published_root": rollback.published.root.hex(),
        "published_checkpoint": rollback.published_note.decode("utf-8", "replace"),
        "database_size": rollback.size,
        "database_root": rollback.root.hex(),
        "reason": rollback.reason,
    }
    append_line(Path(data_dir) / DECISIONS_FILE,
                (json.dumps(record, sort_keys=True) + "\n").encode("utf-8"))
    return record
