"""C2SP tlog-proof@v1: an offline receipt that an entry is in a checkpointed log.

Layout: ``c2sp.org/tlog-proof@v1``, optional ``extra <base64>`` (unauthenticated),
``index <n>``, zero or more base64 inclusion-proof hashes (leaf sibling first),
an empty line, then the signed checkpoint verbatim. A participant keeps one per
access as evidence that the access was logged.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from exchange.audit.checkpoint import SignedCheckpoint, open_checkpoint
from exchange.audit.note import Verifier
from exchange.audit.proof import verify_inclusion
from exchange.audit.tree import HASH_SIZE, MAX_TREE_SIZE, leaf_hash
from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.errors import AuditError

RECEIPT_HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64  # a tree of at most 2**64 leaves has paths of at most 64 hashes


class ReceiptError(AuditError, ValueError):
    """A tlog-proof receipt is malformed."""


@dataclass(frozen=True, slots=True)
class Receipt:
    """A parsed receipt; ``checkpoint`` is the signed note bytes, not yet verified."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes | None = None

    def encode(self) -> bytes:
        """Return the tlog-proof text."""
        lines = [RECEIPT_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(h).decode("ascii") for h in self.proof)
        head = "".join(line + "\n" for line in lines) + "\n"
        return head.encode("ascii") + self.checkpoint


def encode_receipt(
    index: int, proof: Sequence[bytes], checkpoint: bytes, *, extra: bytes | None = None
) -> bytes:
    """Return a tlog-proof receipt for leaf ``index`` with its proof and signed checkpoint."""
    if len(proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof):
        raise ReceiptError("proof hashes must be at most 64 hashes of 32 bytes")
    return Receipt(index=index, proof=tuple(proof), checkpoint=checkpoint, extra=extra).encode()


def _b64(text: str, what: str) -> bytes:
    try:
        return b64decode_canonical(text)
    except StrictDecodeError as err:
        raise ReceiptError(f"{what} {text[:60]!r} is {err}") from None


def parse_receipt(data: bytes) -> Receipt:
    """Return the receipt in ``data``; strict about every line of the format."""
    head_end = data.find(b"\n\n")
    if head_end < 0:
        raise ReceiptError("receipt has no empty line before the checkpoint")
    try:
        lines = data[:head_end].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ReceiptError("receipt header is not ASCII") from None
    checkpoint = data[head_end + 2 :]
    if lines[0] != RECEIPT_HEADER:
        raise ReceiptError(f"first line {lines[0][:60]!r}, want {RECEIPT_HEADER!r}")
    position = 1
    extra: bytes | None = None
    if position < len(lines) and lines[position].startswith("extra "):
        extra = _b64(lines[position][len("extra ") :], "extra data")
        position += 1
    if position >= len(lines) or not lines[position].startswith("index "):
        raise ReceiptError("receipt has no index line")
    index_text = lines[position][len("index ") :]
    if (
        not index_text.isdigit()
        or (index_text != "0" and index_text.startswith("0"))
        # Length first: int() refuses (with a plain ValueError) beyond 4300 digits.
        or len(index_text) > len(str(MAX_TREE_SIZE))
        or int(index_text) > MAX_TREE_SIZE
    ):
        raise ReceiptError(f"index {index_text[:30]!r} is not a canonical uint64")
    hashes = lines[position + 1 :]
    if len(hashes) > MAX_PROOF_HASHES:
        raise ReceiptError(f"receipt has {len(hashes)} proof hashes, more than {MAX_PROOF_HASHES}")
    proof = tuple(_b64(line, "proof hash") for line in hashes)
    if any(len(h) != HASH_SIZE for h in proof):
        raise ReceiptError(f"proof hashes must be {HASH_SIZE} bytes")
    if not checkpoint:
        raise ReceiptError("receipt has no checkpoint")
    return Receipt(index=int(index_text), proof=proof, checkpoint=checkpoint, extra=extra)


def verify_receipt(
    data: bytes,
    entry: bytes,
    log_key: Verifier | str,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier | str] = (),
    min_witnesses: int = 0,
) -> SignedCheckpoint:
    """Check that ``entry`` (the raw leaf bytes) is in the log per the receipt.

    Verifies the checkpoint (see ``open_checkpoint``) and the inclusion proof
    of leaf_hash(entry) at the receipt's index; returns the checkpoint.
    Raises an :class:`AuditError` subclass on any failure.
    """
    receipt = parse_receipt(data)
    signed = open_checkpoint(
        receipt.checkpoint, log_key, origin=origin, witnesses=witnesses,
        min_witnesses=min_witnesses,
    )
    checkpoint = signed.checkpoint
    verify_inclusion(leaf_hash(entry), receipt.index, checkpoint.size, receipt.proof,
                     checkpoint.root)
    return signed
