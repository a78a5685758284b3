"""Transaction methods for signed statements (issue 10; migration ``0004_statements``).

The store keeps each statement's exact bytes with its chain, sequence number,
hash and the audit index of the entry that carries it. It does not judge
statements (``exchange.crypto.chains`` does, in the service and in clients);
it only refuses a second statement at the same place of a chain, so two
concurrent requests cannot both extend one head.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from exchange.storage.errors import AlreadyExists, NotFound, shown
from exchange.storage.metadata import MAX_SMALL_BLOB_BYTES, check_bytes, check_int, check_text

__all__ = ["MAX_STATEMENTS_PER_READ", "StatementsMixin", "StoredStatement"]

MAX_STATEMENTS_PER_READ = 1000
MAX_STATEMENT_CHARS = 64 * 1024
_CHAIN = re.compile(r"directory|case:[a-z0-9][a-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredStatement:
    """One stored statement: where it stands in its chain and which entry logged it."""

    chain: str
    seq: int
    hash: str
    statement: bytes
    audit_index: int

    def __post_init__(self) -> None:
        if not isinstance(self.chain, str) or not _CHAIN.fullmatch(self.chain):
            raise TypeError(f"chain must be 'directory' or 'case:<id>', found {self.chain!r:.60}")
        check_int("seq", self.seq)
        check_int("audit_index", self.audit_index)
        if not isinstance(self.hash, str) or not _HEX64.fullmatch(self.hash):
            raise TypeError("hash must be 64 lowercase hex digits")
        if not isinstance(self.statement, bytes):
            raise TypeError("statement must be bytes")
        check_text("statement", self.statement.decode("utf-8", "replace"), MAX_STATEMENT_CHARS)


class StatementsMixin:
    """The methods; the host class provides ``_exec`` and ``_fetch`` (see ``SqlTransaction``)."""

    async def _exec(self, sql: str, *args: object) -> int:
        raise NotImplementedError

    async def _fetch(self, sql: str, *args: object) -> list[Sequence[Any]]:
        raise NotImplementedError

    async def add_statement(self, record: StoredStatement) -> None:
        """Store a statement; ``AlreadyExists`` when its place in the chain is taken."""
        if not isinstance(record, StoredStatement):
            raise TypeError(f"record must be StoredStatement, not {type(record).__name__}")
        if not await self._exec(
            "INSERT INTO statements (chain, seq, hash, statement, audit_index) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            record.chain, record.seq, record.hash, record.statement.decode("utf-8"),
            record.audit_index,
        ):
            raise AlreadyExists(f"statement {record.seq} of {record.chain!r} exists already")

    async def set_participant_role(self, participant_id: str, role: str) -> None:
        """Change a participant's role (a ``participant.role`` statement); ``NotFound`` if none."""
        check_text("role", role, 32)
        if not await self._exec("UPDATE participants SET role = ? WHERE id = ?", role,
                                participant_id):
            raise NotFound(f"unknown participant {shown(participant_id)}")

    async def replace_envelope(self, case_id: str, epoch: int, participant_id: str,
                               data: bytes) -> None:
        """Store an envelope, replacing the member's earlier one of that epoch (a re-wrap
        to a participant's new keys, which a ``case.envelope_add`` statement vouches for)."""
        check_bytes("data", data, MAX_SMALL_BLOB_BYTES)
        if not await self._exec(
            "UPDATE envelopes SET data = ? WHERE case_id = ? AND epoch = ? AND participant_id = ?",
            data, case_id, epoch, participant_id,
        ):
            await self._exec(
                "INSERT INTO envelopes (case_id, epoch, participant_id, data) VALUES (?, ?, ?, ?)",
                case_id, epoch, participant_id, data)

    async def list_statements(self, chain: str, *, after: int = -1,
                              limit: int = MAX_STATEMENTS_PER_READ) -> list[StoredStatement]:
        """Return the statements of ``chain`` with ``seq > after``, in order (``limit`` max)."""
        if not isinstance(chain, str) or not _CHAIN.fullmatch(chain):
            raise TypeError(f"chain must be 'directory' or 'case:<id>', found {chain!r:.60}")
        if not isinstance(after, int) or after < -1:
            raise TypeError("after must be an int >= -1")
        if not 1 <= limit <= MAX_STATEMENTS_PER_READ:
            raise ValueError(f"limit must be in [1, {MAX_STATEMENTS_PER_READ}]")
        rows = await self._fetch(
            "SELECT chain, seq, hash, statement, audit_index FROM statements "
            "WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?", chain, after, limit)
        return [StoredStatement(chain=str(r[0]), seq=int(r[1]), hash=str(r[2]),
                                statement=str(r[3]).encode("utf-8"), audit_index=int(r[4]))
                for r in rows]
