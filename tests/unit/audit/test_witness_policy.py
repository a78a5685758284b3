"""The witness policy (JSON shape, validation, quorum check) and the fork comparison core."""

from __future__ import annotations

import json
import os

import pytest

from exchange.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint, sign_checkpoint
from exchange.audit.fork import Verdict, View, compare_views
from exchange.audit.note import (
    CosignatureSigner,
    Ed25519Signer,
    UnverifiedNote,
    parse_note,
    sign_note,
)
from exchange.audit.proof import consistency_proof, hashes_from_leaves
from exchange.audit.tree import leaf_hash
from exchange.audit.witness_policy import (
    PolicyError,
    Witness,
    WitnessPolicy,
    WitnessQuorumError,
    parse_policy,
    verify_witnessed,
)
from tests.witness_harness import MemoryLog


def _cosigner(name: str) -> CosignatureSigner:
    return CosignatureSigner(name, os.urandom(32), lambda: 1_700_000_000)


@pytest.fixture
def setup() -> tuple[Ed25519Signer, list[CosignatureSigner], WitnessPolicy]:
    log = Ed25519Signer.generate("log.test/policy")
    cosigners = [_cosigner(f"w{i}.test") for i in range(3)]
    policy = WitnessPolicy(witnesses=tuple(
        Witness(name=f"witness {i}", key=c.verifier().vkey(), url=f"https://w{i}.test")
        for i, c in enumerate(cosigners)), quorum=2)
    return log, cosigners, policy


def _note(log: Ed25519Signer, cosigners: list[CosignatureSigner], size: int = 1) -> bytes:
    checkpoint = Checkpoint(origin=log.name, size=size, root=leaf_hash(b"x"))
    return sign_checkpoint(checkpoint, log, cosigners=cosigners)


def test_policy_json_shape_round_trips(setup: tuple[Ed25519Signer, list[CosignatureSigner],
                                                   WitnessPolicy]) -> None:
    _, cosigners, policy = setup
    obj = json.loads(policy.encode())
    assert set(obj) == {"witnesses", "quorum"} and obj["quorum"] == 2
    assert obj["witnesses"][0] == {"name": "witness 0", "key": cosigners[0].verifier().vkey(),
                                   "url": "https://w0.test"}
    assert parse_policy(policy.encode()) == policy


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.update(quorum=4), "quorum 4"),
    (lambda o: o.update(quorum=-1), "quorum -1"),
    (lambda o: o.update(quorum="2"), "quorum must be an integer"),
    (lambda o: o.update(extra=1), "unknown field"),
    (lambda o: o["witnesses"][0].update(url="ftp://x"), "url must be"),
    (lambda o: o["witnesses"][0].pop("url"), r"witnesses\[0\]"),
    (lambda o: o["witnesses"][1].update(name="witness 0"), "share a name"),
    (lambda o: o["witnesses"][1].update(key=o["witnesses"][0]["key"]), "share a cosigner key"),
    (lambda o: o["witnesses"][0].update(key="log+00000000+AQ=="), r"witnesses\[0\]"),
])
def test_policy_rejects_bad_documents(setup: tuple[Ed25519Signer, list[CosignatureSigner],
                                                   WitnessPolicy], mutate: object,
                                      message: str) -> None:
    obj = setup[2].to_json()
    mutate(obj)  # type: ignore[operator]
    with pytest.raises(PolicyError, match=message):
        WitnessPolicy.from_json(obj)


def test_log_key_is_not_a_witness_key(setup: tuple[Ed25519Signer, list[CosignatureSigner],
                                                   WitnessPolicy]) -> None:
    log = setup[0]
    with pytest.raises(PolicyError, match="not a tlog-cosignature"):
        Witness(name="w", key=log.verifier().vkey(), url="https://w.test")


def test_quorum_met_and_missing_witnesses_named(
        setup: tuple[Ed25519Signer, list[CosignatureSigner], WitnessPolicy]) -> None:
    log, cosigners, policy = setup
    ok = verify_witnessed(_note(log, cosigners[:2]), log.verifier(), policy)
    assert ok.cosigners == ("witness 0", "witness 1")
    with pytest.raises(WitnessQuorumError, match="has 1 of the 2") as info:
        verify_witnessed(_note(log, cosigners[2:]), log.verifier(), policy)
    assert info.value.missing == ("witness 0", "witness 1")
    assert info.value.cosigned == ("witness 2",)
    # Unknown cosigners do not count.
    with pytest.raises(WitnessQuorumError):
        verify_witnessed(_note(log, [_cosigner("w0.test"), _cosigner("x.test")]),
                         log.verifier(), policy)


def test_invalid_cosignature_of_a_named_witness_rejects(
        setup: tuple[Ed25519Signer, list[CosignatureSigner], WitnessPolicy]) -> None:
    log, cosigners, policy = setup
    note = _note(log, cosigners)
    text, signatures = parse_note(note)
    forged = [s if s.name != "w1.test" else type(s)(s.name, s.key_id, s.data[:-1] + bytes(
        [s.data[-1] ^ 1])) for s in signatures]
    with pytest.raises(WitnessQuorumError, match="invalid cosignature from witness 1") as info:
        verify_witnessed(sign_note(text, [], keep=forged), log.verifier(), policy)
    assert info.value.invalid == ("witness 1",)


def test_witness_signature_alone_is_not_a_log_signature(
        setup: tuple[Ed25519Signer, list[CosignatureSigner], WitnessPolicy]) -> None:
    log, cosigners, policy = setup
    text = Checkpoint(origin=log.name, size=1, root=leaf_hash(b"x")).text()
    with pytest.raises(UnverifiedNote):
        verify_witnessed(sign_note(text, cosigners), log.verifier(), policy)


def _view(log: MemoryLog, size: int, entries: dict[int, bytes] | None = None) -> View:
    note = log.note(size)
    return View(checkpoints=((open_checkpoint(note, log.vkey).checkpoint, note),),
                entries=entries or {})


def test_compare_views_consistent_fork_inconsistent_undecided() -> None:
    log = MemoryLog()
    log.append(*[bytes([i]) for i in range(6)])
    fork = MemoryLog(origin=log.origin)
    fork.signer = log.signer
    fork.append(*[bytes([i]) for i in range(3)], b"forged", *[bytes([i]) for i in range(4, 6)])
    assert compare_views(_view(log, 4), _view(log, 4)).verdict == Verdict.CONSISTENT
    same = compare_views(_view(log, 5), _view(fork, 5))
    assert same.verdict == Verdict.FORK and same.a == log.note(5) and same.b == fork.note(5)
    undecided = compare_views(_view(log, 3), _view(log, 6))
    assert (undecided.verdict, undecided.needs) == (Verdict.UNDECIDED, (3, 6))
    proof = consistency_proof(hashes_from_leaves(log.leaves), 3, 6)
    assert compare_views(_view(log, 3), _view(log, 6), proof).verdict == Verdict.CONSISTENT
    wrong = compare_views(_view(log, 4), _view(fork, 6), consistency_proof(
        hashes_from_leaves(fork.leaves), 4, 6))
    assert wrong.verdict == Verdict.INCONSISTENT
    entries = compare_views(_view(log, 4, {3: leaf_hash(bytes([3]))}),
                            _view(fork, 6, {3: leaf_hash(b"forged")}))
    assert entries.verdict == Verdict.FORK and "index 3" in entries.reason
    other = MemoryLog(origin="log.test/other")
    other.append(b"x")
    with pytest.raises(CheckpointError, match="different logs"):
        compare_views(_view(log, 1), _view(other, 1))
