"""The audit log's write side inside a transaction batch (DESIGN.md §7, RFC 6962 §2.1).

Holds the tree's compact range and the last entry hash, loaded under the write
lock at the start of each batch, so that every entry gets the next index and
its predecessor's hash: no gaps, no duplicates, one ``prev`` chain, also with
several processes. New entries and completed tree nodes are buffered and
written with a few multi-row statements just before the batch commits; a
unit's savepoint rollback also rewinds this buffer (:meth:`mark`/:meth:`reset`).
The Merkle hashing itself is ``exchange.audit.tree``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.audit.entry import entry_hash
from exchange.audit.tree import HASH_SIZE, MerkleTree, NodeTuple, leaf_hash
from exchange.storage._sqltx import SqlConn
from exchange.storage.errors import InvalidValue, ValueTooLarge
from exchange.storage.metadata import MAX_ENTRY_BYTES, AppendedEntry, EntryFactory

ZERO_HASH = bytes(HASH_SIZE)  # prev of entry 0


def pack_frontier(hashes: list[bytes]) -> bytes:
    """Return the compact range as one byte string (32 bytes per hash)."""
    return b"".join(hashes)


def unpack_frontier(data: bytes) -> list[bytes]:
    """Split a packed compact range back into 32-byte hashes."""
    if len(data) % HASH_SIZE:
        raise RuntimeError(f"internal error: stored frontier has {len(data)} bytes")
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


@dataclass(frozen=True, slots=True)
class _Mark:
    size: int
    frontier: list[bytes]
    last_hash: bytes
    entries: int
    nodes: int


class AuditLog:
    """The log's tail during one batch; owned by the batch's single task."""

    def __init__(self, size: int, frontier: list[bytes], last_hash: bytes) -> None:
        self._tree = MerkleTree.from_state(size, frontier)
        self._last_hash = last_hash
        self._entries: list[tuple[int, bytes, bytes]] = []
        self._nodes: list[NodeTuple] = []
        self._loaded_size = size

    @classmethod
    async def load(cls, conn: SqlConn) -> AuditLog:
        """Read the tail; MUST be called with the write lock held."""
        rows = await conn.fetch("SELECT size, frontier, last_entry_hash FROM audit_state")
        if len(rows) != 1:
            raise RuntimeError("internal error: audit_state must hold exactly one row")
        size, frontier, last = rows[0]
        return cls(int(size), unpack_frontier(bytes(frontier)), bytes(last))

    @property
    def size(self) -> int:
        """The tree size including entries not yet committed in this batch."""
        return self._tree.size

    def root(self) -> bytes:
        """The root of the tree including this batch's entries."""
        return self._tree.root()

    def append(self, make_entry: EntryFactory, now: str) -> AppendedEntry:
        """Build and append the next entry; raise ``InvalidValue`` if it is not well placed."""
        index = self._tree.size
        entry = make_entry(index, self._last_hash, now)
        if entry.index != index or entry.prev != self._last_hash:
            raise InvalidValue(
                f"entry claims index {entry.index}, want {index}, or a prev other than "
                "the last entry's hash"
            )
        encoded = entry.encode()
        if len(encoded) > MAX_ENTRY_BYTES:
            raise ValueTooLarge(f"audit entry has {len(encoded)} bytes, limit {MAX_ENTRY_BYTES}")
        leaf = leaf_hash(encoded)
        self._nodes.extend(self._tree.append(leaf))
        self._entries.append((index, encoded, leaf))
        self._last_hash = entry_hash(encoded)
        return AppendedEntry(index=index, entry_hash=self._last_hash, leaf_hash=leaf)

    def mark(self) -> _Mark:
        """Remember the current tail (taken before each unit's savepoint)."""
        return _Mark(self._tree.size, self._tree.state(), self._last_hash,
                     len(self._entries), len(self._nodes))

    def reset(self, mark: _Mark) -> None:
        """Rewind to ``mark`` (after the unit's savepoint was rolled back)."""
        self._tree = MerkleTree.from_state(mark.size, mark.frontier)
        self._last_hash = mark.last_hash
        del self._entries[mark.entries :]
        del self._nodes[mark.nodes :]

    async def flush(self, conn: SqlConn) -> None:
        """Write the buffered entries, nodes and the new tail (inside the batch transaction)."""
        if not self._entries:
            return
        await conn.executemany(
            "INSERT INTO audit_entries (idx, entry, leaf_hash) VALUES (?, ?, ?)", self._entries
        )
        await conn.executemany(
            "INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", self._nodes
        )
        changed = await conn.execute(
            "UPDATE audit_state SET size = ?, frontier = ?, last_entry_hash = ? WHERE size = ?",
            self._tree.size, pack_frontier(self._tree.state()), self._last_hash,
            self._loaded_size,
        )
        if changed != 1:
            # Another writer moved the log without holding the lock: refuse to fork it.
            raise RuntimeError("internal error: audit log moved under the write lock")
        self._entries.clear()
        self._nodes.clear()
        self._loaded_size = self._tree.size


__all__ = ["ZERO_HASH", "AuditLog", "pack_frontier", "unpack_frontier"]
