"""The metadata operations, written once over a tiny SQL connection interface.

Both stores hand a :class:`SqlConn` to :class:`SqlTransaction`; SQL here uses
``?`` placeholders and the dialect common to SQLite ≥ 3.35 and PostgreSQL ≥ 13
(``ON CONFLICT DO NOTHING``, row values, partial unique indexes), so dialect
differences stay inside the two connection adapters (STYLE.md item 5).
Duplicate keys are detected by ``ON CONFLICT DO NOTHING`` and references by a
lookup under the write lock, so a refused call leaves the transaction usable.
"""

# S608: the only strings interpolated into SQL here are the module's own column-list constants.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from exchange.errors import StorageError
from exchange.storage._casetx import CaseEventsMixin
from exchange.storage._erasuretx import ErasuresMixin
from exchange.storage._statementtx import StatementsMixin
from exchange.storage.errors import (
    AlreadyExists,
    InvalidValue,
    NotFound,
    ReplayedNonce,
    StoreClosed,
    UploadOffsetMismatch,
    ValueTooLarge,
    shown,
)
from exchange.storage.metadata import (
    AppendedEntry,
    Case,
    EntryFactory,
    Envelope,
    EvidenceRecord,
    KeyEpoch,
    Membership,
    Participant,
    ParticipantStatus,
    UploadSession,
    check_id,
    check_int,
    check_text,
)

if TYPE_CHECKING:
    from exchange.storage._auditlog import AuditLog

Row = Sequence[Any]


class DatabaseError(StorageError):
    """The database refused a statement for a reason the store did not anticipate."""


class SqlConn(Protocol):
    """The four calls the shared SQL needs; adapters map driver errors to ``DatabaseError``.

    ``failed`` is set when a statement raised ``DatabaseError`` (on PostgreSQL
    the transaction is then unusable until the savepoint is rolled back).
    """

    failed: bool

    async def execute(self, sql: str, *args: object) -> int:
        """Run one statement; return the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement for each row of arguments."""
        ...

    async def fetch(self, sql: str, *args: object) -> list[Row]:
        """Run one query; return its rows."""
        ...

    async def script(self, sql: str) -> None:
        """Run argument-free statements separated by ``;`` (savepoints, BEGIN)."""
        ...


_PARTICIPANT_COLS = (
    "id, role, organisation, country, display_name, signing_key, age_recipient, "
    "fingerprint, status, enrolled_at, enrolment_audit_index"
)
_EVIDENCE_COLS = (
    "id, case_id, blob_id, ciphertext_size, sealed_manifest, uploader, epoch, "
    "committed_at, audit_index"
)
_UPLOAD_COLS = "id, participant_id, case_id, length, upload_offset, expires_at, metadata"


#: Participant rows already checked, by their exact values. Every signed request
#: reads its signer's row; the row rarely changes, and a Participant is frozen, so
#: an identical row gives back the object built (and validated) the first time. A
#: changed row (suspension, a new key) is a different key here: no staleness.
_participants_seen: dict[tuple[object, ...], Participant] = {}
_PARTICIPANTS_SEEN_MAX = 1024


def _participant(row: Row) -> Participant:
    values = tuple(row)
    try:
        seen = _participants_seen.get(values)
    except TypeError:  # a driver gave an unhashable value: build it without the cache
        return _new_participant(row)
    if seen is None:
        seen = _new_participant(row)
        if len(_participants_seen) >= _PARTICIPANTS_SEEN_MAX:
            _participants_seen.clear()
        _participants_seen[values] = seen
    return seen


def _new_participant(row: Row) -> Participant:
    return Participant(
        participant_id=row[0], role=row[1], organisation=row[2], country=row[3],
        display_name=row[4], signing_key=bytes(row[5]), age_recipient=row[6],
        fingerprint=row[7], status=ParticipantStatus(row[8]), enrolled_at=row[9],
        enrolment_audit_index=row[10],
    )


def _evidence(row: Row) -> EvidenceRecord:
    return EvidenceRecord(
        evidence_id=row[0], case_id=row[1], blob_id=row[2], ciphertext_size=row[3],
        sealed_manifest=bytes(row[4]), uploader=row[5], epoch=row[6], committed_at=row[7],
        audit_index=row[8],
    )


def _upload(row: Row) -> UploadSession:
    return UploadSession(
        upload_id=row[0], participant_id=row[1], case_id=row[2], length=row[3],
        offset=row[4], expires_at=row[5], metadata=bytes(row[6]),
    )


def _membership(row: Row) -> Membership:
    return Membership(
        case_id=row[0], participant_id=row[1], role=row[2], added_at=row[3], removed_at=row[4],
    )


async def fetch_participant(conn: SqlConn, participant_id: str) -> Participant:
    """Return the participant as ``conn`` sees it; ``NotFound`` if unknown."""
    check_id("participant_id", participant_id)
    rows = await conn.fetch(
        f"SELECT {_PARTICIPANT_COLS} FROM participants WHERE id = ?", participant_id
    )
    if not rows:
        raise NotFound(f"unknown participant {shown(participant_id)}")
    return _participant(rows[0])


async def insert_nonce(conn: SqlConn, keyid: str, nonce: str, expires_at: int) -> None:
    """Remember a request nonce on ``conn``; ``ReplayedNonce`` if this key used it before."""
    check_text("keyid", keyid)
    check_text("nonce", nonce)
    check_int("expires_at", expires_at)
    if not await conn.execute(
        "INSERT INTO seen_nonces (keyid, nonce, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT DO NOTHING", keyid, nonce, expires_at,
    ):
        raise ReplayedNonce(f"nonce {shown(nonce)} of key {shown(keyid)} was seen before")


def _check_type(name: str, value: object, cls: type) -> None:
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be {cls.__name__}, not {type(value).__name__}")


class SqlTransaction(CaseEventsMixin, StatementsMixin, ErasuresMixin):
    """A :class:`~exchange.storage.metadata.Transaction` over a :class:`SqlConn`.

    Valid only while its slot in the group commit is open; the sequencer
    closes it when the ``async with`` block ends.
    """

    def __init__(self, conn: SqlConn, audit: AuditLog, now: str, name: str) -> None:
        self._conn = conn
        self._audit = audit
        self._now = now
        self.name = name
        self.active = True
        self.aborted = False  # set when the sequencer failed under the running block
        #: Seconds the batch took to open (the log's lock, which another process's batch
        #: may hold, and its tail): part of every unit's wait for its turn.
        self.opened_in_s = 0.0

    def _check_active(self) -> None:
        if self.aborted:
            raise StoreClosed(f"transaction {self.name!r} was rolled back: the store stopped")
        if not self.active:
            raise RuntimeError("internal error: transaction used after its block ended")

    def __repr__(self) -> str:
        return f"SqlTransaction(name={self.name!r}, active={self.active})"

    async def _exec(self, sql: str, *args: object) -> int:
        self._check_active()
        return await self._conn.execute(sql, *args)

    async def _fetch(self, sql: str, *args: object) -> list[Row]:
        self._check_active()
        return await self._conn.fetch(sql, *args)

    async def _require(self, what: str, sql: str, *args: object) -> None:
        if not await self._fetch(sql, *args):
            raise NotFound(f"unknown {what} {shown(args[0] if len(args) == 1 else args)}")

    async def _require_participant(self, participant_id: str) -> None:
        await self._require("participant", "SELECT 1 FROM participants WHERE id = ?",
                            participant_id)

    async def _require_case(self, case_id: str) -> None:
        await self._require("case", "SELECT 1 FROM cases WHERE id = ?", case_id)

    # -- participants ----------------------------------------------------------

    async def add_participant(self, participant: Participant) -> None:
        """Insert ``participant``; ``AlreadyExists`` if its id or fingerprint is taken."""
        _check_type("participant", participant, Participant)
        p = participant
        changed = await self._exec(
            f"INSERT INTO participants ({_PARTICIPANT_COLS}) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            p.participant_id, p.role, p.organisation, p.country, p.display_name,
            p.signing_key, p.age_recipient, p.fingerprint, p.status.value, p.enrolled_at,
            p.enrolment_audit_index,
        )
        if not changed:
            raise AlreadyExists(
                f"participant {shown(p.participant_id)} or fingerprint "
                f"{shown(p.fingerprint)} exists already"
            )

    async def get_participant(self, participant_id: str) -> Participant:
        """Return the participant; ``NotFound`` if unknown."""
        self._check_active()
        return await fetch_participant(self._conn, participant_id)

    async def get_participant_by_fingerprint(self, fingerprint: str) -> Participant:
        """Return the participant with ``fingerprint``; ``NotFound`` if none."""
        check_id("fingerprint", fingerprint)
        rows = await self._fetch(
            f"SELECT {_PARTICIPANT_COLS} FROM participants WHERE fingerprint = ?", fingerprint
        )
        if not rows:
            raise NotFound(f"no participant with fingerprint {shown(fingerprint)}")
        return _participant(rows[0])

    async def set_participant_status(self, participant_id: str, status: ParticipantStatus) -> None:
        """Change a participant's status; ``NotFound`` if unknown."""
        check_id("participant_id", participant_id)
        _check_type("status", status, ParticipantStatus)
        if not await self._exec(
            "UPDATE participants SET status = ? WHERE id = ?", status.value, participant_id
        ):
            raise NotFound(f"unknown participant {shown(participant_id)}")

    async def list_participants(self) -> list[Participant]:
        """Return every participant, ordered by id."""
        rows = await self._fetch(f"SELECT {_PARTICIPANT_COLS} FROM participants ORDER BY id")
        return [_participant(r) for r in rows]

    # -- cases and memberships -------------------------------------------------

    async def create_case(self, case: Case) -> None:
        """Insert ``case``; ``NotFound`` for an unknown creator, ``AlreadyExists`` on a taken id."""
        _check_type("case", case, Case)
        await self._require_participant(case.created_by)
        if not await self._exec(
            "INSERT INTO cases (id, metadata, created_by, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            case.case_id, case.metadata, case.created_by, case.created_at,
        ):
            raise AlreadyExists(f"case {shown(case.case_id)} exists already")

    async def get_case(self, case_id: str) -> Case:
        """Return the case; ``NotFound`` if unknown."""
        check_id("case_id", case_id)
        rows = await self._fetch(
            "SELECT id, metadata, created_by, created_at FROM cases WHERE id = ?", case_id
        )
        if not rows:
            raise NotFound(f"unknown case {shown(case_id)}")
        r = rows[0]
        return Case(case_id=r[0], metadata=bytes(r[1]), created_by=r[2], created_at=r[3])

    async def list_cases_for(self, participant_id: str) -> list[Case]:
        """Return the cases where ``participant_id`` is an active member, ordered by id."""
        check_id("participant_id", participant_id)
        rows = await self._fetch(
            "SELECT c.id, c.metadata, c.created_by, c.created_at FROM cases c "
            "JOIN memberships m ON m.case_id = c.id "
            "WHERE m.participant_id = ? AND m.removed_at IS NULL ORDER BY c.id",
            participant_id,
        )
        return [
            Case(case_id=r[0], metadata=bytes(r[1]), created_by=r[2], created_at=r[3])
            for r in rows
        ]

    async def add_member(self, membership: Membership) -> None:
        """Add an active membership; ``AlreadyExists`` if the participant is an active member."""
        _check_type("membership", membership, Membership)
        m = membership
        if m.removed_at is not None:
            raise InvalidValue("a new membership must not have removed_at set")
        await self._require_case(m.case_id)
        await self._require_participant(m.participant_id)
        if not await self._exec(
            "INSERT INTO memberships (case_id, participant_id, role, added_at, removed_at) "
            "VALUES (?, ?, ?, ?, NULL) ON CONFLICT DO NOTHING",
            m.case_id, m.participant_id, m.role, m.added_at,
        ):
            raise AlreadyExists(
                f"participant {shown(m.participant_id)} is a member of case "
                f"{shown(m.case_id)} already"
            )

    async def remove_member(self, case_id: str, participant_id: str, removed_at: int) -> None:
        """End an active membership; ``NotFound`` if there is none."""
        check_id("case_id", case_id)
        check_id("participant_id", participant_id)
        check_int("removed_at", removed_at)
        if not await self._exec(
            "UPDATE memberships SET removed_at = ? "
            "WHERE case_id = ? AND participant_id = ? AND removed_at IS NULL",
            removed_at, case_id, participant_id,
        ):
            raise NotFound(
                f"participant {shown(participant_id)} is not a member of case {shown(case_id)}"
            )

    async def get_membership(self, case_id: str, participant_id: str) -> Membership:
        """Return the active membership; ``NotFound`` if there is none."""
        check_id("case_id", case_id)
        check_id("participant_id", participant_id)
        rows = await self._fetch(
            "SELECT case_id, participant_id, role, added_at, removed_at FROM memberships "
            "WHERE case_id = ? AND participant_id = ? AND removed_at IS NULL",
            case_id, participant_id,
        )
        if not rows:
            raise NotFound(
                f"participant {shown(participant_id)} is not a member of case {shown(case_id)}"
            )
        return _membership(rows[0])

    async def list_members(
        self, case_id: str, *, include_removed: bool = False
    ) -> list[Membership]:
        """Return the case's memberships (active only unless ``include_removed``)."""
        check_id("case_id", case_id)
        await self._require_case(case_id)
        rows = await self._fetch(
            "SELECT case_id, participant_id, role, added_at, removed_at FROM memberships "
            "WHERE case_id = ? AND (? OR removed_at IS NULL) "
            "ORDER BY added_at, participant_id, id",
            case_id, include_removed,
        )
        return [_membership(r) for r in rows]

    # -- key epochs and envelopes ----------------------------------------------

    async def add_key_epoch(self, epoch: KeyEpoch) -> None:
        """Insert a key epoch; ``AlreadyExists`` if that number is taken for the case."""
        _check_type("epoch", epoch, KeyEpoch)
        await self._require_case(epoch.case_id)
        await self._require_participant(epoch.created_by)
        if not await self._exec(
            "INSERT INTO key_epochs (case_id, epoch, recipient, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            epoch.case_id, epoch.epoch, epoch.recipient, epoch.created_by, epoch.created_at,
        ):
            raise AlreadyExists(f"epoch {epoch.epoch} of case {shown(epoch.case_id)} exists")

    async def get_key_epoch(self, case_id: str, epoch: int) -> KeyEpoch:
        """Return one epoch; ``NotFound`` if unknown."""
        check_id("case_id", case_id)
        check_int("epoch", epoch)
        rows = await self._fetch(
            "SELECT case_id, epoch, recipient, created_by, created_at FROM key_epochs "
            "WHERE case_id = ? AND epoch = ?", case_id, epoch,
        )
        if not rows:
            raise NotFound(f"unknown epoch {epoch} of case {shown(case_id)}")
        r = rows[0]
        return KeyEpoch(case_id=r[0], epoch=r[1], recipient=r[2], created_by=r[3],
                        created_at=r[4])

    async def latest_key_epoch(self, case_id: str) -> KeyEpoch:
        """Return the case's highest epoch; ``NotFound`` if the case has none."""
        check_id("case_id", case_id)
        rows = await self._fetch(
            "SELECT case_id, epoch, recipient, created_by, created_at FROM key_epochs "
            "WHERE case_id = ? ORDER BY epoch DESC LIMIT 1", case_id,
        )
        if not rows:
            raise NotFound(f"case {shown(case_id)} has no key epoch")
        r = rows[0]
        return KeyEpoch(case_id=r[0], epoch=r[1], recipient=r[2], created_by=r[3],
                        created_at=r[4])

    async def put_envelope(self, envelope: Envelope) -> None:
        """Insert an envelope; ``AlreadyExists`` if that member already has one for the epoch."""
        _check_type("envelope", envelope, Envelope)
        e = envelope
        await self._require("key epoch", "SELECT 1 FROM key_epochs WHERE case_id = ? AND epoch = ?",
                            e.case_id, e.epoch)
        await self._require_participant(e.participant_id)
        if not await self._exec(
            "INSERT INTO envelopes (case_id, epoch, participant_id, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            e.case_id, e.epoch, e.participant_id, e.data,
        ):
            raise AlreadyExists(
                f"envelope for {shown(e.participant_id)} in epoch {e.epoch} of case "
                f"{shown(e.case_id)} exists already"
            )

    async def get_envelope(self, case_id: str, epoch: int, participant_id: str) -> Envelope:
        """Return one envelope; ``NotFound`` if absent."""
        check_id("case_id", case_id)
        check_int("epoch", epoch)
        check_id("participant_id", participant_id)
        rows = await self._fetch(
            "SELECT data FROM envelopes WHERE case_id = ? AND epoch = ? AND participant_id = ?",
            case_id, epoch, participant_id,
        )
        if not rows:
            raise NotFound(
                f"no envelope for {shown(participant_id)} in epoch {epoch} of case {shown(case_id)}"
            )
        return Envelope(case_id=case_id, epoch=epoch, participant_id=participant_id,
                        data=bytes(rows[0][0]))

    # -- evidence ----------------------------------------------------------------

    async def add_evidence(self, record: EvidenceRecord) -> None:
        """Insert an evidence record; ``AlreadyExists`` if the id is taken."""
        _check_type("record", record, EvidenceRecord)
        r = record
        await self._require("key epoch", "SELECT 1 FROM key_epochs WHERE case_id = ? AND epoch = ?",
                            r.case_id, r.epoch)
        await self._require_participant(r.uploader)
        if not await self._exec(
            f"INSERT INTO evidence ({_EVIDENCE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            r.evidence_id, r.case_id, r.blob_id, r.ciphertext_size, r.sealed_manifest,
            r.uploader, r.epoch, r.committed_at, r.audit_index,
        ):
            raise AlreadyExists(f"evidence {shown(r.evidence_id)} exists already")

    async def get_evidence(self, evidence_id: str) -> EvidenceRecord:
        """Return one evidence record; ``NotFound`` if unknown."""
        check_id("evidence_id", evidence_id)
        rows = await self._fetch(f"SELECT {_EVIDENCE_COLS} FROM evidence WHERE id = ?",
                                 evidence_id)
        if not rows:
            raise NotFound(f"unknown evidence {shown(evidence_id)}")
        return _evidence(rows[0])

    async def list_evidence(self, case_id: str) -> list[EvidenceRecord]:
        """Return the case's evidence in commit order; ``NotFound`` for an unknown case."""
        check_id("case_id", case_id)
        await self._require_case(case_id)
        rows = await self._fetch(
            f"SELECT {_EVIDENCE_COLS} FROM evidence WHERE case_id = ? "
            "ORDER BY committed_at, audit_index", case_id,
        )
        return [_evidence(r) for r in rows]

    # -- upload sessions ---------------------------------------------------------

    async def create_upload_session(self, session: UploadSession) -> None:
        """Insert an upload session; ``AlreadyExists`` if the id is taken."""
        _check_type("session", session, UploadSession)
        s = session
        await self._require_participant(s.participant_id)
        await self._require_case(s.case_id)
        if not await self._exec(
            f"INSERT INTO upload_sessions ({_UPLOAD_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            s.upload_id, s.participant_id, s.case_id, s.length, s.offset, s.expires_at,
            s.metadata,
        ):
            raise AlreadyExists(f"upload {shown(s.upload_id)} exists already")

    async def get_upload_session(self, upload_id: str) -> UploadSession:
        """Return one upload session; ``NotFound`` if unknown."""
        check_id("upload_id", upload_id)
        rows = await self._fetch(f"SELECT {_UPLOAD_COLS} FROM upload_sessions WHERE id = ?",
                                 upload_id)
        if not rows:
            raise NotFound(f"unknown upload {shown(upload_id)}")
        return _upload(rows[0])

    async def advance_upload_session(
        self, upload_id: str, expected_offset: int, new_offset: int
    ) -> None:
        """Move the offset from ``expected_offset`` to ``new_offset``.

        Raises ``NotFound``, ``UploadOffsetMismatch`` when the stored offset
        differs, ``ValueTooLarge`` past the length and ``InvalidValue`` backwards.
        """
        check_id("upload_id", upload_id)
        check_int("expected_offset", expected_offset)
        check_int("new_offset", new_offset)
        if new_offset < expected_offset:
            raise InvalidValue(f"new offset {new_offset} is before {expected_offset}")
        if await self._exec(
            "UPDATE upload_sessions SET upload_offset = ? "
            "WHERE id = ? AND upload_offset = ? AND length >= ?",
            new_offset, upload_id, expected_offset, new_offset,
        ):
            return
        current = await self.get_upload_session(upload_id)
        if current.offset != expected_offset:
            raise UploadOffsetMismatch(
                f"upload offset {expected_offset} does not match stored offset {current.offset}",
                expected=current.offset, found=expected_offset,
            )
        raise ValueTooLarge(f"offset {new_offset} is past the upload length {current.length}")

    async def delete_upload_session(self, upload_id: str) -> None:
        """Delete an upload session; ``NotFound`` if unknown."""
        check_id("upload_id", upload_id)
        if not await self._exec("DELETE FROM upload_sessions WHERE id = ?", upload_id):
            raise NotFound(f"unknown upload {shown(upload_id)}")

    async def expired_upload_sessions(self, now: int) -> list[UploadSession]:
        """Return sessions with ``expires_at <= now``, oldest first."""
        check_int("now", now)
        rows = await self._fetch(
            f"SELECT {_UPLOAD_COLS} FROM upload_sessions WHERE expires_at <= ? "
            "ORDER BY expires_at, id", now,
        )
        return [_upload(r) for r in rows]

    # -- replay protection -------------------------------------------------------

    async def record_nonce(self, keyid: str, nonce: str, expires_at: int) -> None:
        """Remember a request nonce; ``ReplayedNonce`` if this key used it before."""
        self._check_active()
        await insert_nonce(self._conn, keyid, nonce, expires_at)

    async def purge_nonces(self, now: int) -> int:
        """Forget nonces with ``expires_at <= now``; return how many."""
        check_int("now", now)
        return await self._exec("DELETE FROM seen_nonces WHERE expires_at <= ?", now)

    # -- audit ---------------------------------------------------------------------

    async def append_audit(self, make_entry: EntryFactory) -> AppendedEntry:
        """Append ``make_entry(index, prev, time)`` to the log, committing with this unit.

        The entry is written when the batch commits; its index and hashes are
        final once this returns (the write lock is held).
        """
        self._check_active()
        return self._audit.append(make_entry, self._now)


__all__ = ["DatabaseError", "Row", "SqlConn", "SqlTransaction", "fetch_participant",
           "insert_nonce"]
