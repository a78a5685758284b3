"""Who of an item's intended recipients has pulled it, and when, verified from the log.

The answer is computed by ``exchange.audit.deliveries`` from verified inputs
only; what differs is which log entries the caller may read (the server's
rule, ``exchange.service.auditlog``: entries that name other participants
are for auditors and administrators):

* an **auditor or administrator** brings its log mirror up to date and
  verifies the whole log (as ``exchange audit verify``), then reads every
  commit and download of the case: the answer is complete. It sees no file
  names (it holds no case key).
* a **case member** reads the case chain (signed statements, each with its
  entry and an inclusion proof), the evidence (signed manifests, names
  decrypted) and, through receipts, only its *own* entries: the commits of
  what it uploaded and the downloads this client made. Pulls by others are
  not readable with its role, and the answer says so (``complete`` false).
  The commit position of someone else's upload is the server's word, checked
  to fall inside the manifest's signed epoch, and marked as such.

This client's own downloads are noted (index only) in the state directory
when their custody record is written (``exchange.client.custody``), so they
can be proven again later; own entries, once verified through their receipt,
are kept there too (``own_entries.json``), so a server that later drops one
cannot change the answer, and looking again logs no new receipt reads.
"""

from __future__ import annotations

import base64
import contextlib
from dataclasses import dataclass
from typing import Any

from exchange.audit.checkpoint import Checkpoint
from exchange.audit.deliveries import (
    Delivery,
    DeliveryError,
    Pull,
    Recipient,
    Upload,
    compute_deliveries,
    deliveries_from_log,
    pull_from_entry,
    upload_from_entry,
)
from exchange.audit.entry import AuditEntry, EntryError, parse_entry
from exchange.audit.receipt import parse_receipt
from exchange.client.audit import verify_mirror_as
from exchange.client.audit_mirror import AUDIT_SUBDIR, AuditMirror
from exchange.client.custody import DOWNLOADS_FILE
from exchange.client.download import Evidence, list_evidence
from exchange.client.errors import VerificationFailed
from exchange.client.problems import printable
from exchange.client.session import Client
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.statement import StatementError

__all__ = ["DeliveryReport", "deliveries", "report_from_mirror"]

#: This client's own log entries, verified once through their receipts (by index).
OWN_ENTRIES_FILE = "own_entries.json"
#: Roles that may read every log entry (the server's ENTRY_READERS).
LOG_READERS = frozenset({"auditor", "admin"})


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryReport:
    """The deliveries of one case and how much of the log they rest on."""

    case_id: str
    #: The participant who asked; with an incomplete answer only their pulls are visible.
    reader: str
    complete: bool
    #: Why the answer may be incomplete ("" when complete).
    limits: str
    checkpoint: Checkpoint | None
    items: tuple[tuple[Delivery, Evidence | None], ...]

    def visible(self, participant: str) -> bool:
        """Whether this answer can say if ``participant`` pulled (else: unknown)."""
        return self.complete or participant == self.reader

    def _recipient_json(self, r: Recipient) -> dict[str, Any]:
        seen = self.visible(r.participant)
        return {"participant": r.participant, "role": r.role, "intended": r.intended,
                "removed": r.removed, "removed_audit_index": r.removed_index,
                "pulled": r.pulled if seen else None, "pulled_at": _iso(r.pulled_at),
                "pulled_audit_index": r.pulled_index, "downloads": r.downloads if seen else None}

    def to_json(self) -> dict[str, Any]:
        """Return the ``files --deliveries --json`` form (ISO 8601 UTC times).

        A recipient whose pulls the reader may not see has ``pulled`` null.
        """
        out: list[dict[str, Any]] = []
        for delivery, evidence in self.items:
            u = delivery.upload
            out.append({
                "evidence_id": u.evidence_id,
                "file_name": None if evidence is None else evidence.manifest.file_name,
                "folder": None if evidence is None else evidence.manifest.folder,
                "uploader": u.uploader, "uploaded_at": _iso(u.time),
                "audit_index": u.index, "upload_position_verified": u.position_verified,
                "epoch": u.epoch,
                "recipients": [self._recipient_json(r) for r in delivery.recipients],
                "others": [self._recipient_json(r) for r in delivery.others],
                "pending": list(delivery.pending) if self.complete else None,
            })
        size = None if self.checkpoint is None else self.checkpoint.size
        return {"case_id": self.case_id, "complete": self.complete, "limits": self.limits,
                "tree_size": size, "evidence": out}


def _iso(time: str | None) -> str | None:
    """Return an entry or manifest time as ISO 8601 UTC to the second (``...Z``)."""
    return None if time is None else time[:19] + "Z"


async def deliveries(client: Client, case_id: str, *,
                     evidence: list[Evidence] | None = None) -> DeliveryReport:
    """Return who of each item's intended recipients has pulled it (see the module notes).

    ``evidence`` is the case's evidence as :func:`list_evidence` returned it
    a moment ago (a page that lists it already), to avoid listing it twice.
    Raises :class:`VerificationFailed` when the log, the chain or an own entry
    does not verify, or the server places an upload outside its signed epoch.
    """
    state = await client.trust.sync()
    me = state.directory.participants.get(client.identity.id)
    if me is not None and me.role in LOG_READERS:
        return await _from_whole_log(client, case_id)
    await client.trust.sync(case_id)
    return await _from_own_entries(client, case_id, "" if me is None else me.role, evidence)


async def _from_whole_log(client: Client, case_id: str) -> DeliveryReport:
    anchor = client.trust.anchor
    mirror = AuditMirror(client.state.root / AUDIT_SUBDIR)
    run = await verify_mirror_as(client, mirror, client.log_key or anchor.log_key,
                                 anchor=anchor)
    if not run.ok or run.checkpoint is None:
        first = run.findings[0] if run.findings else None
        raise VerificationFailed(
            f"the audit log does not verify ({len(run.findings)} finding(s)"
            + (f", first: {printable(str(first), 200)}" if first else "") + ")",
            "run 'exchange audit verify' for the details; no deliveries are shown from a log "
            "that does not verify")
    return report_from_mirror(anchor, mirror, run.checkpoint, case_id, client.identity.id)


def report_from_mirror(anchor: TrustAnchor, mirror: AuditMirror, checkpoint: Checkpoint,
                       case_id: str, reader: str) -> DeliveryReport:
    """Return the complete deliveries of ``case_id`` from a mirror verified at ``checkpoint``.

    The caller verified the mirror (``verify_mirror`` or ``verify_offline``
    with no findings); raises :class:`VerificationFailed` if the entries still
    contradict the chain rules.
    """
    try:
        found = deliveries_from_log(anchor, mirror.entries(checkpoint.size, committed=True),
                                    case_id=case_id)
    except (DeliveryError, StatementError, ValueError) as err:
        raise VerificationFailed(f"the deliveries of case {case_id!r} cannot be computed "
                                 f"from the verified log: {printable(str(err), 200)}") from None
    return DeliveryReport(case_id=case_id, reader=reader, complete=True, limits="",
                          checkpoint=checkpoint,
                          items=tuple((d, None) for d in found))


class _OwnEntries:
    """Our own log entries, each verified once through its receipt, then kept.

    A receipt read is itself a logged ``audit.read``: without the cache every
    look at a case (the interface reloads it often) would fetch, and log, one
    receipt per own upload and download. A kept entry was included in a
    checkpoint consistent with every later one this client accepts, so it
    cannot have changed since.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        doc = client.state.read_json(OWN_ENTRIES_FILE)
        self.kept: dict[str, str] = doc if isinstance(doc, dict) else {}
        self.changed = False

    async def get(self, index: int, what: str) -> AuditEntry:
        """Return our own entry at ``index``; VerificationFailed if it is not ours."""
        text = self.kept.get(str(index))
        entry = None
        if isinstance(text, str):
            with contextlib.suppress(EntryError, ValueError):
                entry = parse_entry(base64.b64decode(text, validate=True))
        if entry is None or entry.index != index:
            receipt, entry = await self.client.logged_entry(index)
            extra = parse_receipt(receipt).extra or b""
            self.kept[str(index)] = base64.b64encode(extra).decode("ascii")
            self.changed = True
        if entry.actor != self.client.identity.id:
            raise VerificationFailed(f"audit entry {index}, named as {what}, is not yours")
        return entry

    def save(self) -> None:
        """Keep what was verified in this run."""
        if self.changed:
            self.client.state.write_json(OWN_ENTRIES_FILE, self.kept)


async def _from_own_entries(client: Client, case_id: str, role: str,
                            listed: list[Evidence] | None) -> DeliveryReport:
    items = await list_evidence(client, case_id) if listed is None else listed
    own = _OwnEntries(client)
    uploads: list[Upload] = []
    for evidence in items:
        m, index = evidence.manifest, evidence.record.get("audit_index")
        if not isinstance(index, int) or isinstance(index, bool):
            raise VerificationFailed(f"the server names no commit entry for "
                                     f"{evidence.evidence_id}")
        upload = None
        if m.uploader == client.identity.id:
            upload = upload_from_entry(await own.get(index, "your upload's commit"))
            if upload is None or upload.evidence_id != evidence.evidence_id:
                raise VerificationFailed(f"audit entry {index} is not the commit of "
                                         f"{evidence.evidence_id}")
        uploads.append(upload or Upload(
            evidence_id=evidence.evidence_id, case_id=case_id, uploader=m.uploader,
            index=index, time=m.uploaded_at, epoch=m.epoch,
            ciphertext_size=m.ciphertext_size, position_verified=False))
    pulls: list[Pull] = []
    doc = client.state.read_json(DOWNLOADS_FILE)
    noted: dict[str, Any] = doc if isinstance(doc, dict) else {}
    for evidence in items:
        for index in noted.get(evidence.evidence_id, []):
            if not isinstance(index, int) or isinstance(index, bool):
                continue
            pull = pull_from_entry(await own.get(index, "your download"))
            if pull is None or pull.evidence_id != evidence.evidence_id:
                raise VerificationFailed(f"audit entry {index} is not your download of "
                                         f"{evidence.evidence_id}")
            pulls.append(pull)
    own.save()
    try:
        found = compute_deliveries(client.trust.anchor, client.trust.statements(case_id),
                                   uploads, pulls)
    except (DeliveryError, StatementError, ValueError) as err:
        raise VerificationFailed(f"the deliveries of case {case_id!r} do not add up: "
                                 f"{printable(str(err), 300)}") from None
    by_id = {e.evidence_id: e for e in items}
    limits = (f"your role ({role or 'unknown'}) may read only your own entries of the audit "
              "log: pulls by others are not shown here; an auditor's report has them all "
              "(exchange audit report --deliveries)")
    return DeliveryReport(case_id=case_id, reader=client.identity.id, complete=False,
                          limits=limits,
                          checkpoint=client.trusted_checkpoint(),
                          items=tuple((d, by_id.get(d.upload.evidence_id)) for d in found))

