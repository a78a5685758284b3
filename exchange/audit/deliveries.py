"""Deliveries: for each evidence item, its intended recipients and who pulled it, from the log.

Theory of operation. The intended recipients of an item are the members of
its case at the moment its ``evidence.commit`` entry was logged, as the case
chain says (``exchange.crypto.chains`` replayed from signed statements, in log
order, up to that entry): never the server's member table. The uploader is a
member but not a recipient. A recipient removed from the case later stays a
recipient of what was uploaded while they were a member, marked as removed.

A pull is an ``ok`` ``evidence.download`` entry of the item; a resumed
download is several entries, each serving a byte range, so a recipient
counts as having pulled the item once the ranges logged for them cover the
whole ciphertext, at the time of the entry that completed it. The log
records that the server served the bytes to the requester (whose request
signature the entry carries), not that the client kept them; the custody
record beside a pulled file is the recipient's own proof of receipt.

Pure: the caller hands in verified statements and verified entries, and says
whether each upload's position in the log was verified (the entry read) or
only named by the server (then it must at least fall inside the signed
manifest's epoch, else :class:`DeliveryError`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from exchange.audit._statements import read_statement
from exchange.audit.entry import AuditEntry, parse_entry
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.chains import TrustState
from exchange.crypto.statement import DIRECTORY_CHAIN, SignedStatement, case_chain
from exchange.errors import AuditError

__all__ = [
    "COMMIT",
    "DOWNLOAD",
    "Delivery",
    "DeliveryError",
    "Pull",
    "Recipient",
    "Upload",
    "compute_deliveries",
    "deliveries_from_log",
    "pull_from_entry",
    "upload_from_entry",
]

COMMIT = "evidence.commit"
DOWNLOAD = "evidence.download"


class DeliveryError(AuditError):
    """The inputs contradict each other (an upload outside its signed epoch, say)."""

    problem_type = "deliveries"


@dataclass(frozen=True, slots=True, kw_only=True)
class Upload:
    """One evidence item's commit: where it sits in the log and what was committed."""

    evidence_id: str
    case_id: str
    uploader: str
    index: int
    time: str | None
    epoch: int
    ciphertext_size: int
    #: True when the commit entry itself was read and verified; False when its index
    #: is the server's word (then only checked to fall inside the signed epoch).
    position_verified: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Pull:
    """One logged download of an item: who, when, which bytes ``[start, end)``."""

    evidence_id: str
    participant: str
    index: int
    time: str
    start: int
    end: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Recipient:
    """One participant's delivery state for one item."""

    participant: str
    role: str
    intended: bool
    removed: bool
    removed_index: int | None
    pulled: bool
    pulled_at: str | None
    pulled_index: int | None
    downloads: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """An item, its intended recipients, and anyone else who pulled it (joined later)."""

    upload: Upload
    recipients: tuple[Recipient, ...]
    others: tuple[Recipient, ...] = ()

    @property
    def pending(self) -> tuple[str, ...]:
        """Intended recipients who have not pulled the item (removed ones included)."""
        return tuple(r.participant for r in self.recipients if not r.pulled)


def upload_from_entry(entry: AuditEntry) -> Upload | None:
    """Return the upload an ``ok`` ``evidence.commit`` entry records, else None."""
    if entry.action != COMMIT or entry.outcome != "ok" or entry.case is None:
        return None
    details = entry.details
    epoch, size = details.get("epoch"), details.get("ciphertext_size")
    if entry.object is None or not isinstance(epoch, int) or not isinstance(size, int):
        return None
    return Upload(evidence_id=entry.object, case_id=entry.case, uploader=entry.actor,
                  index=entry.index, time=entry.time, epoch=epoch, ciphertext_size=size)


def pull_from_entry(entry: AuditEntry) -> Pull | None:
    """Return the pull an ``ok`` ``evidence.download`` entry records, else None."""
    if entry.action != DOWNLOAD or entry.outcome != "ok" or entry.object is None:
        return None
    start, end = entry.details.get("start"), entry.details.get("end")
    if not isinstance(start, int) or not isinstance(end, int):
        return None
    return Pull(evidence_id=entry.object, participant=entry.actor, index=entry.index,
                time=entry.time, start=start, end=end)


@dataclass(slots=True)
class _Progress:
    """The byte ranges one participant was served of one item, until they cover it."""

    ranges: list[tuple[int, int]] = field(default_factory=list)
    downloads: int = 0
    done: Pull | None = None

    def add(self, pull: Pull, size: int) -> None:
        self.downloads += 1
        if self.done is not None:
            return
        self.ranges.append((pull.start, pull.end))
        covered = 0
        for start, end in sorted(self.ranges):
            if start > covered:
                break
            covered = max(covered, end)
        if covered >= size:
            self.done = pull


def compute_deliveries(
    anchor: TrustAnchor, statements: Iterable[tuple[int, SignedStatement]],
    uploads: Iterable[Upload], pulls: Iterable[Pull],
) -> list[Delivery]:
    """Return one :class:`Delivery` per upload, in log order.

    ``statements`` are (audit index, statement) pairs of the directory and
    the uploads' case chains, all verified; they are replayed in index order
    with the chain rules (a statement that breaks them raises its
    ``ChainError``). ``pulls`` are verified download entries; those of other
    items are ignored. Raises :class:`DeliveryError` for an upload whose
    position is not verified and falls outside its signed epoch.
    """
    ordered = sorted(statements, key=lambda item: item[0])
    items = sorted(uploads, key=lambda u: u.index)
    state = TrustState(anchor)
    removals: dict[tuple[str, str], int] = {}
    intended: dict[str, tuple[str, ...]] = {}
    position = 0
    for upload in items:
        while position < len(ordered) and ordered[position][0] < upload.index:
            _apply(state, removals, *ordered[position])
            position += 1
        case = state.cases.get(upload.case_id)
        if (case is None or case.epoch != upload.epoch) and not upload.position_verified:
            raise DeliveryError(
                f"the server places the commit of {upload.evidence_id} at log index "
                f"{upload.index}, where case {upload.case_id!r} is not at its signed "
                f"epoch {upload.epoch}")
        members = () if case is None else tuple(sorted(case.members))
        intended[upload.evidence_id] = tuple(m for m in members if m != upload.uploader)
    for item in ordered[position:]:
        _apply(state, removals, *item)
    progress: dict[tuple[str, str], _Progress] = {}
    sizes = {u.evidence_id: u.ciphertext_size for u in items}
    for pull in sorted(pulls, key=lambda p: p.index):
        if pull.evidence_id in sizes:
            progress.setdefault((pull.evidence_id, pull.participant), _Progress()).add(
                pull, sizes[pull.evidence_id])
    return [_delivery(state, u, intended[u.evidence_id], progress, removals) for u in items]


def _apply(state: TrustState, removals: dict[tuple[str, str], int], index: int,
           signed: SignedStatement) -> None:
    """Apply one statement; remember where each member was last removed from a case."""
    state.apply(signed, index=index)
    if signed.statement.type == "case.member_remove":
        removed = signed.statement.body.get("removed")
        if isinstance(removed, str):
            removals[(signed.statement.case_id or "", removed)] = index


def _delivery(state: TrustState, upload: Upload, intended: tuple[str, ...],
              progress: Mapping[tuple[str, str], _Progress],
              removals: Mapping[tuple[str, str], int]) -> Delivery:
    case = state.cases.get(upload.case_id)
    current = set() if case is None else set(case.members)
    pulled_by = {p for (e, p) in progress if e == upload.evidence_id}
    others = sorted(pulled_by - set(intended) - {upload.uploader})

    def recipient(participant: str, is_intended: bool) -> Recipient:
        got = progress.get((upload.evidence_id, participant), _Progress())
        known = state.directory.participants.get(participant)
        removed = participant not in current
        return Recipient(
            participant=participant, role="" if known is None else known.role,
            intended=is_intended, removed=removed,
            removed_index=removals.get((upload.case_id, participant)) if removed else None,
            pulled=got.done is not None,
            pulled_at=None if got.done is None else got.done.time,
            pulled_index=None if got.done is None else got.done.index,
            downloads=got.downloads)

    return Delivery(upload=upload,
                    recipients=tuple(recipient(p, True) for p in intended),
                    others=tuple(recipient(p, False) for p in others))


def deliveries_from_log(anchor: TrustAnchor, entries: Iterable[bytes], *,
                        case_id: str | None = None) -> list[Delivery]:
    """Return the deliveries of every item (or of ``case_id``'s) in a whole verified log.

    ``entries`` must be every entry of a log that verified (an auditor's
    mirror after ``verify_offline``), in order: the statements they carry are
    the chains replayed, so nothing is missing and every upload's position
    is verified.
    """
    statements: list[tuple[int, SignedStatement]] = []
    uploads: list[Upload] = []
    pulls: list[Pull] = []
    wanted = None if case_id is None else case_chain(case_id)
    for data in entries:
        entry = parse_entry(data)
        if entry.outcome != "ok":
            continue
        signed = read_statement(entry.details)
        if isinstance(signed, SignedStatement):
            chain = signed.statement.chain
            if chain in (DIRECTORY_CHAIN, wanted) or wanted is None:
                statements.append((entry.index, signed))
            continue
        if case_id is not None and entry.case != case_id:
            continue
        upload = upload_from_entry(entry)
        if upload is not None:
            uploads.append(upload)
            continue
        pull = pull_from_entry(entry)
        if pull is not None:
            pulls.append(pull)
    return compute_deliveries(anchor, statements, uploads, pulls)
