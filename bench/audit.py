"""Audit-log benchmark: tree append, inclusion proofs and full offline verification.

Usage: .venv/bin/python bench/audit.py [--entries N] [--proofs N] [--json]

Rates are wall-clock; the *_cpu_per_s twins use process CPU time, which is the
single-core figure when other processes compete for the machine.

Builds a synthetic log of N real entries (each with a unique Ed25519-signed
RFC 9421 request), then measures, on one core:
  * appending the N encoded entries to the Merkle tree (leaf hashing included) and the root;
  * producing (and separately verifying) inclusion proofs for random leaves;
  * verify_log end to end: checkpoint, tree, prev chain, canonical form, one Ed25519 per entry.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import random
import sys
import time
from pathlib import Path

from nacl.signing import SigningKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.audit.builder import LogBuilder
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.entry import RequestEvidence
from exchange.audit.note import Ed25519Signer
from exchange.audit.proof import MemoryHashStore, inclusion_proof, verify_inclusion
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.audit.verify import verify_log
from exchange.wire.httpsig import signature_base

ORIGIN = "bench.example/audit"
ACTORS = 8


def _key(label: str) -> SigningKey:
    return SigningKey(hashlib.sha256(label.encode()).digest())


def build_entries(count: int) -> tuple[list[bytes], Ed25519Signer]:
    """Return ``count`` encoded entries: log.init, enrolments, then signed downloads."""
    log_signer = Ed25519Signer(ORIGIN, hashlib.sha256(b"log").digest())
    builder = LogBuilder()
    entries: list[bytes] = []
    stamp = "2025-01-01T00:00:00.000000Z"
    actors = [(f"p{i}", _key(f"p{i}")) for i in range(ACTORS)]

    def enrol(pid: str, key: SigningKey) -> dict[str, str | int | bool | None]:
        return {"participant": pid, "fingerprint": f"fp-{pid}", "age_recipient": "age1x",
                "signing_key": base64.b64encode(bytes(key.verify_key)).decode()}

    _, data, _ = builder.append(time=stamp, actor="-", actor_key="", action="log.init",
                                details={"origin": ORIGIN,
                                         "log_key": log_signer.verifier().vkey()})
    entries.append(data)
    for pid, key in actors:
        admin, admin_key = actors[0]
        # Entry 1 (the first admin's enrolment) is server-originated and unsigned.
        request = (_request(admin, admin_key, builder.size, "POST", "/v1/participants")
                   if entries[1:] else None)
        _, data, _ = builder.append(time=stamp, actor=actors[0][0], actor_key="fp-p0",
                                    action="participant.enrol", request=request,
                                    details=enrol(pid, key))
        entries.append(data)
    while builder.size < count:
        i = builder.size
        pid, key = actors[i % ACTORS]
        _, data, _ = builder.append(
            time=stamp, actor=pid, actor_key=f"fp-{pid}", action="evidence.download",
            case="c1", object=f"f{i}",
            request=_request(pid, key, i, "GET", f"/v1/evidence/f{i}/content"),
            details={"size": i, "sha256": hashlib.sha256(b"%d" % i).hexdigest()})
        entries.append(data)
    return entries, log_signer


def _request(pid: str, key: SigningKey, i: int, method: str, path: str) -> RequestEvidence:
    # Real routes: the verifier binds each entry to the method and path that logged it.
    covered = (('"@method"', method), ('"@target-uri"', f"https://x.example{path}"))
    params = f'("@method" "@target-uri");created=1700000000;keyid="{pid}";nonce="n{i}"'
    signature = key.sign(signature_base(covered, params)).signature
    return RequestEvidence(signature_input=f"sig1={params}",
                           signature=f"sig1=:{base64.b64encode(signature).decode()}:",
                           covered=covered)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--proofs", type=int, default=10_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()

    started = time.perf_counter()
    entries, signer = build_entries(args.entries)
    build_s = time.perf_counter() - started
    count = len(entries)

    started, cpu_started = time.perf_counter(), time.process_time()
    tree = MerkleTree()
    store = MemoryHashStore()
    for data in entries:
        store.add(tree.append(leaf_hash(data)))
    root = tree.root()
    append_s = time.perf_counter() - started
    append_cpu_s = time.process_time() - cpu_started

    started = time.perf_counter()
    fast = MerkleTree()
    fast.extend(leaf_hash(data) for data in entries)
    assert fast.root() == root
    extend_s = time.perf_counter() - started

    rng = random.Random(1)
    indexes = [rng.randrange(count) for _ in range(args.proofs)]
    started = time.perf_counter()
    proofs = [inclusion_proof(store.get_hashes, i, count) for i in indexes]
    proofs_s = time.perf_counter() - started
    started = time.perf_counter()
    for i, proof in zip(indexes, proofs, strict=True):
        verify_inclusion(leaf_hash(entries[i]), i, count, proof, root)
    proof_verify_s = time.perf_counter() - started

    checkpoint = sign_checkpoint(Checkpoint(ORIGIN, count, root), signer)
    started, cpu_started = time.perf_counter(), time.process_time()
    report = verify_log(entries, signer.verifier(), checkpoint)
    verify_s = time.perf_counter() - started
    verify_cpu_s = time.process_time() - cpu_started
    if not report.ok:
        print(f"bench: error: verification found {report.findings[:3]}", file=sys.stderr)
        return 1

    result = {
        "entries": count,
        "mean_entry_bytes": round(sum(map(len, entries)) / count),
        "build_s": round(build_s, 2),
        "tree_append_per_s": round(count / append_s),
        "tree_extend_per_s": round(count / extend_s),
        "inclusion_proofs_per_s": round(args.proofs / proofs_s),
        "inclusion_verify_per_s": round(args.proofs / proof_verify_s),
        "full_verify_per_s": round(count / verify_s),
        "tree_append_cpu_per_s": round(count / append_cpu_s),
        "full_verify_cpu_per_s": round(count / verify_cpu_s),
        "full_verify_s": round(verify_s, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:24s} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
