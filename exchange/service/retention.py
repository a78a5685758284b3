"""Retention enforcement and erasure (issue 19 part 3).

Theory of operation. A case's retention policy is a signed ``case.policy``
statement (``exchange.crypto.chains.check_retention``); the rule that makes
an item due is ``exchange.audit.retention.due_reason``, shared with the
verifier. Two paths erase:

* the sweep (:func:`sweep`, run periodically by the server and once by
  ``exchange server sweep``) erases every due item, one transaction per
  item: the evidence row (its sealed manifest with it) leaves for the
  ``erasures`` table in the transaction that appends the item's
  ``evidence.erase`` entry, a server-originated entry naming the item and
  the hash of the policy statement that made it due;
* an owner's erase-now (:func:`erase_op`, ``POST /v1/cases/{cid}/erase``):
  the owner's signed request is the ``case.erase`` entry and every item it
  erases gets its own ``evidence.erase`` entry citing it, all in one
  transaction. A legal hold refuses it (409 ``legal-hold``).

Blobs are not in the database: they are deleted after the commit
(:func:`delete_blobs`), and an erasure whose blob is not yet marked deleted
is finished by the next sweep. Crypto-shredding: once every item of an
epoch older than the current one is erased, the epoch's envelopes are
deleted (an ``envelope.shred`` entry), so a copy of its ciphertext kept
anywhere, a backup included, can no longer be decrypted. The current
epoch is shredded after the next rotation (``exchange case erase`` rotates
first for that reason).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exchange.audit.entry import UNKNOWN_ACTOR, AuditEntry, DetailValue
from exchange.audit.retention import REASON_OWNER, due_reason, on_hold
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.chains import CaseState
from exchange.crypto.statement import case_chain
from exchange.errors import ExchangeError
from exchange.service.core import Actor, Operation, OpResult, Service
from exchange.service.errors import ServiceError
from exchange.service.policy import require_case_manager
from exchange.service.statements import replay
from exchange.storage._erasuretx import Erasure
from exchange.storage.errors import BlobNotFound, NotFound
from exchange.storage.metadata import EntryFactory, EvidenceRecord, Transaction

__all__ = ["ENVELOPE_SHRED", "EVIDENCE_ERASE", "EpochShredded", "EvidenceErased", "LegalHold",
           "SweepReport", "delete_blobs", "erase_op", "erase_record", "erased_error", "sweep",
           "sweep_case"]

EVIDENCE_ERASE = "evidence.erase"
ENVELOPE_SHRED = "envelope.shred"
_MARGIN_S = 5


class LegalHold(ServiceError):
    """The case is under legal hold: nothing of it may be erased until the hold is lifted."""

    http_status = 409
    problem_type = "legal-hold"


class EvidenceErased(ServiceError):
    """The item was erased under the case's retention policy (or by an owner)."""

    http_status = 410
    problem_type = "evidence-erased"


class EpochShredded(ServiceError):
    """The epoch's envelopes were deleted with its last erased item (crypto-shredding)."""

    http_status = 410
    problem_type = "epoch-shredded"


@dataclass(slots=True)
class SweepReport:
    """What one sweep did: items erased, epochs shredded, blobs deleted."""

    erased: list[str] = field(default_factory=list)
    shredded: list[tuple[str, int]] = field(default_factory=list)
    blobs_deleted: int = 0
    #: Cases the sweep could not enforce (and why): the others went on, these wait.
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``exchange server sweep --json``)."""
        return {"erased": self.erased, "shredded": [
            {"case_id": c, "epoch": e} for c, e in self.shredded],
            "blobs_deleted": self.blobs_deleted,
            "failed": [{"case_id": c, "error": e} for c, e in self.failed]}


def _server_entry(action: str, case: str, obj: str, details: dict[str, DetailValue]
                  ) -> EntryFactory:
    """An entry the server makes on its own (no request): the actor is ``-``."""

    def make(index: int, prev: bytes, time: str) -> AuditEntry:
        return AuditEntry(index=index, time=time, actor=UNKNOWN_ACTOR, actor_key="",
                          action=action, case=case, object=obj, outcome="ok", reason=None,
                          request=None, details=details, prev=prev)

    return make


async def erase_record(tx: Transaction, record: EvidenceRecord, *, now: int, reason: str,
                 policy: str | None, request_index: int | None) -> int:
    """Append the item's ``evidence.erase`` entry and delete its row, in ``tx``."""
    details: dict[str, DetailValue] = {
        "reason": reason, "policy": policy, "request": request_index,
        "ciphertext_sha256": record.blob_id, "epoch": record.epoch,
        "committed_index": record.audit_index}
    appended = await tx.append_audit(_server_entry(EVIDENCE_ERASE, record.case_id,
                                                   record.evidence_id, details))
    await tx.erase_evidence(record, erased_at=now, reason=reason, policy=policy,
                            audit_index=appended.index)
    return appended.index


def erased_error(evidence_id: str, erasure: Erasure) -> EvidenceErased:
    """The 410 a request for an erased item gets: when, why, which policy, which entry."""
    when = datetime.fromtimestamp(erasure.erased_at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    why = ("by an owner's erase request" if erasure.reason == REASON_OWNER
           else f"under retention policy {erasure.policy} ({erasure.reason})")
    return EvidenceErased(f"evidence {evidence_id} was erased on {when} {why}; audit entry "
                          f"{erasure.audit_index} records it")


async def _fresh(tx: Transaction, anchor: TrustAnchor, state: CaseState) -> CaseState:
    """``state`` if the case chain has not moved since it was replayed, else replayed in ``tx``.

    A hold set (or a policy changed) after the sweep read the case must
    count: each erasure decides on the chain as it stands in its own transaction.
    """
    if await tx.list_statements(case_chain(state.case_id), after=state.seq - 1, limit=1):
        return (await replay(tx, anchor, state.case_id)).case(state.case_id)
    return state


async def sweep_case(service: Service, anchor: TrustAnchor, case_id: str,
                     report: SweepReport) -> None:
    """Erase the case's due items, then shred its fully erased old epochs."""
    async with service.store.transaction("retention.read") as tx:
        found = (await replay(tx, anchor, case_id)).cases.get(case_id)
        records = await tx.list_evidence(case_id) if found is not None else []
    if found is None:
        return
    state = found
    if state.policy is not None and not on_hold(state.policy):
        for listed in records:
            async with service.store.transaction(EVIDENCE_ERASE) as tx:
                state = await _fresh(tx, anchor, state)
                try:
                    record = await tx.get_evidence(listed.evidence_id)
                except NotFound:
                    continue  # erased meanwhile (another process)
                now = int(service.clock())
                # committed_at is the whole second before the commit's entry was written;
                # the margin keeps the log's own times (what the verifier judges) past due.
                reason = due_reason(state.policy, committed_at=record.committed_at + _MARGIN_S,
                                    now=now,
                                    members=state.members, uploader=record.uploader,
                                    delivered=await tx.delivered_to(record.evidence_id))
                if reason is None:
                    continue
                await erase_record(tx, record, now=now, reason=reason,
                                   policy=state.policy_hash, request_index=None)
            report.erased.append(listed.evidence_id)
    async with service.store.transaction(ENVELOPE_SHRED) as tx:
        state = await _fresh(tx, anchor, state)
        if on_hold(state.policy):
            return
        for epoch in await tx.shreddable_epochs(case_id, below=state.epoch):
            appended = await tx.append_audit(_server_entry(
                ENVELOPE_SHRED, case_id, f"epoch/{epoch}", {"epoch": epoch}))
            await tx.shred_epoch(case_id, epoch, appended.index)
            report.shredded.append((case_id, epoch))


async def delete_blobs(service: Service) -> int:
    """Delete the blobs of erased items not yet deleted; return how many went.

    A blob a live item still uses (the same ciphertext committed twice) is kept.
    """
    done = 0
    async with service.store.transaction("retention.blobs") as tx:
        pending = await tx.pending_blob_deletions()
    for erasure in pending:
        async with service.store.transaction("retention.blob") as tx:
            if not await tx.blob_in_use(erasure.blob_id):
                with contextlib.suppress(BlobNotFound):
                    await service.blobs.delete(erasure.blob_id)
                    done += 1
            await tx.mark_blob_deleted(erasure.evidence_id)
    return done


async def sweep(service: Service, anchor: TrustAnchor) -> SweepReport:
    """Enforce every case's retention policy once (see the module notes)."""
    report = SweepReport()
    async with service.store.transaction("retention.cases") as tx:
        case_ids = set(await tx.retained_case_ids())
        case_ids.update(await tx.erased_case_ids())
    for case_id in sorted(case_ids):
        try:
            await sweep_case(service, anchor, case_id, report)
        except ExchangeError as err:  # one broken case must not stop the others
            report.failed.append((case_id, f"{err.problem_type}: {err}"))
    report.blobs_deleted = await delete_blobs(service)
    return report


def erase_op(case_id: str, evidence_id: str | None, *, now: int,
             anchor: TrustAnchor) -> Operation[dict[str, Any]]:
    """Return the owner's erase-now: every item of the case, or only ``evidence_id``.

    Refused under legal hold; each erased item gets its entry in the same
    transaction as the request's own ``case.erase`` entry.
    """

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        try:
            membership = await tx.get_membership(case_id, actor.id)
        except (NotFound, ValueError, TypeError):
            membership = None
        require_case_manager(actor.role, membership, case_id)
        state = (await replay(tx, anchor, case_id)).case(case_id)
        if on_hold(state.policy):
            raise LegalHold(f"case {case_id} is under legal hold (policy "
                            f"{state.policy_hash}): nothing may be erased until an owner "
                            "lifts it")
        if evidence_id is None:
            records = await tx.list_evidence(case_id)
        else:
            try:
                records = [await tx.get_evidence(evidence_id)]
            except NotFound:
                erasure = await tx.get_erasure(evidence_id)  # NotFound: never existed
                raise erased_error(evidence_id, erasure) from None
            if records[0].case_id != case_id:
                raise NotFound(f"unknown evidence {evidence_id[:64]!r} in case {case_id}")
        erased = [r.evidence_id for r in records]

        async def after(tx: Transaction, index: int) -> None:
            for record in records:
                await erase_record(tx, record, now=now, reason=REASON_OWNER,
                             policy=state.policy_hash, request_index=index)

        return OpResult(value={"case_id": case_id, "erased": erased},
                        details={"count": len(erased)}, object=evidence_id, after=after)

    return op
