"""RFC 6962 §2.1.1–2.1.2 / RFC 9162 §2.1.3–2.1.4 inclusion and consistency proofs.

Theory of operation: a proof is a list of subtree hashes (RFC 6962 ``PATH`` and
``PROOF``). Each element covers a leaf range [a, b); ranges that end before the
tree size are perfect subtrees, a range ending at the tree size may be an
*ephemeral* node that the store never persisted. :func:`inclusion_nodes` and
:func:`consistency_nodes` therefore say which perfect-subtree node ids
(level, index) to fetch and how to fold them back into one hash per proof
element (:meth:`ProofNodes.rehash`). Storage never sees proof logic and proof
logic never touches storage (after transparency-dev/merkle).

Policy (documented, tested): a consistency proof from size 0 is valid only when
it is EMPTY and the old root is SHA-256("") — the c2sp.org/tlog-witness rule;
equal sizes need an empty proof and identical roots; every hash must be 32
bytes; proof lengths must be exact.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from exchange.audit.tree import (
    HASH_SIZE,
    MAX_TREE_SIZE,
    NODE_PREFIX,
    NodeTuple,
    empty_root,
    fold_right,
    node_hash,
    range_nodes,
)
from exchange.errors import AuditError

NodeId = tuple[int, int]
"""(level, index): the perfect subtree over leaves [index·2^level, (index+1)·2^level)."""

HashGetter = Callable[[Sequence[NodeId]], Sequence[bytes]]
"""Return the hash of each requested full-subtree node, in order.

Contract for stores: MUST return exactly one 32-byte hash per id, and MUST raise
(rather than return a placeholder) when a node is unknown.
"""


class ProofError(AuditError, ValueError):
    """A proof or its parameters are malformed (bad sizes, lengths or ordering)."""


class RootMismatch(AuditError):
    """A well-formed proof rebuilt a root different from the one claimed.

    ``expected`` is the trusted root, ``calculated`` the one the proof yields;
    ``which`` names the root that failed ("root", "root1" or "root2").
    """

    def __init__(self, which: str, expected: bytes, calculated: bytes) -> None:
        super().__init__(
            f"{which} mismatch: calculated {calculated.hex()}, want {expected.hex()}"
        )
        self.which = which
        self.expected = expected
        self.calculated = calculated


@dataclass(frozen=True, slots=True)
class ProofNodes:
    """The node ids a store must fetch for one proof, and how to fold them.

    ``ids`` is the flat fetch list. ``groups[i]`` is how many consecutive ids
    (left to right, largest first) make up proof element i; a group longer
    than one is an ephemeral right-edge node rebuilt by :meth:`rehash`.
    """

    ids: tuple[NodeId, ...]
    groups: tuple[int, ...]

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """Return the proof: one hash per element, given one fetched hash per id."""
        if len(hashes) != len(self.ids):
            raise ProofError(f"wrong number of fetched hashes {len(hashes)}, want {len(self.ids)}")
        out: list[bytes] = []
        position = 0
        for count in self.groups:
            group = hashes[position : position + count]
            out.append(group[0] if count == 1 else fold_right(group))
            position += count
        return out


def _check_size(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an int")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ProofError(f"{name} {value} is outside [0, 2**64)")


def _split(count: int) -> int:
    """Return k, the largest power of two strictly below count (count >= 2)."""
    return 1 << ((count - 1).bit_length() - 1)


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Return the leaf ranges of RFC 6962 PATH(index, D[0:size]), leaf sibling first."""
    top_down: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index - lo < k:
            top_down.append((lo + k, hi))
            hi = lo + k
        else:
            top_down.append((lo, lo + k))
            lo += k
    top_down.reverse()
    return top_down


def consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Return the leaf ranges of RFC 6962 PROOF(size1, D[0:size2]) for 0 < size1 < size2."""
    top_down: list[tuple[int, int]] = []
    lo, hi, known = 0, size2, True
    while True:
        if size1 == hi:
            if not known:
                top_down.append((lo, hi))
            break
        k = _split(hi - lo)
        if size1 - lo <= k:
            top_down.append((lo + k, hi))
            hi = lo + k
        else:
            top_down.append((lo, lo + k))
            lo += k
            known = False
    top_down.reverse()
    return top_down


def _nodes_for(ranges: Sequence[tuple[int, int]]) -> ProofNodes:
    ids: list[NodeId] = []
    groups: list[int] = []
    for begin, end in ranges:
        nodes = range_nodes(begin, end)
        ids.extend(nodes)
        groups.append(len(nodes))
    return ProofNodes(ids=tuple(ids), groups=tuple(groups))


def inclusion_nodes(index: int, size: int) -> ProofNodes:
    """Return the nodes for the inclusion proof of leaf ``index`` in a tree of ``size``.

    Requires 0 <= index < size; raises :class:`ProofError` otherwise.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    return _nodes_for(inclusion_ranges(index, size))


def consistency_nodes(size1: int, size2: int) -> ProofNodes:
    """Return the nodes for the consistency proof from ``size1`` to ``size2``.

    Requires size1 <= size2. The proof is empty when size1 is 0 or equals size2.
    """
    _check_size("size1", size1)
    _check_size("size2", size2)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    if size1 in (0, size2):
        return ProofNodes(ids=(), groups=())
    return _nodes_for(consistency_ranges(size1, size2))


def inclusion_proof(get_hashes: HashGetter, index: int, size: int) -> list[bytes]:
    """Return the inclusion proof of leaf ``index`` in a tree of ``size`` via ``get_hashes``."""
    nodes = inclusion_nodes(index, size)
    return nodes.rehash(get_hashes(nodes.ids))


def consistency_proof(get_hashes: HashGetter, size1: int, size2: int) -> list[bytes]:
    """Return the consistency proof from ``size1`` to ``size2``, fetched via get_hashes."""
    nodes = consistency_nodes(size1, size2)
    return nodes.rehash(get_hashes(nodes.ids))


def root_at(get_hashes: HashGetter, size: int) -> bytes:
    """Return the root of the tree of ``size`` leaves from its persisted full-subtree nodes."""
    _check_size("size", size)
    if size == 0:
        return empty_root()
    return fold_right(get_hashes(range_nodes(0, size)))


def hashes_from_leaves(leaves: Sequence[bytes]) -> HashGetter:
    """Return a getter computing subtree hashes from in-memory leaf hashes (tests, small logs)."""

    def subtree(level: int, index: int) -> bytes:
        if level == 0:
            return leaves[index]
        return node_hash(subtree(level - 1, 2 * index), subtree(level - 1, 2 * index + 1))

    def get(ids: Sequence[NodeId]) -> list[bytes]:
        for level, index in ids:
            if (index + 1) << level > len(leaves):
                raise KeyError(f"node ({level}, {index}) is not complete in {len(leaves)} leaves")
        return [subtree(level, index) for level, index in ids]

    return get


class MemoryHashStore:
    """Every full-subtree hash of a tree, kept per level in memory (tests, benchmarks, fakes).

    Feed it the tuples returned by :meth:`MerkleTree.append`; nodes arrive in
    index order per level, which is asserted.
    """

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = []

    def add(self, nodes: Iterable[NodeTuple]) -> None:
        """Record completed nodes (level, index, hash)."""
        levels = self._levels
        for level, index, value in nodes:
            while len(levels) <= level:
                levels.append([])
            if index != len(levels[level]):
                raise RuntimeError(f"internal error: node ({level}, {index}) out of order")
            levels[level].append(value)

    def get_hashes(self, ids: Sequence[NodeId]) -> list[bytes]:
        """Return the hash of each node id; raises KeyError for an unknown node."""
        out: list[bytes] = []
        for level, index in ids:
            try:
                out.append(self._levels[level][index])
            except IndexError:
                raise KeyError(f"unknown node ({level}, {index})") from None
        return out


def _check_hash(name: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{name} must be bytes")
    if len(value) != HASH_SIZE:
        raise ProofError(f"{name} is {len(value)} bytes, want {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise ProofError(f"wrong proof size {len(proof)}, want {want}")
    for position, value in enumerate(proof):
        _check_hash(f"proof hash {position}", value)


def root_from_inclusion(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """Return the root implied by an inclusion proof (RFC 9162 §2.1.3.2 loop)."""
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ProofError(f"leaf index {index} is not below tree size {size}")
    _check_hash("leaf hash", leaf)
    _check_proof(proof, len(inclusion_ranges(index, size)))
    sha256 = hashlib.sha256
    fn, sn, acc = index, size - 1, leaf
    for sibling in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path")
        if fn & 1 or fn == sn:
            acc = sha256(NODE_PREFIX + sibling + acc).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            acc = sha256(NODE_PREFIX + acc + sibling).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path")
    return acc


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf`` is at ``index`` in the tree of ``size`` with ``root``.

    Returns None; raises :class:`ProofError` for malformed input and
    :class:`RootMismatch` when the proof rebuilds another root.
    """
    _check_hash("root", root)
    calculated = root_from_inclusion(leaf, index, size, proof)
    if not hmac.compare_digest(calculated, root):
        raise RootMismatch("root", root, calculated)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree (size1, root1) is a prefix of (size2, root2).

    Policy: size1 == 0 needs an empty proof and root1 == SHA-256("") (the
    tlog-witness rule: the empty tree is consistent with every tree); equal
    sizes need an empty proof and equal roots. Raises :class:`ProofError` or
    :class:`RootMismatch`.
    """
    _check_size("size1", size1)
    _check_size("size2", size2)
    if size1 > size2:
        raise ProofError(f"size1 {size1} is greater than size2 {size2}")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    if size1 in (0, size2):
        if proof:
            raise ProofError(f"wrong proof size {len(proof)}, want 0 for sizes {size1}, {size2}")
        if size1 == 0 and not hmac.compare_digest(root1, empty_root()):
            raise RootMismatch("root1", empty_root(), root1)
        if size1 == size2 and not hmac.compare_digest(root1, root2):
            raise RootMismatch("root2", root1, root2)
        return
    _check_proof(proof, len(consistency_ranges(size1, size2)))
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    sha256 = hashlib.sha256
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    first = second = path[0]
    for value in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            first = sha256(NODE_PREFIX + value + first).digest()
            second = sha256(NODE_PREFIX + value + second).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            second = sha256(NODE_PREFIX + second + value).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if not hmac.compare_digest(first, root1):
        raise RootMismatch("root1", root1, first)
    if not hmac.compare_digest(second, root2):
        raise RootMismatch("root2", root2, second)
