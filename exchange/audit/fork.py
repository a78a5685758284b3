"""Comparing two views of one log: consistent, a proven fork, or not decidable yet.

A *view* is what a receipt or custody record holds: one or more signed
checkpoints (already verified under the log key by the caller) and the
entries proven included in them (index -> RFC 6962 leaf hash). Two views
prove a fork when they hold two checkpoints of the same size with different
roots, or two different entries at the same index. Checkpoints of
different sizes are consistent only with an RFC 6962 consistency proof
between them (``verify_consistency``); without one the answer is
"undecided", with the proof that would decide it named; with one that does
not verify it is "inconsistent" (a fork, or a bad proof: the log can always
prove consistency between two honest checkpoints).
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum

from exchange.audit.checkpoint import Checkpoint, CheckpointError
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency

__all__ = ["Comparison", "Verdict", "View", "compare_views"]


class Verdict(Enum):
    """The outcome of a comparison."""

    CONSISTENT = "consistent"
    FORK = "fork"
    INCONSISTENT = "inconsistent"
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class View:
    """Verified checkpoints (with their raw notes) and proven entries of one party."""

    checkpoints: tuple[tuple[Checkpoint, bytes], ...]
    entries: dict[int, bytes] = field(default_factory=dict)

    def largest(self) -> tuple[Checkpoint, bytes]:
        """Return the checkpoint of the largest tree in the view (and its note)."""
        if not self.checkpoints:
            raise CheckpointError("a view needs at least one checkpoint")
        return max(self.checkpoints, key=lambda item: item[0].size)


@dataclass(frozen=True, slots=True)
class Comparison:
    """The verdict, why, and the evidence: the two signed checkpoints (A's, then B's)."""

    verdict: Verdict
    reason: str
    a: bytes
    b: bytes
    needs: tuple[int, int] | None = None  # (old, new) consistency proof that would decide


def compare_views(a: View, b: View, proof: Sequence[bytes] | None = None) -> Comparison:
    """Return whether views ``a`` and ``b`` of one log agree.

    ``proof`` is a consistency proof between the largest checkpoints of the
    two views (smaller size to larger). Raises ``CheckpointError`` when the
    views are of different logs (origins differ).
    """
    big_a, note_a = a.largest()
    big_b, note_b = b.largest()
    if big_a.origin != big_b.origin:
        raise CheckpointError(f"the views are of different logs: {big_a.origin[:60]!r} and "
                              f"{big_b.origin[:60]!r}")
    for cp_a, raw_a in a.checkpoints:
        for cp_b, raw_b in b.checkpoints:
            if cp_a.size == cp_b.size and not hmac.compare_digest(cp_a.root, cp_b.root):
                return Comparison(Verdict.FORK, f"two checkpoints of tree size {cp_a.size} "
                                  "with different root hashes, both signed by the log key",
                                  raw_a, raw_b)
    for index in sorted(set(a.entries) & set(b.entries)):
        if not hmac.compare_digest(a.entries[index], b.entries[index]):
            return Comparison(Verdict.FORK, f"two different entries proven at index {index}",
                              note_a, note_b)
    if big_a.size == big_b.size:
        return Comparison(Verdict.CONSISTENT, f"the same tree of size {big_a.size}",
                          note_a, note_b)
    small, large = sorted([big_a, big_b], key=lambda cp: cp.size)
    pair = (small.size, large.size)
    if proof is None:
        return Comparison(Verdict.UNDECIDED, f"a consistency proof from size {small.size} to "
                          f"{large.size} is needed", note_a, note_b, needs=pair)
    try:
        verify_consistency(small.size, large.size, list(proof), small.root, large.root)
    except (ProofError, RootMismatch) as err:
        # The log must be able to prove consistency; a proof that fails is not by itself a
        # fork proof (it may just be a bad proof), so it gets its own verdict.
        return Comparison(Verdict.INCONSISTENT, f"the consistency proof from size {small.size} "
                          f"to {large.size} does not verify: {err}", note_a, note_b,
                          needs=pair)
    return Comparison(Verdict.CONSISTENT, f"the tree of size {large.size} extends the one of "
                      f"size {small.size} (consistency proof verified)", note_a, note_b)
