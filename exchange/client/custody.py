"""Chain-of-custody records written beside each pulled file (``<name>.custody.json``).

The record lets anyone check later, offline, what was received: the signed
manifest (with its Ed25519 signature and the sealed bytes), the uploader's
key fingerprint and the audit index that logged those keys, both SHA-256
hashes, and two C2SP tlog-proof receipts: one for the upload's commit entry
(built from the public inclusion proof and the checkpoint this client
verified) and one for this download's entry (the server's receipt of our
own entry), and the checkpoint the client verified last (with its witness
cosignatures). With the log's verifier key, ``exchange audit check`` verifies
each receipt against the entry.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from exchange.client.errors import ClientError
from exchange.client.session import CHECKPOINT_FILE, Client
from exchange.fsutil import write_atomic

if TYPE_CHECKING:
    from exchange.client.download import Evidence

__all__ = ["CUSTODY_FORMAT", "write_custody"]

CUSTODY_FORMAT = "exchange-custody/v1"


async def _receipt(client: Client, index: int | None, *, own: bool) -> dict[str, Any] | None:
    if index is None:
        return None
    try:
        # With a witness policy, both receipts are built against the cosigned checkpoint
        # this client verified (the server's own receipt may name a newer, not yet
        # cosigned one).
        server_receipt = own and client.witness_policy is None
        text = await client.receipt(index) if server_receipt else await client.proof_receipt(index)
    except ClientError as err:
        client.warn(f"no receipt for audit entry {index}: {err}")
        return {"audit_index": index, "receipt": None}
    return {"audit_index": index, "receipt": text.decode("utf-8")}


async def _own_receipt(client: Client, evidence: Evidence,
                       index: int | None) -> dict[str, Any] | None:
    """Return our download entry's receipt once it is checked to be *our* request's entry."""
    if index is None:
        return None
    text = await client.own_entry(index, "GET", f"/v1/evidence/{evidence.evidence_id}/content")
    return {"audit_index": index, "receipt": text.decode("utf-8")}


async def write_custody(client: Client, evidence: Evidence, path: Path, *, file_path: Path,
                        download_index: int | None) -> dict[str, Any]:
    """Write the custody record of a pulled file to ``path`` (atomically); return it."""
    m = evidence.manifest
    record = {
        "format": CUSTODY_FORMAT,
        "evidence_id": evidence.evidence_id,
        "case_id": m.case_id,
        "file": file_path.name,
        "manifest": m.to_json_obj(),
        "signature": evidence.signed_manifest.get("signature"),
        "signed_manifest": evidence.signed_manifest,
        "sealed_manifest": evidence.record.get("sealed_manifest"),
        "uploader": {"id": evidence.uploader.id, "fingerprint": evidence.uploader.fingerprint,
                     "key_index": evidence.uploader.key_index,
                     "key_checked_against_log": evidence.uploader.logged},
        "hashes": {"plaintext_sha256": m.plaintext_sha256,
                   "ciphertext_sha256": m.ciphertext_sha256},
        "sizes": {"plaintext": m.plaintext_size, "ciphertext": m.ciphertext_size},
        "upload": await _receipt(client, evidence.record.get("audit_index"), own=False),
        "download": await _own_receipt(client, evidence, download_index),
        "pulled_by": client.identity.id,
        "pulled_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "server": client.url,
        "log_key": client.log_key,
        # The (cosigned) checkpoint this client verified last: two parties compare views
        # offline with 'exchange audit compare'.
        "checkpoint": (client.state.read_bytes(CHECKPOINT_FILE) or b"").decode("utf-8"),
        "verified": ["manifest signature", "ciphertext sha256", "plaintext sha256",
                     "age payload authentication",
                     "uploader key from signed statements in the audit log",
                     "download entry carries this client's request signature"
                     if evidence.uploader.logged else "uploader key against local pin"],
    }
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(path, data, mode=0o644 & ~_umask())
    return record


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
