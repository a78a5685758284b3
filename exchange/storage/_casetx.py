"""Transaction methods for case events (the live feed) and participant bundles (key changes).

Mixed into :class:`~exchange.storage._sqltx.SqlTransaction`; same shared SQL
dialect, same error contract (``NotFound`` for unknown references,
``AlreadyExists`` for a duplicate key). Migration ``0002_case_events``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exchange.storage.errors import AlreadyExists, NotFound, shown
from exchange.storage.metadata import (
    MAX_RECIPIENT_CHARS,
    MAX_SMALL_BLOB_BYTES,
    check_bytes,
    check_id,
    check_int,
    check_text,
)

__all__ = ["MAX_EVENTS_PER_READ", "CaseEvent", "CaseEventsMixin", "ParticipantBundle"]

#: The most events one ``case_events`` call returns.
MAX_EVENTS_PER_READ = 1000
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}")


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseEvent:
    """One event of a case's live feed; ``audit_index`` is its entry (and the SSE id)."""

    case_id: str
    audit_index: int
    kind: str
    payload: str  # JSON text

    def __post_init__(self) -> None:
        check_id("case_id", self.case_id)
        check_int("audit_index", self.audit_index)
        if not isinstance(self.kind, str) or not _KIND.fullmatch(self.kind):
            raise TypeError(f"kind must be a short lowercase name, found {self.kind!r:.40}")
        check_text("payload", self.payload, MAX_SMALL_BLOB_BYTES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParticipantBundle:
    """A participant's whole public bundle (JSON) and the audit index that logged it."""

    participant_id: str
    bundle: bytes
    audit_index: int

    def __post_init__(self) -> None:
        check_id("participant_id", self.participant_id)
        check_bytes("bundle", self.bundle, MAX_SMALL_BLOB_BYTES)
        check_int("audit_index", self.audit_index)


class CaseEventsMixin:
    """The methods; the host class provides ``_exec`` and ``_fetch`` (see ``SqlTransaction``)."""

    async def _exec(self, sql: str, *args: object) -> int:
        raise NotImplementedError

    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def add_case_event(self, event: CaseEvent) -> None:
        """Insert a case event; ``NotFound`` for an unknown case, ``AlreadyExists`` if taken."""
        if not isinstance(event, CaseEvent):
            raise TypeError(f"event must be CaseEvent, not {type(event).__name__}")
        if not await self._fetch("SELECT 1 FROM cases WHERE id = ?", event.case_id):
            raise NotFound(f"unknown case {shown(event.case_id)}")
        if not await self._exec(
            "INSERT INTO case_events (case_id, audit_index, kind, payload) VALUES (?, ?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            event.case_id, event.audit_index, event.kind, event.payload,
        ):
            raise AlreadyExists(
                f"case event {event.audit_index} of case {shown(event.case_id)} exists already"
            )

    async def case_events(
        self, case_id: str, *, after: int = -1, limit: int = MAX_EVENTS_PER_READ
    ) -> list[CaseEvent]:
        """Return the case's events with ``audit_index > after``, oldest first (``limit`` max)."""
        check_id("case_id", case_id)
        if not isinstance(after, int) or after < -1:
            raise TypeError("after must be an int >= -1")
        if not 1 <= limit <= MAX_EVENTS_PER_READ:
            raise ValueError(f"limit must be in [1, {MAX_EVENTS_PER_READ}], found {limit}")
        rows = await self._fetch(
            "SELECT case_id, audit_index, kind, payload FROM case_events "
            "WHERE case_id = ? AND audit_index > ? ORDER BY audit_index LIMIT ?",
            case_id, after, limit,
        )
        return [CaseEvent(case_id=str(r[0]), audit_index=int(r[1]), kind=str(r[2]),
                          payload=str(r[3])) for r in rows]

    async def put_participant_bundle(self, record: ParticipantBundle) -> None:
        """Store (or replace) a participant's bundle; ``NotFound`` for an unknown participant."""
        if not isinstance(record, ParticipantBundle):
            raise TypeError(f"record must be ParticipantBundle, not {type(record).__name__}")
        if not await self._fetch("SELECT 1 FROM participants WHERE id = ?",
                                 record.participant_id):
            raise NotFound(f"unknown participant {shown(record.participant_id)}")
        await self._exec(
            "INSERT INTO participant_bundles (participant_id, bundle, audit_index) "
            "VALUES (?, ?, ?) ON CONFLICT (participant_id) DO UPDATE SET "
            "bundle = excluded.bundle, audit_index = excluded.audit_index",
            record.participant_id, record.bundle.decode("utf-8"), record.audit_index,
        )

    async def get_participant_bundle(self, participant_id: str) -> ParticipantBundle:
        """Return a participant's stored bundle; ``NotFound`` if none was stored."""
        check_id("participant_id", participant_id)
        rows = await self._fetch(
            "SELECT participant_id, bundle, audit_index FROM participant_bundles "
            "WHERE participant_id = ?", participant_id,
        )
        if not rows:
            raise NotFound(f"no bundle stored for participant {shown(participant_id)}")
        row = rows[0]
        return ParticipantBundle(participant_id=str(row[0]), bundle=str(row[1]).encode("utf-8"),
                                 audit_index=int(row[2]))

    async def change_participant_keys(
        self, participant_id: str, *, display_name: str, signing_key: bytes,
        age_recipient: str, fingerprint: str,
    ) -> None:
        """Replace a participant's public keys; ``NotFound`` if unknown, ``AlreadyExists``
        if the fingerprint belongs to another participant."""
        check_id("participant_id", participant_id)
        check_text("display_name", display_name)
        check_bytes("signing_key", signing_key, 64)
        check_text("age_recipient", age_recipient, MAX_RECIPIENT_CHARS)
        check_id("fingerprint", fingerprint)
        taken = await self._fetch(
            "SELECT id FROM participants WHERE fingerprint = ? AND id <> ?",
            fingerprint, participant_id,
        )
        if taken:
            raise AlreadyExists(f"fingerprint {shown(fingerprint)} belongs to another participant")
        if not await self._exec(
            "UPDATE participants SET display_name = ?, signing_key = ?, age_recipient = ?, "
            "fingerprint = ? WHERE id = ?",
            display_name, signing_key, age_recipient, fingerprint, participant_id,
        ):
            raise NotFound(f"unknown participant {shown(participant_id)}")
