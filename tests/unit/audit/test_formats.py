"""Signed notes, checkpoints, cosignatures, receipts, tiles and the log builder (own keys)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.builder import LogBuilder
from exchange.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from exchange.audit.note import (
    MAX_SIGNATURES,
    CosignatureSigner,
    Ed25519Signer,
    NoteError,
    open_note,
    parse_verifier_key,
    sign_note,
)
from exchange.audit.proof import (
    MemoryHashStore,
    ProofError,
    RootMismatch,
    inclusion_proof,
    root_at,
)
from exchange.audit.receipt import ReceiptError, encode_receipt, parse_receipt, verify_receipt
from exchange.audit.tiles import (
    TILE_WIDTH,
    TileError,
    TileId,
    build_tile,
    changed_tiles,
    encode_bundle,
    entry_bundles,
    hashes_from_tiles,
    parse_bundle,
    parse_tile_path,
    split_tile,
    tiles_for_size,
)
from exchange.audit.tree import MerkleTree, empty_root, leaf_hash

LOG = Ed25519Signer("log.example/audit", bytes(range(32)))
WITNESS = CosignatureSigner("witness.example", bytes(range(1, 33)), clock=lambda: 1_700_000_000)


def test_note_round_trip_and_signer_repr_hides_seed() -> None:
    note = sign_note("hello\n\nworld\n", [LOG])
    opened = open_note(note, [LOG.verifier()])
    assert opened.text == "hello\n\nworld\n"
    assert "seed" not in repr(LOG) and bytes(range(32)).hex() not in repr(LOG)
    assert parse_verifier_key(LOG.verifier().vkey()) == LOG.verifier()


@given(st.integers(0, 200), st.integers(0, 7))
def test_any_bit_flip_in_a_note_is_rejected(position: int, bit: int) -> None:
    note = bytearray(sign_note("origin\n1\n" + "A" * 43 + "=\n", [LOG]))
    position %= len(note)
    note[position] ^= 1 << bit
    try:
        opened = open_note(bytes(note), [LOG.verifier()])
    except NoteError:
        return
    raise AssertionError(f"flipped note opened: {opened!r}")


def test_signature_count_cap_and_minimum() -> None:
    text = "t\n"
    lines = [f"— k{i} " + "A" * 72 + "\n" for i in range(MAX_SIGNATURES)]
    signed = sign_note(text, [LOG]).decode()
    many = signed + "".join(lines[: MAX_SIGNATURES - 1])
    assert len(open_note(many.encode(), [LOG.verifier()]).unverified) == MAX_SIGNATURES - 1
    with pytest.raises(NoteError, match="more than"):
        open_note((many + lines[-1]).encode(), [LOG.verifier()])
    assert MAX_SIGNATURES >= 16


def test_cosigned_checkpoint_with_witness_policy() -> None:
    checkpoint = Checkpoint("log.example/audit", 3, leaf_hash(b"x"))
    note = sign_checkpoint(checkpoint, LOG, cosigners=[WITNESS])
    signed = open_checkpoint(note, LOG.verifier().vkey(),
                             witnesses=[WITNESS.verifier().vkey()], min_witnesses=1)
    assert signed.checkpoint == checkpoint
    with pytest.raises(CheckpointError, match="witness"):
        open_checkpoint(sign_checkpoint(checkpoint, LOG), LOG.verifier(),
                        witnesses=[WITNESS.verifier()], min_witnesses=1)
    with pytest.raises(CheckpointError, match="log key"):  # a witness alone is not enough
        open_checkpoint(sign_note(checkpoint.text(), [WITNESS]), LOG.verifier(),
                        witnesses=[WITNESS.verifier()])


@pytest.mark.parametrize("body", [
    "o\n01\n" + "A" * 43 + "=\n",  # leading zero
    "o\n+1\n" + "A" * 43 + "=\n",  # sign
    "o\n18446744073709551616\n" + "A" * 43 + "=\n",  # 2**64
    "o\n1\n" + "A" * 42 + "==\n",  # 31 bytes
    "o\n1\n" + "A" * 43 + "=\n\n",  # empty extension line
    "o\n0\n" + "A" * 43 + "=\n",  # size 0 with a non-empty-tree root
    "o\n1\n" + "A" * 43 + "=",  # no final newline
])
def test_checkpoint_body_rules(body: str) -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(body)


def test_checkpoint_round_trip_and_empty_tree() -> None:
    checkpoint = Checkpoint("o", 0, empty_root(), ("ext",))
    assert parse_checkpoint(checkpoint.encode()) == checkpoint


def _log(count: int) -> tuple[list[bytes], MemoryHashStore, MerkleTree]:
    entries = [b"entry %d" % i for i in range(count)]
    store, tree = MemoryHashStore(), MerkleTree()
    for entry in entries:
        store.add(tree.append(leaf_hash(entry)))
    return entries, store, tree


def test_receipt_produce_and_verify_offline() -> None:
    entries, store, tree = _log(37)
    note = sign_checkpoint(Checkpoint(LOG.name, tree.size, tree.root()), LOG)
    receipt = encode_receipt(21, inclusion_proof(store.get_hashes, 21, 37), note, extra=b"ctx")
    parsed = parse_receipt(receipt)
    assert (parsed.index, parsed.extra, parsed.encode()) == (21, b"ctx", receipt)
    assert verify_receipt(receipt, entries[21], LOG.verifier()).checkpoint.size == 37
    with pytest.raises((ProofError, RootMismatch)):
        verify_receipt(receipt, entries[22], LOG.verifier())
    tampered = receipt.replace(b"index 21", b"index 22")
    with pytest.raises((ProofError, RootMismatch)):
        verify_receipt(tampered, entries[21], LOG.verifier())
    for bad in (b"c2sp.org/tlog-proof@v2\n" + receipt.split(b"\n", 1)[1],
                receipt.replace(b"index 21", b"index 021"),
                receipt.split(b"\n\n")[0]):
        with pytest.raises(ReceiptError):
            parse_receipt(bad)


def test_tiles_serve_proofs_for_a_multi_level_log() -> None:
    count = 70_000
    _, store, tree = _log(count)
    files: dict[str, bytes] = {}
    previous = 0
    for size in (1, 255, 256, 257, 65_536, 65_537, count):
        for tile in changed_tiles(previous, size):
            files[tile.path()] = build_tile(tile, store.get_hashes)
        previous = size
    expected_paths = {t.path() for t in tiles_for_size(count)}
    assert expected_paths <= set(files)

    def read(ids: object) -> list[bytes]:
        return [files[t.path()] for t in ids]  # type: ignore[attr-defined]

    getter = hashes_from_tiles(read, count)
    for index in (0, 1, 255, 256, 65_535, 65_536, 69_999):
        assert inclusion_proof(getter, index, count) == inclusion_proof(store.get_hashes, index,
                                                                        count)
    assert root_at(getter, count) == tree.root()


def test_bundles_and_tile_parsing_rules() -> None:
    entries = [b"a", b"", b"x" * 65535]
    assert parse_bundle(encode_bundle(entries), 3) == entries
    with pytest.raises(TileError):
        encode_bundle([b"x" * 65536])
    with pytest.raises(TileError):
        parse_bundle(b"\x00\x05abc")
    with pytest.raises(TileError):
        split_tile(b"\x00" * 33, 1)
    for path in ("tile/0/x000/001", "tile/0/1", "tile/entries/000.p/0", "tile/0/000.p/256"):
        with pytest.raises(TileError):
            parse_tile_path(path)
    assert entry_bundles(250, 300) == [TileId(None, 0), TileId(None, 1, 44)]
    assert changed_tiles(256, 256) == []
    assert TILE_WIDTH == 256


def test_builder_resume_continues_the_chain() -> None:
    builder = LogBuilder()
    for i in range(5):
        builder.append(time="2025-01-01T00:00:00.000000Z", actor="-", actor_key="",
                       action="log.init" if i == 0 else "case.list")
    resumed = LogBuilder.resume(builder.size, builder.tree.state(), builder.last_entry_hash)
    a = builder.append(time="2025-01-01T00:00:00.000000Z", actor="p", actor_key="",
                       action="case.list")
    b = resumed.append(time="2025-01-01T00:00:00.000000Z", actor="p", actor_key="",
                       action="case.list")
    assert a[1] == b[1] and builder.tree.root() == resumed.tree.root()
    assert a[0].index == 5 and a[2][0] == (0, 5, leaf_hash(a[1]))
