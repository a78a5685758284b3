"""Client-side witness enforcement, the policy loader, compare's file reading, server flags."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.note import CosignatureSigner
from exchange.audit.receipt import encode_receipt
from exchange.audit.witness_policy import Witness, WitnessPolicy
from exchange.client.audit_compare import compare_files
from exchange.client.errors import ClientError, VerificationFailed
from exchange.client.witnessing import (
    WitnessQuorumMissing,
    check_witnessed,
    load_witness_policy,
    require_witnessed,
)
from exchange.config import ConfigError, load_config, parse_witness_flag, write_config_file
from tests.witness_harness import MemoryLog


def _setup() -> tuple[MemoryLog, list[CosignatureSigner], WitnessPolicy]:
    log = MemoryLog()
    log.append(b"a", b"b", b"c")
    cosigners = [CosignatureSigner(f"w{i}.test", os.urandom(32), lambda: 1) for i in range(2)]
    policy = WitnessPolicy(witnesses=tuple(
        Witness(name=f"w{i}", key=c.verifier().vkey(), url=f"https://w{i}.test")
        for i, c in enumerate(cosigners)), quorum=2)
    return log, cosigners, policy


def _cosigned(log: MemoryLog, size: int, cosigners: list[CosignatureSigner]) -> bytes:
    return sign_checkpoint(Checkpoint(origin=log.origin, size=size, root=log.root(size)),
                           log.signer, cosigners=cosigners)


def test_waits_for_the_quorum_then_accepts_the_refetched_note() -> None:
    log, cosigners, policy = _setup()
    answers = [_cosigned(log, 2, cosigners[:1]), _cosigned(log, 3, cosigners)]
    expected = answers[1]

    async def refetch() -> bytes:
        return answers.pop(0)

    got = asyncio.run(require_witnessed(log.note(2), log.vkey, policy, refetch, wait_s=10))
    assert got == expected and answers == []


def test_refuses_after_waiting_naming_missing_witnesses() -> None:
    log, cosigners, policy = _setup()

    async def refetch() -> bytes:
        return _cosigned(log, 2, cosigners[1:])

    with pytest.raises(WitnessQuorumMissing, match=r"1 of the 2 .*missing: w0\)"):
        asyncio.run(require_witnessed(log.note(2), log.vkey, policy, refetch, wait_s=1.5))


def test_no_policy_and_bad_log_signature_pass_through_to_the_caller() -> None:
    log, _, policy = _setup()

    async def refetch() -> bytes:
        raise AssertionError("must not refetch")

    note = log.note(1)
    assert asyncio.run(require_witnessed(note, log.vkey, None, refetch)) == note
    other = MemoryLog(origin=log.origin)
    assert asyncio.run(require_witnessed(other.note(0), log.vkey, policy, refetch,
                                         wait_s=5)) == other.note(0)
    with pytest.raises(VerificationFailed):
        check_witnessed(other.note(0), log.vkey, policy)


def test_policy_loader_reads_flag_then_environment(tmp_path: Path) -> None:
    _, _, policy = _setup()
    path = tmp_path / "policy.json"
    path.write_bytes(policy.encode())
    assert load_witness_policy(path, environ={}) == policy
    assert load_witness_policy(None, environ={"EXCHANGE_WITNESS_POLICY": str(path)}) == policy
    assert load_witness_policy(None, environ={}) is None
    path.write_text('{"witnesses": [], "quorum": 1}')
    with pytest.raises(ClientError, match="quorum 1 must be between 0"):
        load_witness_policy(path, environ={})
    with pytest.raises(ClientError, match="cannot read"):
        load_witness_policy(tmp_path / "missing.json", environ={})


def test_compare_reads_receipts_custody_records_and_checkpoints() -> None:
    log, cosigners, policy = _setup()
    fork = MemoryLog(origin=log.origin)
    fork.signer = log.signer
    fork.append(b"a", b"b", b"forged")
    receipt = encode_receipt(2, [], _cosigned(log, 3, cosigners))
    custody = json.dumps({"format": "exchange-custody/v1", "upload": None,
                          "download": {"audit_index": 2, "receipt": None},
                          "checkpoint": fork.note(3).decode()}).encode()
    compared = compare_files(receipt, custody, log.vkey, policy=policy)
    assert compared.comparison.verdict.value == "fork"
    result = compared.to_json()
    assert result["a"]["cosigned_by"] == ["w0", "w1"] and result["b"]["cosigned_by"] == []
    same = compare_files(log.note(3), _cosigned(log, 3, cosigners), log.vkey)
    assert same.comparison.verdict.value == "consistent"
    with pytest.raises(VerificationFailed, match="does not verify under the log key"):
        compare_files(MemoryLog(origin=log.origin).note(0), log.note(3), log.vkey)
    with pytest.raises(ClientError, match="not a custody record"):
        compare_files(b'{"format": "other"}', log.note(3), log.vkey)


def test_server_witness_flags_and_config_file(tmp_path: Path) -> None:
    _, cosigners, policy = _setup()
    vkey = cosigners[0].verifier().vkey()
    witness = parse_witness_flag(f"om.nl={vkey}@http://127.0.0.1:9/prefix")
    assert (witness.name, witness.key, witness.url) == ("om.nl", vkey,
                                                        "http://127.0.0.1:9/prefix")
    for bad in ("om.nl", f"={vkey}@http://x", f"a={vkey}", f"a={vkey}@ftp://x"):
        with pytest.raises(ConfigError):
            parse_witness_flag(bad)
    write_config_file(tmp_path, {"origin": "log.test/x", "witnesses": policy.to_json()})
    assert load_config(tmp_path, environ={}).witnesses == policy
    config = load_config(tmp_path, environ={"EXCHANGE_WITNESS_QUORUM": "1"})
    assert config.witnesses is not None and config.witnesses.quorum == 1
    flags = load_config(tmp_path, environ={}, overrides={
        "witnesses": [f"om.nl={vkey}@http://127.0.0.1:9"], "witness_quorum": None})
    assert flags.witnesses is not None and flags.witnesses.quorum == 1
    assert [w.name for w in flags.witnesses.witnesses] == ["om.nl"]
    with pytest.raises(ConfigError, match="quorum 3"):
        load_config(tmp_path, environ={"EXCHANGE_WITNESS_QUORUM": "3"})
