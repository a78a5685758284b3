"""Checking a chain-of-custody record offline, and saying exactly what was proven.

Each check is reported as ``ok``, ``failed``, ``missing`` (the record lacks
what the check needs, e.g. a receipt the server could not give) or
``not checked`` (it needs something this run does not have, such as the log
entry itself): a court reads what the record proves, not a bare yes.

What is checked: the file beside the record against the signed sizes and
SHA-256; the manifest's Ed25519 signature under the uploader's public key
carried in the record (whose fingerprint must be the one recorded); that the
recorded hashes are the manifest's; for each receipt, the checkpoint
signature under the log key, and when the entry's bytes are available (an
auditor's mirror), the inclusion proof and that the entry is the upload's
commit or the download of this evidence.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.audit.checkpoint import open_checkpoint
from exchange.audit.entry import parse_entry
from exchange.audit.receipt import parse_receipt, verify_receipt
from exchange.crypto.keys import bundle_from_json_obj
from exchange.crypto.manifest import Manifest
from exchange.errors import ExchangeError

__all__ = ["Check", "CustodyReport", "verify_custody"]

OK, FAILED, MISSING, NOT_CHECKED = "ok", "failed", "missing", "not checked"
_READ = 1024 * 1024
#: The audit action each receipt must prove.
_ACTIONS = {"upload": "evidence.commit", "download": "evidence.download"}

EntryLookup = Callable[[int], bytes | None]


@dataclass(frozen=True, slots=True)
class Check:
    """One check: what was checked, its status, and the detail a reader needs."""

    name: str
    status: str
    detail: str

    def to_json(self) -> dict[str, str]:
        """Return the check as a JSON object."""
        return {"check": self.name, "status": self.status, "detail": self.detail}


@dataclass
class CustodyReport:
    """Every check run on one custody record."""

    record: Path
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, status: str, detail: str) -> None:
        """Record one check."""
        self.checks.append(Check(name, status, detail))

    @property
    def failed(self) -> bool:
        """Whether any check failed (the record or the file was altered)."""
        return any(c.status == FAILED for c in self.checks)

    @property
    def incomplete(self) -> bool:
        """Whether something the record should hold is missing."""
        return any(c.status == MISSING for c in self.checks)


def _file_check(report: CustodyReport, record: dict[str, Any], manifest: Manifest) -> None:
    name = record.get("file_name", record.get("file"))
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        report.add("file", MISSING, "the record names no file")
        return
    path = report.record.with_name(name)
    if not path.is_file():
        report.add("file", NOT_CHECKED, f"{str(path)!r} is not beside the record")
        return
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while data := handle.read(_READ):
            digest.update(data)
            size += len(data)
    if size != manifest.plaintext_size or not hmac.compare_digest(
            digest.hexdigest(), manifest.plaintext_sha256):
        report.add("file", FAILED, f"{name!r} has {size} bytes and SHA-256 "
                   f"{digest.hexdigest()}, the signed manifest says {manifest.plaintext_size} "
                   f"bytes and {manifest.plaintext_sha256}")
        return
    report.add("file", OK, f"{name!r}: {size} bytes, SHA-256 {manifest.plaintext_sha256}, as "
               "signed")


def _signature_check(report: CustodyReport, record: dict[str, Any], manifest: Manifest) -> None:
    uploader = record.get("uploader") if isinstance(record.get("uploader"), dict) else {}
    assert isinstance(uploader, dict)
    if "bundle" not in uploader:
        report.add("manifest signature", NOT_CHECKED,
                   "this record (format v1) does not carry the uploader's public key")
        return
    try:
        bundle = bundle_from_json_obj(uploader["bundle"])
        signature = base64.b64decode(str(record.get("signature", "")), validate=True)
    except (ValueError, binascii.Error) as err:
        report.add("manifest signature", FAILED, f"the uploader key or signature is "
                   f"malformed: {str(err)[:120]}")
        return
    if bundle.id != manifest.uploader or bundle.fingerprint != uploader.get("fingerprint"):
        report.add("manifest signature", FAILED, "the uploader key in the record is not the "
                   f"one of {manifest.uploader!r} with the recorded fingerprint")
        return
    try:
        bundle.verify_key().verify(manifest.signed_bytes(), signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        report.add("manifest signature", FAILED,
                   f"the manifest is not signed by {manifest.uploader!r}")
        return
    report.add("manifest signature", OK, f"signed by {manifest.uploader!r}, key fingerprint "
               f"{bundle.fingerprint} (checked against the audit log at pull time: "
               f"{bool(uploader.get('key_checked_against_log'))})")


def _receipt_check(report: CustodyReport, record: dict[str, Any], part: str, log_key: str,
                   entry_lookup: EntryLookup | None) -> None:
    slot = record.get(part)
    name = f"{part} receipt"
    if not isinstance(slot, dict):
        report.add(name, MISSING, "the record has no such entry")
        return
    index, text = slot.get("audit_index"), slot.get("receipt")
    if not isinstance(text, str):
        report.add(name, MISSING, f"no receipt for audit entry {index}; fetch it with "
                   "'exchange custody complete DIR'")
        return
    try:
        receipt = parse_receipt(text.encode("utf-8"))
        checkpoint = open_checkpoint(receipt.checkpoint, log_key).checkpoint
    except (ExchangeError, ValueError) as err:
        report.add(name, FAILED, f"the receipt's checkpoint does not verify: {str(err)[:120]}")
        return
    if receipt.index != index:
        report.add(name, FAILED, f"the receipt is for entry {receipt.index}, not {index}")
        return
    entry_bytes = entry_lookup(receipt.index) if entry_lookup is not None else None
    if entry_bytes is None:
        report.add(name, NOT_CHECKED, f"checkpoint of tree size {checkpoint.size} is signed by "
                   f"the log key; the inclusion of entry {index} needs the entry itself (an "
                   "auditor's mirror: run 'exchange audit verify' first)")
        return
    try:
        verify_receipt(text.encode("utf-8"), entry_bytes, log_key)
        entry = parse_entry(entry_bytes)
    except (ExchangeError, ValueError) as err:
        report.add(name, FAILED, f"entry {index} is not proven by the receipt: "
                   f"{str(err)[:120]}")
        return
    if entry.action != _ACTIONS[part] or entry.object != record.get("evidence_id"):
        report.add(name, FAILED, f"entry {index} is {entry.action!r} on {entry.object!r}, not "
                   f"{_ACTIONS[part]!r} on {record.get('evidence_id')!r}")
        return
    report.add(name, OK, f"entry {index} ({entry.action} by {entry.actor!r} at {entry.time}) "
               f"is in the log of tree size {checkpoint.size} signed by the log key")


def verify_custody(record_path: Path, record: dict[str, Any], log_key: str, *,
                   entry_lookup: EntryLookup | None = None) -> CustodyReport:
    """Return the report of every check on the custody record ``record`` (read from ``path``).

    ``log_key`` is the pinned verifier key of the log; ``entry_lookup(index)``
    returns a log entry's bytes when available (else inclusion proofs are
    reported as not checked). Never raises for bad content: it is reported.
    """
    report = CustodyReport(record_path)
    try:
        manifest = Manifest.from_json_obj(record.get("manifest"))
    except ExchangeError as err:
        report.add("manifest", FAILED, f"the manifest is malformed: {str(err)[:120]}")
        return report
    signed = record.get("signed_manifest")
    if isinstance(signed, dict) and signed.get("manifest") != record.get("manifest"):
        report.add("manifest", FAILED, "the signed manifest and the manifest differ")
    hashes = record.get("hashes") if isinstance(record.get("hashes"), dict) else {}
    if hashes != {"plaintext_sha256": manifest.plaintext_sha256,
                  "ciphertext_sha256": manifest.ciphertext_sha256}:
        report.add("recorded hashes", FAILED, "the recorded hashes are not the signed ones")
    _signature_check(report, record, manifest)
    _file_check(report, record, manifest)
    for part in ("upload", "download"):
        _receipt_check(report, record, part, log_key, entry_lookup)
    return report
