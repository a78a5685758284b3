"""The metadata store interface: records, the unit-of-work transaction, audit reads.

One set of async operations over SQLite (embedded default) and PostgreSQL
(DESIGN.md §8); callers never branch on the backend. Every access is written
together with its audit-log entry in one transaction (DESIGN.md §7).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from exchange.storage.blobs import parse_blob_id
from exchange.storage.errors import InvalidValue, ValueTooLarge, shown

T = TypeVar("T")

if TYPE_CHECKING:
    from exchange.storage._casetx import CaseEvent, ParticipantBundle
    from exchange.storage._erasuretx import Erasure
    from exchange.storage._statementtx import StoredStatement

#: Identifiers are printable ASCII tokens without spaces (ids of participants, cases, …).
MAX_ID_CHARS = 128
#: Short human text: organisation, display name, role, status.
MAX_TEXT_CHARS = 256
#: An age recipient string (hybrid post-quantum recipients are about 2 KB).
MAX_RECIPIENT_CHARS = 4096
#: Encrypted case metadata, envelopes and upload metadata are small by construction.
MAX_SMALL_BLOB_BYTES = 64 * 1024
#: A sealed manifest carries names and hashes, never content.
MAX_MANIFEST_BYTES = 1024 * 1024
#: An encoded audit entry; c2sp tlog-tiles entry bundles cap entries at 65535 bytes.
MAX_ENTRY_BYTES = 65535
#: Integers are stored as signed 64-bit in both dialects.
MAX_INT = 2**63 - 1

_ID_RE = re.compile(r"[\x21-\x7e]+")


def check_id(name: str, value: object) -> None:
    """Raise unless ``value`` is an identifier (printable ASCII, 1..MAX_ID_CHARS)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    if len(value) > MAX_ID_CHARS:
        raise ValueTooLarge(f"{name} has {len(value)} characters, limit {MAX_ID_CHARS}")
    if _ID_RE.fullmatch(value) is None:
        raise InvalidValue(f"{name} {shown(value)} is not printable ascii without spaces")


def check_text(name: str, value: object, limit: int = MAX_TEXT_CHARS) -> None:
    """Raise unless ``value`` is a str of at most ``limit`` characters, without NUL."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be str, not {type(value).__name__}")
    if len(value) > limit:
        raise ValueTooLarge(f"{name} has {len(value)} characters, limit {limit}")
    if "\x00" in value:
        raise InvalidValue(f"{name} contains a nul character")


def check_bytes(name: str, value: object, limit: int) -> None:
    """Raise unless ``value`` is bytes of at most ``limit`` bytes."""
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes, not {type(value).__name__}")
    if len(value) > limit:
        raise ValueTooLarge(f"{name} has {len(value)} bytes, limit {limit}")


def check_int(name: str, value: object, *, optional: bool = False) -> None:
    """Raise unless ``value`` is an int in [0, 2**63) (or None when ``optional``)."""
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if not 0 <= value <= MAX_INT:
        raise InvalidValue(f"{name} {value} is outside [0, 2**63)")


class ParticipantStatus(enum.Enum):
    """Whether a participant may act."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    """An enrolled participant and its public keys (enrolment is an audit entry)."""

    participant_id: str
    role: str
    organisation: str
    country: str
    display_name: str
    signing_key: bytes
    age_recipient: str
    fingerprint: str
    status: ParticipantStatus
    enrolled_at: int
    enrolment_audit_index: int | None = None

    def __post_init__(self) -> None:
        check_id("participant_id", self.participant_id)
        for name in ("role", "organisation", "country", "display_name"):
            check_text(name, getattr(self, name))
        check_bytes("signing_key", self.signing_key, 64)
        check_text("age_recipient", self.age_recipient, MAX_RECIPIENT_CHARS)
        check_id("fingerprint", self.fingerprint)
        if not isinstance(self.status, ParticipantStatus):
            raise TypeError("status must be a ParticipantStatus")
        check_int("enrolled_at", self.enrolled_at)
        check_int("enrolment_audit_index", self.enrolment_audit_index, optional=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    """A case; its title and details exist only as encrypted ``metadata``."""

    case_id: str
    metadata: bytes
    created_by: str
    created_at: int

    def __post_init__(self) -> None:
        check_id("case_id", self.case_id)
        check_bytes("metadata", self.metadata, MAX_SMALL_BLOB_BYTES)
        check_id("created_by", self.created_by)
        check_int("created_at", self.created_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    """A participant's membership of a case; ``removed_at`` is None while active."""

    case_id: str
    participant_id: str
    role: str
    added_at: int
    removed_at: int | None = None

    def __post_init__(self) -> None:
        check_id("case_id", self.case_id)
        check_id("participant_id", self.participant_id)
        check_text("role", self.role)
        check_int("added_at", self.added_at)
        check_int("removed_at", self.removed_at, optional=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyEpoch:
    """One case-key epoch: the age recipient that new evidence is encrypted to."""

    case_id: str
    epoch: int
    recipient: str
    created_by: str
    created_at: int

    def __post_init__(self) -> None:
        check_id("case_id", self.case_id)
        check_int("epoch", self.epoch)
        if self.epoch > 2**31 - 1:
            raise InvalidValue(f"epoch {self.epoch} is outside [0, 2**31)")
        check_text("recipient", self.recipient, MAX_RECIPIENT_CHARS)
        check_id("created_by", self.created_by)
        check_int("created_at", self.created_at)


@dataclass(frozen=True, slots=True, kw_only=True)
class Envelope:
    """An epoch identity age-encrypted to one member; opaque to the server."""

    case_id: str
    epoch: int
    participant_id: str
    data: bytes

    def __post_init__(self) -> None:
        check_id("case_id", self.case_id)
        check_int("epoch", self.epoch)
        check_id("participant_id", self.participant_id)
        check_bytes("data", self.data, MAX_SMALL_BLOB_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvidenceRecord:
    """A committed evidence file: its blob, sealed manifest and the audit entry that logged it."""

    evidence_id: str
    case_id: str
    blob_id: str
    ciphertext_size: int
    sealed_manifest: bytes
    uploader: str
    epoch: int
    committed_at: int
    audit_index: int

    def __post_init__(self) -> None:
        check_id("evidence_id", self.evidence_id)
        check_id("case_id", self.case_id)
        parse_blob_id(self.blob_id)
        check_int("ciphertext_size", self.ciphertext_size)
        check_bytes("sealed_manifest", self.sealed_manifest, MAX_MANIFEST_BYTES)
        check_id("uploader", self.uploader)
        check_int("epoch", self.epoch)
        check_int("committed_at", self.committed_at)
        check_int("audit_index", self.audit_index)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadSession:
    """The metadata side of a resumable upload (its bytes live in the blob store)."""

    upload_id: str
    participant_id: str
    case_id: str
    length: int
    offset: int
    expires_at: int
    metadata: bytes = b""

    def __post_init__(self) -> None:
        check_id("upload_id", self.upload_id)
        check_id("participant_id", self.participant_id)
        check_id("case_id", self.case_id)
        check_int("length", self.length)
        check_int("offset", self.offset)
        if self.offset > self.length:
            raise InvalidValue(f"upload offset {self.offset} is past the length {self.length}")
        check_int("expires_at", self.expires_at)
        check_bytes("metadata", self.metadata, MAX_SMALL_BLOB_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEntry:
    """An audit-log entry as stored: its index, encoded bytes and RFC 6962 leaf hash."""

    index: int
    entry: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class AppendedEntry:
    """What ``Transaction.append_audit`` reports: where the entry landed and its hashes."""

    index: int
    entry_hash: bytes
    leaf_hash: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredCheckpoint:
    """A signed checkpoint note kept for ``size``."""

    size: int
    root_hash: bytes
    note: bytes
    created_at: int


class EntryLike(Protocol):
    """What ``make_entry`` returns: an audit entry that knows its position and encodes itself."""

    @property
    def index(self) -> int: ...

    @property
    def prev(self) -> bytes: ...

    def encode(self) -> bytes: ...


#: ``make_entry(index, prev, time)`` builds the entry once its position is known;
#: ``time`` is RFC 3339 UTC with microseconds (``2025-01-31T12:00:00.000000Z``).
#: It MUST be pure and quick (it runs inside the write transaction).
EntryFactory = Callable[[int, bytes, str], EntryLike]
#: ``signer(size, root_hash) -> note`` signs a checkpoint for the tree of ``size``.
CheckpointSigner = Callable[[int, bytes], bytes]
#: A full-subtree node id: (level, index).
NodeId = tuple[int, int]


class Transaction(Protocol):
    """A unit of work: every call commits together with the others, or none does.

    Obtained from ``MetadataStore.transaction()``. Errors raised by a method
    leave the transaction usable (nothing of that call was written); an
    exception escaping the ``async with`` block undoes the whole unit. Not-found
    reads raise ``NotFound``; duplicate keys raise ``AlreadyExists``; a write
    referring to an unknown participant, case or epoch raises ``NotFound``.
    """

    async def add_participant(self, participant: Participant) -> None: ...
    async def get_participant(self, participant_id: str) -> Participant: ...
    async def get_participant_by_fingerprint(self, fingerprint: str) -> Participant: ...
    async def set_participant_status(
        self, participant_id: str, status: ParticipantStatus
    ) -> None: ...
    async def list_participants(self) -> list[Participant]: ...

    async def create_case(self, case: Case) -> None: ...
    async def get_case(self, case_id: str) -> Case: ...
    async def list_cases_for(self, participant_id: str) -> list[Case]: ...

    async def add_member(self, membership: Membership) -> None: ...
    async def remove_member(self, case_id: str, participant_id: str, removed_at: int) -> None: ...
    async def get_membership(self, case_id: str, participant_id: str) -> Membership: ...
    async def list_members(
        self, case_id: str, *, include_removed: bool = False
    ) -> list[Membership]: ...

    async def add_key_epoch(self, epoch: KeyEpoch) -> None: ...
    async def get_key_epoch(self, case_id: str, epoch: int) -> KeyEpoch: ...
    async def latest_key_epoch(self, case_id: str) -> KeyEpoch: ...

    async def put_envelope(self, envelope: Envelope) -> None: ...
    async def get_envelope(self, case_id: str, epoch: int, participant_id: str) -> Envelope: ...

    async def add_evidence(self, record: EvidenceRecord) -> None: ...
    async def get_evidence(self, evidence_id: str) -> EvidenceRecord: ...
    async def list_evidence(self, case_id: str) -> list[EvidenceRecord]: ...

    async def create_upload_session(self, session: UploadSession) -> None: ...
    async def get_upload_session(self, upload_id: str) -> UploadSession: ...
    async def advance_upload_session(
        self, upload_id: str, expected_offset: int, new_offset: int
    ) -> None: ...
    async def delete_upload_session(self, upload_id: str) -> None: ...
    async def expired_upload_sessions(self, now: int) -> list[UploadSession]: ...

    async def record_nonce(self, keyid: str, nonce: str, expires_at: int) -> None: ...
    async def purge_nonces(self, now: int) -> int: ...

    async def append_audit(self, make_entry: EntryFactory) -> AppendedEntry: ...

    # Migration 0002 (exchange.storage._casetx): live-feed events and key changes.
    async def add_case_event(self, event: CaseEvent) -> None: ...
    async def case_events(
        self, case_id: str, *, after: int = -1, limit: int = ...
    ) -> list[CaseEvent]: ...
    async def put_participant_bundle(self, record: ParticipantBundle) -> None: ...
    async def get_participant_bundle(self, participant_id: str) -> ParticipantBundle: ...

    async def add_statement(self, record: StoredStatement) -> None: ...
    async def set_participant_role(self, participant_id: str, role: str) -> None: ...
    async def replace_envelope(self, case_id: str, epoch: int, participant_id: str,
                               data: bytes) -> None: ...
    async def list_statements(self, chain: str, *, after: int = -1,
                              limit: int = ...) -> list[StoredStatement]: ...
    async def change_participant_keys(
        self, participant_id: str, *, display_name: str, signing_key: bytes,
        age_recipient: str, fingerprint: str,
    ) -> None: ...

    # Migration 0005 (exchange.storage._erasuretx): retention and erasure.
    async def erase_evidence(self, record: EvidenceRecord, *, erased_at: int, reason: str,
                             policy: str | None, audit_index: int) -> Erasure: ...
    async def get_erasure(self, evidence_id: str) -> Erasure: ...
    async def pending_blob_deletions(self, limit: int = ...) -> list[Erasure]: ...
    async def mark_blob_deleted(self, evidence_id: str) -> None: ...
    async def blob_in_use(self, blob_id: str) -> bool: ...
    async def record_delivery(self, evidence_id: str, participant_id: str,
                              audit_index: int) -> None: ...
    async def delivered_to(self, evidence_id: str) -> set[str]: ...
    async def retained_case_ids(self) -> list[str]: ...
    async def erased_case_ids(self) -> list[str]: ...
    async def shreddable_epochs(self, case_id: str, below: int) -> list[int]: ...
    async def shred_epoch(self, case_id: str, epoch: int, audit_index: int) -> int: ...
    async def epoch_shredded(self, case_id: str, epoch: int) -> bool: ...


class MetadataStore(Protocol):
    """Participants, cases, keys, evidence records, upload sessions, nonces and the audit log.

    Writes go through :meth:`transaction`; the audit log is read with the
    methods below, which see committed data only. Safe for many concurrent
    tasks; the PostgreSQL implementation is also safe across processes.
    """

    def transaction(self, name: str = "tx") -> AbstractAsyncContextManager[Transaction]:
        """Open a unit of work (``async with store.transaction("upload") as tx:``).

        The block MUST be short and MUST NOT open another transaction: units of
        work are group-committed, so a slow block delays the others in its
        batch. Leaving the block without an exception returns only after the
        unit (with its audit entries) is durably committed.
        """
        ...

    async def run_unit(
        self, name: str, body: Callable[[Transaction], Coroutine[Any, Any, T]]
    ) -> T:
        """Run ``body(tx)`` as one unit of work; return its value once durably committed.

        The same unit as ``async with transaction(name) as tx: return await
        body(tx)`` (the same rules), run by the store itself, which saves the
        hand-overs between the caller's task and the store's: the way for
        units on every request's path. The body's error is raised, its writes
        undone.
        """
        ...

    async def get_participant(self, participant_id: str) -> Participant:
        """Return the participant as last committed, outside any unit; ``NotFound`` if unknown."""
        ...

    async def record_nonce(self, keyid: str, nonce: str, expires_at: int) -> None:
        """Spend a request nonce durably, outside any unit when the database allows.

        MUST raise ``ReplayedNonce`` if this key used it before, here or in a unit.
        """
        ...

    async def wait_durable(self, commit: int) -> None:
        """Return once the first ``commit`` batches are durable; raise ``StorageError`` if lost.

        ``commit`` is what ``exchange.storage.durability`` noted for the reads
        a request made outside units: its answer waits for this first.
        """
        ...

    async def tree_size(self) -> int:
        """Return the committed audit-log size (number of entries)."""
        ...

    async def audit_entries(self, start: int, end: int) -> list[StoredEntry]:
        """Return entries ``[start, end)``; MUST raise ``NotFound`` past the tree size."""
        ...

    async def audit_entries_at(self, indexes: Sequence[int]) -> dict[int, StoredEntry]:
        """Return the committed entries at ``indexes``, by index; absent ones are left out."""
        ...

    async def node_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Return full-subtree hashes in the order of ``ids``.

        MUST raise ``NotFound`` if any is missing (not yet complete or never stored).
        """
        ...

    async def root_hash(self) -> tuple[int, bytes]:
        """Return the committed (tree size, root hash)."""
        ...

    async def publish_checkpoint(self) -> StoredCheckpoint:
        """Sign (with the store's signer) and keep a checkpoint of the committed tree.

        Idempotent per size; MUST raise ``StorageError`` if no signer was given.
        """
        ...

    async def latest_checkpoint(self) -> StoredCheckpoint:
        """Return the kept checkpoint of the largest size; MUST raise ``NotFound`` if none."""
        ...

    async def checkpoint(self, size: int) -> StoredCheckpoint:
        """Return the kept checkpoint for ``size``; MUST raise ``NotFound`` if none."""
        ...

    async def recent_checkpoints(self, limit: int) -> list[StoredCheckpoint]:
        """Return up to ``limit`` kept checkpoints, largest size first (empty if none)."""
        ...

    async def replace_checkpoint_note(self, size: int, note: bytes) -> None:
        """Replace the note kept for ``size`` with the same checkpoint carrying more signatures.

        The caller MUST pass a note of the same checkpoint body (witness
        cosignatures added); nothing happens if no checkpoint of ``size`` is kept.
        """
        ...

    async def close(self) -> None:
        """Finish queued work and release connections; later calls raise ``StoreClosed``."""
        ...


__all__ = [
    "MAX_ENTRY_BYTES",
    "AppendedEntry",
    "Case",
    "CheckpointSigner",
    "EntryFactory",
    "EntryLike",
    "Envelope",
    "EvidenceRecord",
    "KeyEpoch",
    "Membership",
    "MetadataStore",
    "NodeId",
    "Participant",
    "ParticipantStatus",
    "StoredCheckpoint",
    "StoredEntry",
    "Transaction",
    "UploadSession",
]
