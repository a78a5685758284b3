"""``exchange audit compare``: read two receipts or custody records and compare their views.

Accepted files: a receipt (C2SP tlog-proof@v1, from ``exchange audit
receipt``), a custody record (``exchange-custody/v1`` JSON written beside a
pulled file: its receipts and the checkpoint its client verified), or a bare
signed checkpoint note. Every checkpoint must verify under the log key
before it counts as evidence; entries carried by receipts must be proven
included. The comparison itself is ``exchange.audit.fork.compare_views``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from exchange.audit.checkpoint import Checkpoint, open_checkpoint
from exchange.audit.fork import Comparison, Verdict, View, compare_views
from exchange.audit.receipt import RECEIPT_HEADER, parse_receipt, verify_receipt
from exchange.audit.tree import leaf_hash
from exchange.audit.witness_policy import WitnessPolicy, cosignature_status
from exchange.client.errors import ClientError, VerificationFailed
from exchange.errors import ExchangeError

__all__ = ["Compared", "compare_files", "load_view", "parse_proof_file"]

_CUSTODY_FORMAT = "exchange-custody/v1"


def _checkpoint(note: bytes, log_key: str, what: str) -> Checkpoint:
    try:
        return open_checkpoint(note, log_key).checkpoint
    except (ExchangeError, ValueError) as err:
        raise VerificationFailed(f"{what}: the checkpoint does not verify under the log key: "
                                 f"{str(err)[:160]}") from None


def _add_receipt(text: bytes, log_key: str, what: str, notes: list[tuple[Checkpoint, bytes]],
                 entries: dict[int, bytes]) -> None:
    try:
        receipt = parse_receipt(text)
    except ExchangeError as err:
        raise VerificationFailed(f"{what}: not a valid receipt: {err}") from None
    notes.append((_checkpoint(receipt.checkpoint, log_key, what), receipt.checkpoint))
    if receipt.extra is not None:
        try:
            verify_receipt(text, receipt.extra, log_key)
        except (ExchangeError, ValueError) as err:
            raise VerificationFailed(f"{what}: entry {receipt.index} is not proven in its "
                                     f"checkpoint: {str(err)[:160]}") from None
        entries[receipt.index] = leaf_hash(receipt.extra)


def load_view(data: bytes, log_key: str, what: str) -> View:
    """Return the verified view in a receipt, custody record or checkpoint file."""
    notes: list[tuple[Checkpoint, bytes]] = []
    entries: dict[int, bytes] = {}
    if data.startswith(RECEIPT_HEADER.encode("ascii") + b"\n"):
        _add_receipt(data, log_key, what, notes, entries)
    elif data.lstrip().startswith(b"{"):
        try:
            record = json.loads(data)
        except ValueError as err:
            raise ClientError(f"{what} is not valid JSON: {str(err)[:80]}") from None
        if not isinstance(record, dict) or record.get("format") != _CUSTODY_FORMAT:
            raise ClientError(f"{what} is not a custody record ({_CUSTODY_FORMAT})")
        for part in ("upload", "download"):
            item = record.get(part)
            if isinstance(item, dict) and isinstance(item.get("receipt"), str):
                _add_receipt(item["receipt"].encode("utf-8"), log_key, f"{what} ({part})",
                             notes, entries)
        kept = record.get("checkpoint")
        if isinstance(kept, str):
            note = kept.encode("utf-8")
            notes.append((_checkpoint(note, log_key, f"{what} (checkpoint)"), note))
    else:
        notes.append((_checkpoint(data, log_key, what), data))
    if not notes:
        raise ClientError(f"{what} holds no checkpoint to compare")
    return View(checkpoints=tuple(notes), entries=entries)


def parse_proof_file(data: bytes) -> tuple[int, int, list[bytes]]:
    """Return (old, new, hashes) of a consistency proof saved from the log's proof API."""
    try:
        obj = json.loads(data)
        old, new, hashes = obj["old"], obj["new"], obj["hashes"]
        if not isinstance(old, int) or not isinstance(new, int) or not isinstance(hashes, list):
            raise TypeError
        return old, new, [base64.b64decode(h, validate=True) for h in hashes]
    except (ValueError, TypeError, KeyError) as err:
        raise ClientError("the proof file is not a consistency proof "
                          '({"old": M, "new": N, "hashes": [...]})',
                          f"{type(err).__name__}") from None


@dataclass(frozen=True, slots=True)
class Compared:
    """A comparison with what a person needs to read it: sizes, roots and cosigners."""

    comparison: Comparison
    a: Checkpoint
    b: Checkpoint
    cosigners: tuple[tuple[str, ...], tuple[str, ...]] | None

    def to_json(self) -> dict[str, Any]:
        """Return the comparison as a JSON object (evidence: both signed notes)."""
        def side(cp: Checkpoint, note: bytes, cosigned: tuple[str, ...] | None) -> dict[str, Any]:
            return {"origin": cp.origin, "size": cp.size,
                    "root": base64.b64encode(cp.root).decode("ascii"),
                    "cosigned_by": None if cosigned is None else list(cosigned),
                    "note": note.decode("utf-8", errors="replace")}

        c = self.comparison
        ca, cb = self.cosigners or (None, None)
        return {"verdict": c.verdict.value, "reason": c.reason,
                "needs_consistency_proof": None if c.needs is None or
                c.verdict != Verdict.UNDECIDED else {"old": c.needs[0], "new": c.needs[1]},
                "a": side(self.a, c.a, ca), "b": side(self.b, c.b, cb)}


def compare_files(data_a: bytes, data_b: bytes, log_key: str, *,
                  policy: WitnessPolicy | None = None,
                  proof: tuple[int, int, list[bytes]] | None = None) -> Compared:
    """Return the comparison of two files' views (see the module docstring)."""
    view_a = load_view(data_a, log_key, "A")
    view_b = load_view(data_b, log_key, "B")
    hashes = None
    if proof is not None:
        sizes = sorted((view_a.largest()[0].size, view_b.largest()[0].size))
        if [proof[0], proof[1]] != sizes:
            raise ClientError(f"the proof is from {proof[0]} to {proof[1]}, the views need "
                              f"{sizes[0]} to {sizes[1]}")
        hashes = proof[2]
    try:
        comparison = compare_views(view_a, view_b, hashes)
    except ExchangeError as err:
        raise ClientError(str(err)) from None
    a = _checkpoint(comparison.a, log_key, "A")
    b = _checkpoint(comparison.b, log_key, "B")
    cosigners = None
    if policy is not None:
        cosigners = (cosignature_status(comparison.a, policy.witnesses)[0],
                     cosignature_status(comparison.b, policy.witnesses)[0])
    return Compared(comparison=comparison, a=a, b=b, cosigners=cosigners)
