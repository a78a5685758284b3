"""Hostile-input fuzzing of the audit-log formats: C2SP signed notes and verifier keys,
tlog-checkpoint, tlog-proof receipts, audit entries (RFC 8785 JSON), tlog-tiles paths,
tiles and entry bundles, and the offline verifier fed a tampered log.

Only the documented :class:`AuditError` leaf may escape; accepted input must be
the canonical encoding of what was parsed (byte for byte); a mutated signed
object is accepted only if what it says is unchanged.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.checkpoint import (
    CheckpointError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from exchange.audit.entry import (
    EntryError,
    check_entry_json,
    decode_json,
    entry_from_json,
    parse_entry,
)
from exchange.audit.note import (
    CosignatureSigner,
    NoteError,
    open_note,
    parse_note,
    parse_verifier_key,
    sign_note,
)
from exchange.audit.proof import MemoryHashStore, inclusion_proof
from exchange.audit.receipt import ReceiptError, encode_receipt, parse_receipt, verify_receipt
from exchange.audit.tiles import (
    TileError,
    TileId,
    encode_bundle,
    entries_path,
    parse_bundle,
    parse_tile_path,
    split_tile,
    tile_path,
)
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.audit.verify import verify_log
from exchange.errors import AuditError
from tests.fuzz._fuzz import (
    FUZZ,
    FUZZ_SLOW,
    HOSTILE_NUMBERS,
    hostile_text,
    mutated,
    mutated_text,
    only,
    peak_python_memory,
)
from tests.unit.audit.logfactory import ORIGIN, build_log

LOG, ACTORS = build_log(12)
LOG_SIGNER = LOG.log_signer
WITNESS = CosignatureSigner("witness.example", bytes(range(1, 33)), clock=lambda: 1_700_000_000)
ENTRIES = tuple(LOG.entries)
CHECKPOINT = LOG.checkpoint()
COSIGNED = sign_checkpoint(parse_checkpoint(parse_note(CHECKPOINT)[0]), LOG_SIGNER,
                           cosigners=[WITNESS])
NOTES = (CHECKPOINT, COSIGNED, sign_note("free text\n\nwith an empty line\n", [LOG_SIGNER]))
VERIFIERS = (LOG_SIGNER.verifier(), WITNESS.verifier())
VKEYS = tuple(v.vkey() for v in VERIFIERS)

_tree = MerkleTree()
_tree.extend(leaf_hash(e) for e in ENTRIES)


def _receipt(index: int, extra: bytes | None) -> bytes:
    store, tree = MemoryHashStore(), MerkleTree()
    for entry in ENTRIES:
        store.add(tree.append(leaf_hash(entry)))
    proof = inclusion_proof(store.get_hashes, index, len(ENTRIES))
    return encode_receipt(index, proof, CHECKPOINT, extra=extra)


RECEIPTS = tuple((_receipt(i, x), i) for i, x in ((0, None), (5, b"ctx"), (11, b"")))
TILE_PATHS = (tile_path(0, 0), tile_path(1, 1234067, 7), entries_path(5, 255),
              entries_path(2**64 - 1), tile_path(63, 0, 1))


# -- signed notes and keys ---------------------------------------------------------------


def _check_note(data: bytes) -> None:
    parsed = only(NoteError, parse_note, data)
    if parsed is not None:
        text, signatures = parsed
        lines = [s.line() + "\n" for s in signatures]
        if len(set(data.split(b"\n"))) == len(data.split(b"\n")):
            assert (text + "\n" + "".join(lines)).encode("utf-8") == data
    note = only(NoteError, open_note, data, VERIFIERS)
    if note is not None:
        # A note is accepted only if its signed text is one we signed.
        assert note.text.encode("utf-8") in {parse_note(n)[0].encode("utf-8") for n in NOTES}


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), hostile_text.map(lambda t: t.encode("utf-8",
                                                                                   "surrogatepass"))))
def test_note_random(data: bytes) -> None:
    _check_note(data)
    _check_note(data + b"\n\n\xe2\x80\x94 x AAAAAAA=\n")


@FUZZ
@given(data=st.data())
def test_note_mutations(data: st.DataObject) -> None:
    valid = data.draw(st.sampled_from(NOTES))
    _check_note(data.draw(mutated(valid, NOTES)))


@FUZZ
@given(data=st.data())
def test_verifier_key_strings(data: st.DataObject) -> None:
    text = data.draw(st.one_of(hostile_text, mutated_text(data.draw(st.sampled_from(VKEYS)),
                                                           VKEYS)))
    verifier = only(NoteError, parse_verifier_key, text)
    if verifier is not None:
        assert verifier.vkey() == text


def test_note_size_cap_is_checked_before_decoding() -> None:
    hostile = b"x" * (4 << 20)
    with peak_python_memory(1 << 20):
        assert only(NoteError, open_note, hostile, VERIFIERS) is None


# -- checkpoints -------------------------------------------------------------------------


def _check_checkpoint_body(body: bytes) -> None:
    checkpoint = only(CheckpointError, parse_checkpoint, body)
    if checkpoint is not None:
        assert checkpoint.encode() == body
    text = body.decode("utf-8", "surrogatepass") if _utf8(body) else None
    if text is not None:
        assert only(CheckpointError, parse_checkpoint, text) == checkpoint


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@FUZZ
@given(origin=hostile_text, size=st.sampled_from(HOSTILE_NUMBERS) | st.integers(0).map(str),
       root=st.one_of(st.binary(min_size=32, max_size=32).map(
           lambda b: json.dumps(b.hex())[1:-1]), hostile_text),
       extensions=st.lists(hostile_text, max_size=3))
def test_checkpoint_structured_near_misses(origin: str, size: str, root: str,
                                           extensions: list[str]) -> None:
    body = "\n".join([origin, size, root, *extensions]) + "\n"
    _check_checkpoint_body(body.encode("utf-8", "surrogatepass"))


@FUZZ
@given(data=st.data())
def test_checkpoint_mutations(data: st.DataObject) -> None:
    body = parse_note(CHECKPOINT)[0].encode("utf-8")
    _check_checkpoint_body(data.draw(mutated(body)))
    signed = data.draw(mutated(data.draw(st.sampled_from((CHECKPOINT, COSIGNED))), NOTES))
    opened = only(AuditError, open_checkpoint, signed, VKEYS[0], witnesses=VKEYS[1:])
    if opened is not None:
        assert opened.checkpoint == parse_checkpoint(parse_note(CHECKPOINT)[0])


# -- tlog-proof receipts -----------------------------------------------------------------


def _check_receipt(data: bytes, index: int) -> None:
    receipt = only(ReceiptError, parse_receipt, data)
    if receipt is not None:
        assert receipt.encode() == data
    signed = only(AuditError, verify_receipt, data, ENTRIES[index], VKEYS[0])
    if signed is not None:
        assert receipt is not None and receipt.index == index
        assert signed.checkpoint.root == _tree.root()


@FUZZ
@given(data=st.data())
def test_receipt_mutations(data: st.DataObject) -> None:
    valid, index = data.draw(st.sampled_from(RECEIPTS))
    _check_receipt(data.draw(mutated(valid, tuple(r for r, _ in RECEIPTS))), index)


@FUZZ
@given(index=st.sampled_from(HOSTILE_NUMBERS), extra=st.none() | hostile_text,
       hashes=st.lists(st.sampled_from(["", "AAAA", "=" * 44, "A" * 43 + "=", "A" * 44]),
                       max_size=70),
       tail=st.binary(max_size=40))
def test_receipt_structured_near_misses(index: str, extra: str | None, hashes: list[str],
                                        tail: bytes) -> None:
    lines = ["c2sp.org/tlog-proof@v1"]
    if extra is not None:
        lines.append("extra " + extra)
    lines += ["index " + index, *hashes]
    head = "".join(line + "\n" for line in lines) + "\n"
    _check_receipt(head.encode("utf-8", "surrogatepass") + CHECKPOINT + tail, 0)


@FUZZ
@given(data=st.binary(max_size=300))
def test_receipt_random_bytes(data: bytes) -> None:
    _check_receipt(data, 0)
    _check_receipt(b"c2sp.org/tlog-proof@v1\n" + data, 0)


# -- audit entries -----------------------------------------------------------------------


def _check_entry(data: bytes) -> None:
    entry = only(EntryError, parse_entry, data)
    if entry is not None:
        assert entry.encode() == data
    obj = only(EntryError, decode_json, data)
    if obj is None:
        assert entry is None
        return
    # The verifier's rule set and the constructor's must agree on every input.
    built = only(EntryError, entry_from_json, obj)
    assert (built is not None) == _check_entry_json_accepts(obj)


def _check_entry_json_accepts(obj: dict[str, object]) -> bool:
    try:
        only(EntryError, check_entry_json, obj)
        check_entry_json(obj)
    except EntryError:
        return False
    return True


@FUZZ
@given(data=st.data())
def test_entry_mutations(data: st.DataObject) -> None:
    _check_entry(data.draw(mutated(data.draw(st.sampled_from(ENTRIES)), ENTRIES)))


_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), hostile_text,
                          st.sampled_from([2**53, -(2**53), 10**400]))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=8)


@FUZZ
@given(data=st.data())
def test_entry_structured_near_misses(data: st.DataObject) -> None:
    """A real entry with one member replaced by a value of the wrong type or shape."""
    obj = json.loads(data.draw(st.sampled_from(ENTRIES)))
    target = obj
    if data.draw(st.booleans()) and isinstance(obj.get("request"), dict):
        target = obj["request"]
    key = data.draw(st.sampled_from(sorted(target)) | hostile_text)
    if data.draw(st.booleans()):
        target[key] = data.draw(_json_values)
    else:
        target.pop(key, None)
    raw = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    _check_entry(raw.encode("utf-8", "surrogatepass"))


@FUZZ
@given(text=st.sampled_from([
    "[" * 100_000, '{"a":' * 50_000, "1" * 5000, '{"v":' + "1" * 5000 + "}", "1e400",
    '{"v":1,"v":1}', '"\\ud800"', "\ufeff{}", "NaN", "-Infinity", "{}" + " " * 70_000,
]) | hostile_text)
def test_entry_hostile_json(text: str) -> None:
    _check_entry(text.encode("utf-8", "surrogatepass"))


@FUZZ_SLOW
@given(data=st.data())
def test_verify_log_with_one_tampered_entry(data: st.DataObject) -> None:
    """The offline verifier turns any tampered entry into findings, never a crash."""
    index = data.draw(st.integers(0, len(ENTRIES) - 1))
    hostile = data.draw(mutated(ENTRIES[index], ENTRIES))
    entries = [*ENTRIES[:index], hostile, *ENTRIES[index + 1 :]]
    report = only(AuditError, verify_log, entries, LOG.vkey, CHECKPOINT)
    assert report is None or report.ok == (hostile == ENTRIES[index])


# -- tiles and entry bundles -------------------------------------------------------------


def _check_tile_path(path: str) -> None:
    tile = only(TileError, parse_tile_path, path)
    if tile is not None:
        assert tile.path() == path


@FUZZ
@given(data=st.data())
def test_tile_path_mutations(data: st.DataObject) -> None:
    _check_tile_path(data.draw(mutated_text(data.draw(st.sampled_from(TILE_PATHS)), TILE_PATHS)))


@FUZZ
@given(level=st.sampled_from([*HOSTILE_NUMBERS, "entries", "0", "63", "64"]),
       groups=st.lists(st.sampled_from([*HOSTILE_NUMBERS, "x000", "x999", "000", "x01", "xx01"]),
                       min_size=1, max_size=8),
       width=st.none() | st.sampled_from([*HOSTILE_NUMBERS, "1", "255", "256"]))
def test_tile_path_structured_near_misses(level: str, groups: list[str], width: str | None
                                          ) -> None:
    suffix = "" if width is None else ".p/" + width
    _check_tile_path(f"tile/{level}/{'/'.join(groups)}{suffix}")


@FUZZ
@given(data=st.binary(max_size=600), width=st.none() | st.integers(0, 300))
def test_bundle_and_tile_random_bytes(data: bytes, width: int | None) -> None:
    entries = only(TileError, parse_bundle, data, width)
    if entries is not None:
        assert encode_bundle(entries) == data
    if width is not None:
        hashes = only(TileError, split_tile, data, width)
        assert hashes is None or b"".join(hashes) == data


@FUZZ
@given(data=st.data())
def test_bundle_mutations(data: st.DataObject) -> None:
    valid = encode_bundle(ENTRIES)
    entries = only(TileError, parse_bundle, data.draw(mutated(valid)), len(ENTRIES))
    assert entries is None or len(entries) == len(ENTRIES)


def test_bundle_length_prefix_claiming_more_is_refused_without_allocation() -> None:
    with peak_python_memory(64 * 1024):
        assert only(TileError, parse_bundle, b"\xff\xff" + b"x" * 10) is None
    assert TileId(None, 0).path() == "tile/entries/000"
    assert LOG_SIGNER.name == ORIGIN
