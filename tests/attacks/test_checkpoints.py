"""A server that serves a rolled-back or forked checkpoint is caught by the client's checks.

The client keeps the last checkpoint it verified and only moves forward along
a consistency proof (``exchange.audit.verify_consistency``), as the client
library does. A malicious operator holds the log key, so its forgeries are
validly signed: an older genuine checkpoint served after a newer one
(rollback), a checkpoint of the same size with another root, and a larger
checkpoint over a history with one entry rewritten (fork) must all be
refused, and an auditor's ``verify_log`` with the earlier checkpoint as
trusted reports the fork. The honest path (real checkpoint and proof) passes.
"""

from __future__ import annotations

import base64
import json

import pytest

from exchange.audit import (
    MerkleTree,
    TrustedCheckpoint,
    leaf_hash,
    open_checkpoint,
    verify_consistency,
    verify_log,
)
from exchange.audit.checkpoint import Checkpoint, SignedCheckpoint, sign_checkpoint
from exchange.errors import AuditError
from exchange.transport.client import SignedSession
from exchange.transport.server import load_log_signer
from tests.server_harness import ORIGIN, Deployment, json_of, read_log, run


class Rollback(AuditError):
    """The server's checkpoint is smaller than one the client verified before."""


async def fetch_checkpoint(session: SignedSession, vkey: str) -> SignedCheckpoint:
    response = await session.request("GET", "/v1/audit/checkpoint")
    async with response:
        assert response.status == 200
        return open_checkpoint(await response.read(), vkey, origin=ORIGIN)


async def fetch_proof(session: SignedSession, old: int, new: int) -> list[bytes]:
    body = await json_of(await session.request(
        "GET", f"/v1/audit/proof/consistency?old={old}&new={new}"))
    return [base64.b64decode(h) for h in body["hashes"]]


def advance(known: Checkpoint, note: bytes, proof: list[bytes], vkey: str) -> Checkpoint:
    """Return the newer checkpoint if it extends ``known`` (the client's rule); raise otherwise."""
    new = open_checkpoint(note, vkey, origin=ORIGIN).checkpoint
    if new.size < known.size:
        raise Rollback(f"checkpoint of size {new.size} after one of size {known.size}")
    verify_consistency(known.size, new.size, proof, known.root, new.root)
    return new


def forge(d: Deployment, size: int, root: bytes) -> bytes:
    """Sign a checkpoint with the log's own key (what a malicious operator can do)."""
    signer = load_log_signer(d.data_dir)
    return sign_checkpoint(Checkpoint(origin=signer.name, size=size, root=root), signer)


def test_rolled_back_and_forked_checkpoints_are_detected(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro:
            first = await fetch_checkpoint(pro, d.log_vkey)
            for _ in range(5):
                (await pro.request("GET", "/v1/cases")).release()
            second = await fetch_checkpoint(pro, d.log_vkey)
            old, new = first.checkpoint, second.checkpoint
            assert new.size > old.size
            honest = await fetch_proof(pro, old.size, new.size)
            known = advance(old, second.raw, honest, d.log_vkey)  # the honest path
            assert known == new

            # Rollback: the older genuine checkpoint served again.
            with pytest.raises(Rollback):
                advance(known, first.raw, [], d.log_vkey)
            # Same size, another root (a split view).
            with pytest.raises(AuditError):
                advance(known, forge(d, known.size, b"\x07" * 32), [], d.log_vkey)

            # Fork: history rewritten at one entry, then extended; signed with the real key.
            entries, _ = await read_log(d)
            forked = list(entries)
            victim = json.loads(forked[old.size - 1])
            victim["details"] = {"rewritten": True}
            forked[old.size - 1] = json.dumps(victim).encode()
            tree = MerkleTree()
            tree.extend(leaf_hash(e) for e in forked)
            fork_note = forge(d, tree.size, tree.root())
            proof = await fetch_proof(pro, old.size, tree.size)  # the honest proof for that size
            with pytest.raises(AuditError):
                advance(old, fork_note, proof, d.log_vkey)
            # An auditor holding the earlier checkpoint sees the fork in the entries too.
            report = verify_log(forked, d.log_vkey, fork_note, origin=ORIGIN,
                                trusted=[TrustedCheckpoint(note=first.raw)])
            assert not report.ok
            # And a consistency query that runs backwards is refused by the server.
            response = await pro.request(
                "GET", f"/v1/audit/proof/consistency?old={new.size}&new={old.size}")
            assert response.status == 400
            response.release()

    run(scenario())
