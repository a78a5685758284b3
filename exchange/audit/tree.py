"""RFC 6962 / RFC 9162 §2.1 Merkle tree hashing (SHA-256) and an incremental tree.

The incremental tree is a *compact range* over [0, size): one perfect-subtree
hash per set bit of ``size``, so its state is O(log n). Appending reports every
full-subtree node it completes, which is all a store has to persist to answer
proofs and build tiles later (``exchange.audit.proof``, ``exchange.audit.tiles``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from exchange.errors import AuditError

HASH_SIZE = 32  # SHA-256 output, RFC 9162 §2.1
LEAF_PREFIX = b"\x00"  # RFC 6962 §2.1: MTH({d(0)}) = SHA-256(0x00 || d(0))
NODE_PREFIX = b"\x01"  # RFC 6962 §2.1: SHA-256(0x01 || MTH(left) || MTH(right))
MAX_TREE_SIZE = 2**64 - 1  # sizes travel as uint64 in checkpoints and tiles

_EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeTuple = tuple[int, int, bytes]
"""(level, index, hash) of a full subtree covering leaves [index·2^level, (index+1)·2^level)."""


class TreeStateError(AuditError, ValueError):
    """A serialized tree state does not describe a valid compact range."""


def leaf_hash(data: bytes) -> bytes:
    """Return the RFC 6962 leaf hash SHA-256(0x00 || data)."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 6962 interior node hash SHA-256(0x01 || left || right).

    Children of any length are accepted (the hasher vectors use 4-byte ones);
    callers that handle untrusted proofs check lengths before hashing.
    """
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def empty_root() -> bytes:
    """Return the root of the empty tree, SHA-256 of the empty string (not a leaf hash)."""
    return _EMPTY_ROOT


def fold_right(hashes: Sequence[bytes]) -> bytes:
    """Return the hash of adjacent perfect subtrees given left to right (largest first).

    This is how the root of a non-perfect range is formed: the right-most pair
    is combined first, then each hash to its left (RFC 6962 §2.1 split rule).
    Requires at least one hash.
    """
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = hashlib.sha256(NODE_PREFIX + left + acc).digest()
    return acc


def range_nodes(begin: int, end: int) -> list[tuple[int, int]]:
    """Return the (level, index) ids of the perfect subtrees covering [begin, end), left to right.

    Each node is the largest aligned perfect subtree that starts at the current
    position and fits in the range, so [0, n) decomposes into one node per set
    bit of n, largest first.
    """
    out: list[tuple[int, int]] = []
    while begin < end:
        level = (begin & -begin).bit_length() - 1 if begin else 64
        while (1 << level) > end - begin:
            level -= 1
        out.append((level, begin >> level))
        begin += 1 << level
    return out


class MerkleTree:
    """An append-only RFC 6962 tree that keeps only its compact range (O(log n) hashes).

    Not thread-safe; one writer owns an instance. ``append`` takes a *leaf hash*
    (compute it with :func:`leaf_hash`) so callers can hash entries where they
    already hold the bytes.
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, hashes: Sequence[bytes]) -> MerkleTree:
        """Return a tree resumed from ``state()`` output: one 32-byte hash per set bit of size.

        Raises :class:`TreeStateError` when the count or a length is wrong.
        """
        if not isinstance(size, int) or isinstance(size, bool):
            raise TypeError("size must be an int")
        if not 0 <= size <= MAX_TREE_SIZE:
            raise TreeStateError(f"tree size {size} is outside [0, 2**64)")
        want = size.bit_count()
        if len(hashes) != want:
            raise TreeStateError(f"wrong number of state hashes {len(hashes)}, want {want}")
        for position, value in enumerate(hashes):
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise TreeStateError(f"state hash {position} is not {HASH_SIZE} bytes")
        tree = cls()
        tree._size = size
        tree._hashes = list(hashes)
        return tree

    @property
    def size(self) -> int:
        """The number of leaves appended so far."""
        return self._size

    def state(self) -> list[bytes]:
        """Return the compact range: perfect-subtree hashes of [0, size), largest first."""
        return list(self._hashes)

    def append(self, leaf: bytes) -> list[NodeTuple]:
        """Append one leaf hash; return the full-subtree nodes it completed, bottom up.

        The first tuple is always the leaf itself at (0, old size); each further
        tuple is a parent that became complete. Persisting these is enough to
        serve any later proof or tile.
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, found {len(leaf)}")
        index = self._size
        completed: list[NodeTuple] = [(0, index, leaf)]
        acc = leaf
        level = 0
        hashes = self._hashes
        while index & 1:
            acc = hashlib.sha256(NODE_PREFIX + hashes.pop() + acc).digest()
            index >>= 1
            level += 1
            completed.append((level, index, acc))
        hashes.append(acc)
        self._size += 1
        return completed

    def extend(self, leaves: Iterable[bytes]) -> None:
        """Append many leaf hashes without reporting completed nodes (the fast path)."""
        sha256 = hashlib.sha256
        hashes = self._hashes
        size = self._size
        try:
            for leaf in leaves:
                if len(leaf) != HASH_SIZE:
                    raise ValueError(f"leaf hash must be {HASH_SIZE} bytes, found {len(leaf)}")
                acc = leaf
                index = size
                while index & 1:
                    acc = sha256(NODE_PREFIX + hashes.pop() + acc).digest()
                    index >>= 1
                hashes.append(acc)
                size += 1
        finally:
            # Leaves before a bad one (or a failing iterator) are in ``hashes``
            # already: the size must count them, or the compact range is corrupt.
            self._size = size

    def root(self) -> bytes:
        """Return the RFC 6962 root hash of the current tree (SHA-256("") when empty)."""
        if not self._hashes:
            return _EMPTY_ROOT
        return fold_right(self._hashes)

    def __repr__(self) -> str:
        return f"MerkleTree(size={self._size})"
