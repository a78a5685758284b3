"""Offline audit receipts: one file that proves one entry is in the log (C2SP tlog-proof@v1).

File format (documented choice): a standard ``c2sp.org/tlog-proof@v1`` text
whose optional ``extra`` line carries the entry's canonical bytes (base64)::

    c2sp.org/tlog-proof@v1
    extra <base64 of the entry, RFC 8785 JSON>
    index <n>
    <inclusion proof hashes, base64, one per line>

    <the signed checkpoint, verbatim>

The ``extra`` data is not signed by itself; it is authenticated because its
RFC 6962 leaf hash must rebuild the checkpoint's root through the proof, and
the checkpoint must verify with the log key. Any tlog-proof tool can check
the proof; :func:`check_receipt` also decodes the entry and checks that it
names the same index. Receipts do not show that the actor's request
signature verifies (that needs the actor's enrolment entry): run
``exchange audit verify`` for that.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.audit.checkpoint import Checkpoint, open_checkpoint
from exchange.audit.entry import AuditEntry, parse_entry
from exchange.audit.receipt import Receipt, ReceiptError, parse_receipt, verify_receipt
from exchange.audit.tiles import TileId, entries_path_for_index, parse_bundle
from exchange.client.audit import LogFetcher, load_verifier
from exchange.client.audit_mirror import AuditMirror
from exchange.client.errors import VerificationFailed
from exchange.errors import ExchangeError

__all__ = [
    "CheckedReceipt", "check_receipt", "complete_receipt", "describe_entry", "fetch_receipt",
    "mirror_entry",
]


@dataclass(frozen=True, slots=True)
class CheckedReceipt:
    """A receipt that verified: the entry, its index and the checkpoint that includes it."""

    index: int
    entry: AuditEntry
    entry_bytes: bytes
    checkpoint: Checkpoint
    log_key: str


async def fetch_receipt(
    fetcher: LogFetcher, index: int, log_key: str, *, mirror: AuditMirror | None = None
) -> tuple[bytes, CheckedReceipt]:
    """Return a receipt file for entry ``index`` (see the module docstring) and its check.

    The tlog-proof comes from the server; the entry from the verified
    mirror when it holds it, else from the server's entry bundle. Both are
    verified before the file is returned; a mismatch raises
    :class:`~exchange.client.errors.VerificationFailed`.
    """
    verifier = load_verifier(log_key)
    proof_text = await fetcher.fetch(f"receipt/{index}")
    try:
        receipt = parse_receipt(proof_text)
        checkpoint = open_checkpoint(receipt.checkpoint, verifier).checkpoint
    except (ExchangeError, ValueError) as err:
        raise VerificationFailed(f"the server's receipt for entry {index} does not verify: "
                                 f"{str(err)[:160]}") from None
    if receipt.index != index:
        raise VerificationFailed(f"the server sent a receipt for entry {receipt.index}, "
                                 f"not {index}")
    entry = mirror_entry(mirror, index)
    if entry is None:
        path = entries_path_for_index(index, checkpoint.size)
        bundle = parse_bundle(await fetcher.fetch(path))
        offset = index % 256
        if offset >= len(bundle):
            raise VerificationFailed(f"the server's {path} does not hold entry {index}")
        entry = bundle[offset]
    data = Receipt(index=index, proof=receipt.proof, checkpoint=receipt.checkpoint,
                   extra=entry).encode()
    return data, check_receipt(data, log_key)


def mirror_entry(mirror: AuditMirror | None, index: int) -> bytes | None:
    """Return entry ``index`` from a verified local mirror, or None if it does not hold it."""
    if mirror is None:
        return None
    note = mirror.checkpoint()
    kept_key = mirror.log_key()
    if note is None or kept_key is None:
        return None
    try:
        size = open_checkpoint(note, kept_key).checkpoint.size
        if index >= size:
            return None
        bundle = index // 256
        width = min(256, size - bundle * 256)
        return parse_bundle(mirror.read(TileId(None, bundle, width), committed=True),
                            width)[index % 256]
    except (ExchangeError, ValueError, IndexError):
        return None


def complete_receipt(data: bytes, mirror: AuditMirror) -> bytes:
    """Return ``data`` with the entry added from the verified ``mirror`` when it lacks one.

    Receipts inside custody records are bare tlog-proofs (no ``extra``); an
    auditor holding a verified mirror supplies the entry, and
    :func:`check_receipt` then proves that very entry. Anything unreadable, or
    an entry the mirror does not hold, is returned unchanged (the check then
    says why it fails).
    """
    try:
        receipt = parse_receipt(data)
    except ReceiptError:
        return data
    if receipt.extra is not None:
        return data
    entry = mirror_entry(mirror, receipt.index)
    if entry is None:
        return data
    return Receipt(index=receipt.index, proof=receipt.proof, checkpoint=receipt.checkpoint,
                   extra=entry).encode()


def check_receipt(data: bytes, log_key: str) -> CheckedReceipt:
    """Verify a receipt file offline; return what it proves.

    Raises :class:`~exchange.client.errors.VerificationFailed` naming the
    failed check (format, checkpoint signature, inclusion proof, entry).
    """
    verifier = load_verifier(log_key)
    try:
        receipt = parse_receipt(data)
    except ReceiptError as err:
        raise VerificationFailed(f"not a valid receipt file: {err}") from None
    if receipt.extra is None:
        raise VerificationFailed(
            "the receipt carries no entry (no 'extra' line)",
            "fetch a complete receipt with 'exchange audit receipt INDEX -o FILE'",
        )
    try:
        checkpoint = open_checkpoint(receipt.checkpoint, verifier).checkpoint
    except (ExchangeError, ValueError) as err:
        raise VerificationFailed(
            f"the receipt's checkpoint does not verify with log key {verifier.name!r}: "
            f"{str(err)[:160]}") from None
    try:
        verify_receipt(data, receipt.extra, verifier)
    except (ExchangeError, ValueError) as err:
        raise VerificationFailed(
            f"entry {receipt.index} is not proven in the log of size {checkpoint.size}: "
            f"{str(err)[:160]}",
            "the entry or the proof in the file was altered",
        ) from None
    try:
        entry = parse_entry(receipt.extra)
    except (ExchangeError, ValueError) as err:
        raise VerificationFailed(f"the proven entry is not a valid audit entry: "
                                 f"{str(err)[:160]}") from None
    if entry.index != receipt.index:
        raise VerificationFailed(f"the entry says it is number {entry.index}, the proof "
                                 f"places it at {receipt.index}")
    return CheckedReceipt(index=receipt.index, entry=entry, entry_bytes=receipt.extra,
                          checkpoint=checkpoint, log_key=verifier.vkey())


def describe_entry(entry: AuditEntry) -> list[str]:
    """Return the entry in plain words, one sentence per line (for people, not parsers)."""
    when = entry.time.replace("T", " at ").replace("Z", " UTC")
    who = ("the server itself" if entry.actor == "-" and entry.request is None
           else "an unidentified requester" if entry.actor == "-"
           else f"participant {entry.actor!r}")
    key = f" (key fingerprint {entry.actor_key})" if entry.actor_key else ""
    target = ""
    if entry.case is not None:
        target += f" in case {entry.case!r}"
    if entry.object is not None:
        target += f" on {entry.object!r}"
    lines = [f"on {when}, {who}{key} asked for '{entry.action}'{target}"]
    if entry.outcome == "ok":
        lines.append("the server carried it out (outcome ok)")
    else:
        lines.append(f"the server refused it (outcome denied, reason {entry.reason!r})")
    if entry.request is not None:
        lines.append("the requester's own RFC 9421 request signature is recorded in the entry")
    for name, value in sorted(entry.details.items()):
        lines.append(f"detail {name}: {value!r}")
    return lines
