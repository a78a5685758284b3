"""Appending entries to an audit log in memory: sequence numbers, the prev chain, the tree.

Pure bookkeeping the server (and tests, benchmarks) share, so every writer
assigns ``index`` and ``prev`` the same way the verifier checks them. A store
persists what :meth:`LogBuilder.append` returns and can resume with
:meth:`LogBuilder.resume`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exchange.audit.entry import (
    PREV_SIZE,
    ZERO_PREV,
    AuditEntry,
    DetailValue,
    RequestEvidence,
    entry_hash,
)
from exchange.audit.tree import MerkleTree, NodeTuple, leaf_hash


class LogBuilder:
    """Assigns index and prev to new entries and keeps the Merkle tree's compact range."""

    __slots__ = ("_prev", "_tree")

    def __init__(self) -> None:
        self._tree = MerkleTree()
        self._prev = ZERO_PREV

    @classmethod
    def resume(cls, size: int, tree_state: Sequence[bytes], last_entry_hash: bytes) -> LogBuilder:
        """Return a builder continuing a log of ``size`` entries (state from a store)."""
        if len(last_entry_hash) != PREV_SIZE:
            raise ValueError(f"last entry hash must be {PREV_SIZE} bytes")
        if size == 0 and last_entry_hash != ZERO_PREV:
            raise ValueError("an empty log has an all-zero last entry hash")
        builder = cls()
        builder._tree = MerkleTree.from_state(size, tree_state)
        builder._prev = last_entry_hash
        return builder

    @property
    def size(self) -> int:
        """The number of entries appended so far (the next entry's index)."""
        return self._tree.size

    @property
    def tree(self) -> MerkleTree:
        """The Merkle tree over the entries so far (do not append to it directly)."""
        return self._tree

    @property
    def last_entry_hash(self) -> bytes:
        """SHA-256 of the last entry's encoding (the next entry's prev)."""
        return self._prev

    def append(
        self,
        *,
        time: str,
        actor: str,
        actor_key: str,
        action: str,
        case: str | None = None,
        object: str | None = None,  # the entry field is named object
        outcome: str = "ok",
        reason: str | None = None,
        request: RequestEvidence | None = None,
        details: Mapping[str, DetailValue] | None = None,
    ) -> tuple[AuditEntry, bytes, list[NodeTuple]]:
        """Append one entry; return it, its encoding and the tree nodes it completed."""
        if outcome not in ("ok", "denied"):
            raise ValueError(f"outcome must be 'ok' or 'denied', found {outcome!r:.20}")
        entry = AuditEntry(
            index=self._tree.size, time=time, actor=actor, actor_key=actor_key, action=action,
            case=case, object=object, outcome="ok" if outcome == "ok" else "denied",
            reason=reason, request=request, details=dict(details or {}), prev=self._prev,
        )
        data = entry.encode()
        nodes = self._tree.append(leaf_hash(data))
        self._prev = entry_hash(data)
        return entry, data, nodes
