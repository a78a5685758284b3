"""Transaction methods for retention and erasure (issue 19 part 3; migration ``0005_retention``).

Erasing an item moves it from ``evidence`` to ``erasures`` in the transaction
that appends its ``evidence.erase`` entry: the row (and the sealed manifest
in it) is gone once the entry is, never one without the other. The blob is
not in the database; the service deletes it after the commit and marks it
done here (``blob_deleted``), so a crash in between leaves a mark the next
sweep finishes. Shredding an epoch deletes its envelopes, which makes every
copy of that epoch's ciphertext unreadable, backups included.
"""

# S608: the only strings interpolated into SQL here are the module's own column-list constant.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exchange.storage.errors import NotFound, shown
from exchange.storage.metadata import EvidenceRecord, check_id, check_int, check_text

__all__ = ["Erasure", "ErasuresMixin"]

_ERASURE_COLS = ("evidence_id, case_id, blob_id, epoch, erased_at, reason, policy, "
                 "audit_index, blob_deleted")


@dataclass(frozen=True, slots=True, kw_only=True)
class Erasure:
    """What stays of an erased item: ids, the ciphertext hash, when, why, and its entry."""

    evidence_id: str
    case_id: str
    blob_id: str
    epoch: int
    erased_at: int
    reason: str
    policy: str | None
    audit_index: int
    blob_deleted: bool = False

    def __post_init__(self) -> None:
        check_id("evidence_id", self.evidence_id)
        check_id("case_id", self.case_id)
        check_text("reason", self.reason, 32)
        check_int("epoch", self.epoch)
        check_int("erased_at", self.erased_at)
        check_int("audit_index", self.audit_index)


def _erasure(row: Sequence[Any]) -> Erasure:
    return Erasure(evidence_id=row[0], case_id=row[1], blob_id=row[2], epoch=row[3],
                   erased_at=row[4], reason=row[5], policy=row[6], audit_index=row[7],
                   blob_deleted=bool(row[8]))


class ErasuresMixin:
    """The methods; the host class provides ``_exec`` and ``_fetch`` (see ``SqlTransaction``)."""

    async def _exec(self, sql: str, *args: object) -> int:
        raise NotImplementedError

    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def erase_evidence(self, record: EvidenceRecord, *, erased_at: int, reason: str,
                             policy: str | None, audit_index: int) -> Erasure:
        """Delete ``record`` (sealed manifest included) and keep its :class:`Erasure`."""
        if not await self._exec("DELETE FROM evidence WHERE id = ?", record.evidence_id):
            raise NotFound(f"unknown evidence {shown(record.evidence_id)}")
        erasure = Erasure(evidence_id=record.evidence_id, case_id=record.case_id,
                          blob_id=record.blob_id, epoch=record.epoch, erased_at=erased_at,
                          reason=reason, policy=policy, audit_index=audit_index)
        await self._exec(
            f"INSERT INTO erasures ({_ERASURE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0)",
            erasure.evidence_id, erasure.case_id, erasure.blob_id, erasure.epoch,
            erasure.erased_at, erasure.reason, erasure.policy, erasure.audit_index)
        return erasure

    async def get_erasure(self, evidence_id: str) -> Erasure:
        """Return an erased item's record; ``NotFound`` if it was never erased."""
        rows = await self._fetch(
            f"SELECT {_ERASURE_COLS} FROM erasures WHERE evidence_id = ?", evidence_id)
        if not rows:
            raise NotFound(f"no erasure of {shown(evidence_id)}")
        return _erasure(rows[0])

    async def pending_blob_deletions(self, limit: int = 1000) -> list[Erasure]:
        """Erasures whose blob is not yet deleted (a crash after the commit leaves some)."""
        rows = await self._fetch(
            f"SELECT {_ERASURE_COLS} FROM erasures WHERE blob_deleted = 0 "
            "ORDER BY audit_index LIMIT ?", limit)
        return [_erasure(r) for r in rows]

    async def mark_blob_deleted(self, evidence_id: str) -> None:
        """Record that the erased item's blob is gone (or shared with a live item, kept)."""
        await self._exec("UPDATE erasures SET blob_deleted = 1 WHERE evidence_id = ?",
                         evidence_id)

    async def blob_in_use(self, blob_id: str) -> bool:
        """Whether a live (not erased) item stores its ciphertext in ``blob_id``."""
        return bool(await self._fetch("SELECT 1 FROM evidence WHERE blob_id = ? LIMIT 1",
                                      blob_id))

    async def record_delivery(self, evidence_id: str, participant_id: str,
                              audit_index: int) -> None:
        """Remember ``participant_id``'s first complete download of ``evidence_id``."""
        await self._exec(
            "INSERT INTO deliveries (evidence_id, participant_id, audit_index) "
            "VALUES (?, ?, ?) ON CONFLICT DO NOTHING", evidence_id, participant_id, audit_index)

    async def delivered_to(self, evidence_id: str) -> set[str]:
        """The participants who completed a download of ``evidence_id``."""
        rows = await self._fetch(
            "SELECT participant_id FROM deliveries WHERE evidence_id = ?", evidence_id)
        return {str(r[0]) for r in rows}

    async def retained_case_ids(self) -> list[str]:
        """Cases that have live evidence (the sweep's candidates)."""
        rows = await self._fetch("SELECT DISTINCT case_id FROM evidence ORDER BY case_id")
        return [str(r[0]) for r in rows]

    async def erased_case_ids(self) -> list[str]:
        """Cases with an erased item (their old epochs may become shreddable)."""
        rows = await self._fetch("SELECT DISTINCT case_id FROM erasures ORDER BY case_id")
        return [str(r[0]) for r in rows]

    async def shreddable_epochs(self, case_id: str, below: int) -> list[int]:
        """Epochs under ``below`` whose items were all erased and whose envelopes remain."""
        rows = await self._fetch(
            "SELECT DISTINCT e.epoch FROM erasures e WHERE e.case_id = ? AND e.epoch < ? "
            "AND NOT EXISTS (SELECT 1 FROM evidence v WHERE v.case_id = e.case_id "
            "AND v.epoch = e.epoch) "
            "AND NOT EXISTS (SELECT 1 FROM shredded_epochs s WHERE s.case_id = e.case_id "
            "AND s.epoch = e.epoch) ORDER BY e.epoch", case_id, below)
        return [int(r[0]) for r in rows]

    async def shred_epoch(self, case_id: str, epoch: int, audit_index: int) -> int:
        """Delete every envelope of ``case_id``'s ``epoch``; return how many there were."""
        count = await self._exec("DELETE FROM envelopes WHERE case_id = ? AND epoch = ?",
                                 case_id, epoch)
        await self._exec("INSERT INTO shredded_epochs (case_id, epoch, audit_index) "
                         "VALUES (?, ?, ?)", case_id, epoch, audit_index)
        return count

    async def epoch_shredded(self, case_id: str, epoch: int) -> bool:
        """Whether ``epoch``'s envelopes were shredded."""
        return bool(await self._fetch(
            "SELECT 1 FROM shredded_epochs WHERE case_id = ? AND epoch = ?", case_id, epoch))
