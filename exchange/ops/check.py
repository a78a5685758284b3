"""``exchange server check``: is this data directory whole? (after ``restic check``).

Checks, each of which can fail on its own:

* the database schema is the one this release knows (nothing pending);
* the audit log verifies: every entry up to the latest signed checkpoint is
  read from the database and run through the offline verifier
  (``exchange.audit.verify``: chain, Merkle root against the checkpoint
  signed by the log key, request signatures against enrolled keys);
* whether the log extends the checkpoint this data directory last published
  (the rollback guard): reported as ``rollback``, not as a problem, because
  right after restoring a backup it is expected, and ``exchange serve`` is
  where it is decided (refused unless ``--accept-rollback``);
* every blob file hashes to its address (a bit flip, a truncated copy);
* every evidence record has its blob, of the recorded size.

Blobs no evidence record names (an upload promoted but never committed) are
counted, not reported as errors. The check only reads; it never migrates,
publishes or repairs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from exchange.audit.note import Ed25519Verifier, parse_verifier_key
from exchange.audit.verify import verify_log
from exchange.config import ServerConfig
from exchange.errors import ExchangeError
from exchange.ops.logkey import RotationError, read_rotations
from exchange.ops.rollback import find_rollback
from exchange.ops.schema_status import schema_status
from exchange.storage._sqlstore import MAX_ENTRIES_PER_READ
from exchange.storage.blobs import BlobStore
from exchange.storage.errors import BlobCorrupt, BlobNotFound, NotFound
from exchange.storage.open_blobs import close_blob_store, open_blob_store
from exchange.transport.server import open_store

__all__ = ["CheckReport", "check_server"]


@dataclass(slots=True)
class CheckReport:
    """What the check looked at and every problem it found."""

    schema_version: int = 0
    entries: int = 0
    checkpoint_size: int | None = None
    unsigned_entries: int = 0
    blobs: int = 0
    blob_bytes: int = 0
    evidence: int = 0
    unreferenced_blobs: int = 0
    outdated_schema: bool = False
    rollback: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """Return the report for ``--json`` output."""
        return {
            "ok": self.ok, "schema_version": self.schema_version, "entries": self.entries,
            "checkpoint_size": self.checkpoint_size, "unsigned_entries": self.unsigned_entries,
            "blobs": self.blobs, "blob_bytes": self.blob_bytes, "evidence": self.evidence,
            "unreferenced_blobs": self.unreferenced_blobs, "rollback": self.rollback,
            "problems": list(self.problems),
        }


def _entries(store: Any, size: int, loop: asyncio.AbstractEventLoop) -> Iterator[bytes]:
    """Yield entries [0, size) page by page, fetched on ``loop`` (called from a worker thread)."""
    for start in range(0, size, MAX_ENTRIES_PER_READ):
        end = min(size, start + MAX_ENTRIES_PER_READ)
        page = asyncio.run_coroutine_threadsafe(store.audit_entries(start, end), loop).result()
        for stored in page:
            yield stored.entry


async def _check_log(store: Any, config: ServerConfig, verifier: Ed25519Verifier,
                     report: CheckReport) -> None:
    try:
        latest = await store.latest_checkpoint()
    except NotFound:
        report.problems.append("audit log: no signed checkpoint is kept in the database")
        return
    report.checkpoint_size = latest.size
    size = await store.tree_size()
    report.unsigned_entries = max(0, size - latest.size)
    loop = asyncio.get_running_loop()
    # After rotations the log starts with the first key; each transition introduces the next.
    rotations = read_rotations(config.data_dir)
    first = parse_verifier_key(rotations[0].old_key) if rotations else verifier
    if not isinstance(first, Ed25519Verifier):
        raise RotationError("log-keys.jsonl names a first log key that is not Ed25519")
    result = await asyncio.to_thread(
        lambda: verify_log(_entries(store, min(size, latest.size), loop), first, latest.note,
                           rotations=[r.note for r in rotations]))
    report.entries = result.entries
    report.problems.extend(f"audit log: {finding}" for finding in result.findings)
    rollback = await find_rollback(store, config.data_dir, verifier)
    if rollback is not None:
        report.rollback = rollback.message()


async def _check_blobs(store: Any, blobs: BlobStore, report: CheckReport) -> None:
    good: set[str] = set()
    async for listed in blobs.list_blobs():
        blob_id = listed.blob_id
        report.blobs += 1
        try:
            info = await blobs.verify(blob_id)
        except BlobCorrupt as err:
            report.problems.append(f"blob {blob_id}: content hashes to {err.found_sha256}")
            continue
        report.blob_bytes += info.size
        good.add(blob_id)
    named: set[str] = set()
    after = ""
    while page := await store.evidence_blobs(after):
        for evidence_id, blob_id, size in page:
            after = evidence_id
            report.evidence += 1
            named.add(blob_id)
            try:
                found = (await blobs.stat(blob_id)).size
            except BlobNotFound:
                report.problems.append(f"evidence {evidence_id}: its blob {blob_id} is missing")
                continue
            if blob_id not in good:
                report.problems.append(f"evidence {evidence_id}: its blob {blob_id} is damaged")
            elif found != size:
                report.problems.append(f"evidence {evidence_id}: blob {blob_id} has {found} "
                                       f"bytes, the record says {size}")
    report.unreferenced_blobs = len(good - named)


async def check_server(config: ServerConfig, verifier: Ed25519Verifier) -> CheckReport:
    """Check the data directory and database of ``config``; see the module docstring."""
    report = CheckReport()
    status = await schema_status(config)
    report.schema_version = status.version
    if not status.current:
        report.outdated_schema = True
        report.problems.append(f"{status.describe()}: run 'exchange server migrate' first")
        return report
    store = await open_store(config, None)
    try:
        try:
            await _check_log(store, config, verifier, report)
        except ExchangeError as err:
            report.problems.append(f"audit log: cannot be read: {err}")
        blobs = await open_blob_store(
            config.data_dir, config.blob_store, s3_endpoint=config.s3_endpoint,
            s3_region=config.s3_region, s3_credentials_file=config.s3_credentials_file)
        try:
            await _check_blobs(store, blobs, report)
        finally:
            await close_blob_store(blobs)
    finally:
        await store.close()
    return report
