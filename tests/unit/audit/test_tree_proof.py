"""The incremental tree and the proofs against a naive recursive RFC 6962 oracle (Hypothesis)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.proof import (
    MemoryHashStore,
    ProofError,
    RootMismatch,
    consistency_nodes,
    consistency_proof,
    hashes_from_leaves,
    inclusion_nodes,
    inclusion_proof,
    inclusion_ranges,
    root_at,
    verify_consistency,
    verify_inclusion,
)
from exchange.audit.tree import MerkleTree, TreeStateError, leaf_hash

# --- the oracle, written straight from RFC 6962 §2.1 -----------------------------------------


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: list[bytes]) -> bytes:
    """MTH(D[n]) over raw entries."""
    n = len(leaves)
    if n == 0:
        return _sha(b"")
    if n == 1:
        return _sha(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _sha(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """PATH(m, D[n])."""
    n = len(leaves)
    if n <= 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return [*ref_path(m, leaves[:k]), ref_mth(leaves[k:])]
    return [*ref_path(m - k, leaves[k:]), ref_mth(leaves[:k])]


def ref_subproof(m: int, leaves: list[bytes], complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b)."""
    n = len(leaves)
    if m == n:
        return [] if complete else [ref_mth(leaves)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*ref_subproof(m, leaves[:k], complete), ref_mth(leaves[k:])]
    return [*ref_subproof(m - k, leaves[k:], False), ref_mth(leaves[:k])]


def _entries(n: int) -> list[bytes]:
    return [b"entry-%d" % i for i in range(n)]


# --- properties ------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=300))
def test_incremental_root_equals_reference(n: int) -> None:
    entries = _entries(n)
    tree = MerkleTree()
    for entry in entries:
        tree.append(leaf_hash(entry))
    assert tree.size == n
    assert tree.root() == ref_mth(entries)
    resumed = MerkleTree.from_state(n, tree.state())
    resumed.append(leaf_hash(b"next"))
    assert resumed.root() == ref_mth([*entries, b"next"])
    fast = MerkleTree()
    fast.extend(leaf_hash(e) for e in entries)
    assert fast.state() == tree.state()


@given(st.integers(min_value=1, max_value=200), st.data())
def test_inclusion_proofs_match_reference_and_verify(n: int, data: st.DataObject) -> None:
    entries = _entries(n)
    leaves = [leaf_hash(e) for e in entries]
    store = MemoryHashStore()
    tree = MerkleTree()
    for leaf in leaves:
        store.add(tree.append(leaf))
    size = data.draw(st.integers(min_value=1, max_value=n), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    root = ref_mth(entries[:size])
    assert root_at(store.get_hashes, size) == root
    proof = inclusion_proof(store.get_hashes, index, size)
    assert proof == ref_path(index, entries[:size])
    assert proof == inclusion_proof(hashes_from_leaves(leaves[:size]), index, size)
    verify_inclusion(leaves[index], index, size, proof, root)
    _inclusion_mutations_fail(leaves[index], index, size, proof, root)


def _shape(index: int, size: int) -> tuple[bool, ...]:
    return tuple(begin > index for begin, _ in inclusion_ranges(index, size))


def _inclusion_mutations_fail(leaf: bytes, index: int, size: int, proof: list[bytes],
                              root: bytes) -> None:
    errors = (ProofError, RootMismatch)
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = bytes([bad[position][0] ^ 1]) + bad[position][1:]
        with pytest.raises(errors):
            verify_inclusion(leaf, index, size, bad, root)
    for other_index in (index + 1, index - 1, index ^ 2, index ^ 1):
        if 0 <= other_index != index:
            with pytest.raises(errors):
                verify_inclusion(leaf, other_index, size, proof, root)
    for other_size in (size + 1, size - 1, size * 2, size // 2):
        if other_size != size and 0 <= index < other_size:
            try:
                verify_inclusion(leaf, index, other_size, proof, root)
            except errors:
                continue
            # A size change verifies only when it leaves the path shape unchanged (the
            # proof cannot tell those trees apart; checkpoints bind the size).
            assert _shape(index, other_size) == _shape(index, size)
    with pytest.raises(errors):
        verify_inclusion(leaf_hash(b"other"), index, size, proof, root)
    with pytest.raises(errors):
        verify_inclusion(leaf, index, size, [*proof, root], root)
    with pytest.raises(errors):
        verify_inclusion(leaf, index, size, [root, *proof], root)
    if proof:
        with pytest.raises(errors):
            verify_inclusion(leaf, index, size, proof[:-1], root)


@given(st.integers(min_value=1, max_value=200), st.data())
def test_consistency_proofs_match_reference_and_verify(n: int, data: st.DataObject) -> None:
    entries = _entries(n)
    leaves = [leaf_hash(e) for e in entries]
    store = MemoryHashStore()
    tree = MerkleTree()
    for leaf in leaves:
        store.add(tree.append(leaf))
    size2 = data.draw(st.integers(min_value=1, max_value=n), label="size2")
    size1 = data.draw(st.integers(min_value=1, max_value=size2), label="size1")
    root1, root2 = ref_mth(entries[:size1]), ref_mth(entries[:size2])
    proof = consistency_proof(store.get_hashes, size1, size2)
    expected = [] if size1 == size2 else ref_subproof(size1, entries[:size2], True)
    assert proof == expected
    verify_consistency(size1, size2, proof, root1, root2)
    errors = (ProofError, RootMismatch)
    for position in range(len(proof)):
        bad = list(proof)
        bad[position] = bytes([bad[position][0] ^ 0x80]) + bad[position][1:]
        with pytest.raises(errors):
            verify_consistency(size1, size2, bad, root1, root2)
    with pytest.raises(errors):
        verify_consistency(size1, size2, proof, root2 if root1 != root2 else _sha(b"x"), root2)
    with pytest.raises(errors):
        verify_consistency(size1, size2, [*proof, root1], root1, root2)
    with pytest.raises(errors):
        verify_consistency(size1, size2, proof[::-1] if len(proof) > 1 else [], root1,
                           root2 if size1 != size2 and len(proof) > 1 else _sha(b"y"))


def test_all_small_pairs_exhaustively() -> None:
    entries = _entries(33)
    leaves = [leaf_hash(e) for e in entries]
    getter = hashes_from_leaves(leaves)
    roots = [ref_mth(entries[:n]) for n in range(34)]
    for size in range(1, 34):
        for index in range(size):
            verify_inclusion(leaves[index], index, size, inclusion_proof(getter, index, size),
                             roots[size])
        for size1 in range(size + 1):
            proof = consistency_proof(getter, size1, size)
            verify_consistency(size1, size, proof, roots[size1], roots[size])


def test_node_lists_describe_ephemeral_nodes() -> None:
    nodes = inclusion_nodes(0, 7)
    # Sibling leaf 1, the pair (2,3), then the ephemeral [4, 7) folded from (1,2) and leaf 6.
    assert nodes.ids == ((0, 1), (1, 1), (1, 2), (0, 6))
    assert nodes.groups == (1, 1, 2)
    assert consistency_nodes(0, 5).ids == ()
    assert consistency_nodes(4, 4).ids == ()


def test_preconditions_are_checked() -> None:
    with pytest.raises(ProofError, match="not below"):
        inclusion_nodes(5, 5)
    with pytest.raises(ProofError, match="greater"):
        consistency_nodes(6, 5)
    with pytest.raises(TypeError):
        inclusion_nodes(True, 5)
    with pytest.raises(ProofError, match="32"):
        verify_inclusion(b"short", 0, 1, [], _sha(b""))
    with pytest.raises(ProofError, match="wrong proof size 1, want 0"):
        verify_inclusion(leaf_hash(b""), 0, 1, [_sha(b"")], leaf_hash(b""))
    with pytest.raises(TreeStateError):
        MerkleTree.from_state(3, [_sha(b"")])
    with pytest.raises(KeyError):
        MemoryHashStore().get_hashes([(0, 0)])


def test_root_mismatch_carries_evidence() -> None:
    leaf = leaf_hash(b"a")
    with pytest.raises(RootMismatch) as info:
        verify_inclusion(leaf, 0, 1, [], _sha(b"wrong"))
    assert info.value.expected == _sha(b"wrong")
    assert info.value.calculated == leaf


def test_extend_keeps_a_consistent_state_when_a_leaf_is_bad() -> None:
    good = [leaf_hash(bytes([i])) for i in range(3)]
    tree = MerkleTree()
    with pytest.raises(ValueError, match="32 bytes"):
        tree.extend([*good, b"short"])
    reference = MerkleTree()
    reference.extend(good)
    assert tree.size == 3 and tree.root() == reference.root()
    tree.append(leaf_hash(b"next"))  # still usable: the compact range matches its size
    assert MerkleTree.from_state(tree.size, tree.state()).root() == tree.root()
