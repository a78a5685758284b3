"""Chain-of-custody records written beside each pulled file (``<name>.custody.json``).

The record lets anyone check later, offline, what was received: the signed
manifest (with its Ed25519 signature and the sealed bytes), the uploader's
public bundle (so the signature can be checked with no server), the audit
index that logged those keys, both SHA-256 hashes, and two C2SP tlog-proof
receipts: one for the upload's commit entry (built from the public inclusion
proof and the checkpoint this client verified) and one for this download's
entry (the server's receipt of our own entry, checked to carry our own request
signature), and the checkpoint the client verified last (with its witness
cosignatures). ``exchange custody verify``
(:mod:`exchange.client.custody_check`) checks a record offline.

A receipt the server could not give at pull time (it was draining, say) is
written as ``null`` and the record's path noted in the state directory;
:func:`complete_pending` (run by every pull) and ``exchange custody complete``
fetch it later, so a record always ends complete.

Format ``exchange-custody/v2`` (v1 plus ``file_name``, ``folder`` and
``uploader.bundle``; v1 named the file ``file``).
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

__all__ = [
    "CUSTODY_FORMAT",
    "CUSTODY_FORMATS",
    "complete_custody",
    "complete_pending",
    "note_download",
    "read_record",
    "write_custody",
]

CUSTODY_FORMAT = "exchange-custody/v2"
CUSTODY_FORMATS = ("exchange-custody/v1", CUSTODY_FORMAT)
PENDING_FILE = "custody_pending.json"
#: This client's own download entries, by evidence id (deliveries prove them again later).
DOWNLOADS_FILE = "downloads.json"
_MAX_RECORD_BYTES = 1024 * 1024


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
    note_download(client, evidence.evidence_id, index)
    return {"audit_index": index, "receipt": text.decode("utf-8")}


def note_download(client: Client, evidence_id: str, index: int) -> None:
    """Remember that this client's download of ``evidence_id`` was logged at ``index``."""
    doc = client.state.read_json(DOWNLOADS_FILE)
    known: dict[str, Any] = doc if isinstance(doc, dict) else {}
    indexes = [i for i in known.get(evidence_id, []) if isinstance(i, int)]
    if index not in indexes:
        known[evidence_id] = [*indexes, index]
        client.state.write_json(DOWNLOADS_FILE, known)


async def write_custody(client: Client, evidence: Evidence, path: Path, *, file_path: Path,
                        download_index: int | None) -> dict[str, Any]:
    """Write the custody record of a pulled file to ``path`` (atomically); return it."""
    m = evidence.manifest
    record: dict[str, Any] = {
        "format": CUSTODY_FORMAT,
        "evidence_id": evidence.evidence_id,
        "case_id": m.case_id,
        "file_name": file_path.name,
        "folder": m.folder,
        "handling": {"code": m.handling, "note": m.handling_note},
        "manifest": m.to_json_obj(),
        "signature": evidence.signed_manifest.get("signature"),
        "signed_manifest": evidence.signed_manifest,
        "sealed_manifest": evidence.record.get("sealed_manifest"),
        "uploader": {"id": evidence.uploader.id, "fingerprint": evidence.uploader.fingerprint,
                     "key_index": evidence.uploader.key_index,
                     "key_checked_against_log": evidence.uploader.logged,
                     "bundle": evidence.uploader.bundle.to_json_obj()},
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
                     "download entry carries this client's request signature"],
    }
    _write(path, record)
    if any(isinstance(record[part], dict) and record[part]["receipt"] is None
           for part in ("upload", "download")):
        _note_pending(client, path, add=True)
    return record


def _write(path: Path, record: dict[str, Any]) -> None:
    data = (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")
    write_atomic(path, data, mode=0o644 & ~_umask())


def _note_pending(client: Client, path: Path, *, add: bool) -> None:
    doc = client.state.read_json(PENDING_FILE)
    paths = [p for p in doc.get("paths", []) if isinstance(p, str)] if isinstance(
        doc, dict) else []
    key = str(path.resolve())
    if add and key not in paths:
        paths.append(key)
    elif not add and key in paths:
        paths.remove(key)
    client.state.write_json(PENDING_FILE, {"paths": paths})


def read_record(path: Path) -> dict[str, Any]:
    """Return the custody record at ``path``; raise ``ValueError`` if it is not one."""
    with path.open("rb") as handle:
        data = handle.read(_MAX_RECORD_BYTES + 1)
    if len(data) > _MAX_RECORD_BYTES:
        raise ValueError(f"{str(path)!r} is larger than a custody record can be")
    record = json.loads(data)
    if not isinstance(record, dict) or record.get("format") not in CUSTODY_FORMATS:
        raise ValueError(f"{str(path)!r} is not a custody record")
    return record


async def complete_custody(client: Client, path: Path) -> list[str]:
    """Fetch the receipts missing from the record at ``path``; return the parts filled in.

    Parts whose receipt is already there are left alone; the record is
    rewritten atomically only when something was added. A receipt the
    server still cannot give stays ``null`` (and a warning says so).
    """
    record = read_record(path)
    filled = []
    for part, own in (("upload", False), ("download", True)):
        slot = record.get(part)
        if not isinstance(slot, dict) or slot.get("receipt") is not None:
            continue
        index = slot.get("audit_index")
        if not isinstance(index, int) or isinstance(index, bool):
            continue
        fetched = await _receipt(client, index, own=own)
        if fetched is not None and fetched["receipt"] is not None:
            record[part] = fetched
            filled.append(part)
    if filled:
        _write(path, record)
    if all(not isinstance(record.get(part), dict) or record[part].get("receipt") is not None
           for part in ("upload", "download")):
        _note_pending(client, path, add=False)
    return filled


async def complete_pending(client: Client) -> int:
    """Complete every record noted as missing a receipt; return how many were completed.

    Records that no longer exist are forgotten.
    """
    doc = client.state.read_json(PENDING_FILE)
    paths = [p for p in doc.get("paths", []) if isinstance(p, str)] if isinstance(
        doc, dict) else []
    done = 0
    for text in paths:
        path = Path(text)
        try:
            if await complete_custody(client, path):
                done += 1
        except (OSError, ValueError):
            _note_pending(client, path, add=False)
    return done


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
