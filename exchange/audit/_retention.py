"""The verifier's view of retention: is every erasure in the log justified? (issue 19 part 3)

The server logs ``evidence.erase`` and ``envelope.shred`` entries on its own
(no request signs them), so nothing but the log itself can justify them.
An erased item's blob is legitimately gone exactly when its erasure entry is
justified:

* the item was committed in that case and not erased before;
* the case is not under legal hold (the policy replayed from the signed
  statements at that position);
* the entry cites the policy statement in force (its hash);
* its reason holds: ``owner`` cites an earlier ok ``case.erase`` entry of
  the same case, for this item or the whole case, whose signed request the
  verifier checked (an owning prosecutor's, by the rights replay);
  ``retention-days`` and ``delivered`` must follow from the policy, the
  commit's time, the members at that position and the complete downloads
  logged so far (``exchange.audit.retention.due_reason``, the server's rule).

A shred must name an epoch older than the case's current one, every item of
which was erased before it. An item served after its erasure makes that
erasure a lie. Findings carry the rules ``erasure-unjustified``,
``erased-under-hold``, ``shred-unjustified`` and ``served-after-erasure``.

Memory: one small record per committed item (its case, uploader, epoch,
time, size) and the set of its complete downloaders.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from exchange.audit._replay import AddFinding, Replay
from exchange.audit.entry import UNKNOWN_ACTOR
from exchange.audit.retention import REASON_OWNER, due_reason, on_hold

__all__ = ["Retention"]

UNJUSTIFIED = "erasure-unjustified"
UNDER_HOLD = "erased-under-hold"
SHRED_UNJUSTIFIED = "shred-unjustified"


def _seconds(time: str) -> float:
    return datetime.fromisoformat(time.replace("Z", "+00:00")).timestamp()


@dataclass(slots=True)
class _Item:
    case: str
    uploader: str
    epoch: int
    committed: float
    size: int
    delivered: set[str] = field(default_factory=set)
    erased: bool = False


class Retention:
    """Tracks commits, complete downloads and erase requests; judges erasures and shreds."""

    def __init__(self, add: AddFinding, replay: Replay | None) -> None:
        self._add = add
        self._replay = replay
        self._items: dict[str, _Item] = {}
        self._requests: dict[int, tuple[str, str | None]] = {}  # index -> (case, item or None)

    def note_ok(self, index: int, entry: Mapping[str, Any]) -> None:
        """Take in one ok entry (after its other checks)."""
        action, details = entry["action"], entry["details"]
        if action == "evidence.commit" and isinstance(entry["object"], str):
            epoch, size = details.get("epoch"), details.get("ciphertext_size")
            self._items[entry["object"]] = _Item(
                case=str(entry["case"]), uploader=entry["actor"],
                epoch=epoch if isinstance(epoch, int) else 0,
                committed=_seconds(entry["time"]), size=size if isinstance(size, int) else -1)
        elif action == "evidence.download":
            item = self._items.get(entry["object"])
            if item is not None and item.erased:
                self._fail(index, "object", "an item not erased", str(entry["object"])[:80],
                           "an erased item was served afterwards: its erasure entry is false",
                           rule="served-after-erasure")
            elif item is not None and details.get("end") == item.size:
                item.delivered.add(entry["actor"])
        elif action == "case.erase":
            self._requests[index] = (str(entry["case"]), entry["object"])
        elif action == "evidence.erase":
            self._erasure(index, entry)
        elif action == "envelope.shred":
            self._shred(index, entry)

    def _fail(self, index: int, where: str, expected: str, found: str, message: str, *,
              rule: str = UNJUSTIFIED) -> None:
        self._add(index, where, expected, found, message, rule=rule)

    def _erasure(self, index: int, entry: Mapping[str, Any]) -> None:
        details, evidence_id, case_id = entry["details"], entry["object"], entry["case"]
        if entry["actor"] != UNKNOWN_ACTOR or entry["request"] is not None:
            self._fail(index, "actor", "the server (-, no request)", str(entry["actor"]),
                       "an erasure is logged by the server itself")
        item = self._items.get(evidence_id) if isinstance(evidence_id, str) else None
        if item is None or item.case != case_id or item.erased:
            self._fail(index, "object", "an item committed to this case and not yet erased",
                       str(evidence_id)[:80], "the erasure names no live item of its case")
            return
        item.erased = True
        if self._replay is None:
            return  # no anchor: the policy cannot be known (the report warns)
        case = self._replay.trust.cases.get(case_id)
        policy = None if case is None else case.policy
        if on_hold(policy):
            self._fail(index, "case", "a case not under legal hold", str(case_id)[:80],
                       "an item was erased while its case was under legal hold", rule=UNDER_HOLD)
            return
        want = None if case is None else case.policy_hash
        if details.get("policy") != want:
            self._fail(index, "details.policy", str(want), str(details.get("policy")),
                       "the erasure does not cite the policy statement in force")
        reason = details.get("reason")
        if reason == REASON_OWNER:
            request = details.get("request")
            cited = self._requests.get(request) if isinstance(request, int) else None
            if cited is None or cited[0] != case_id or cited[1] not in (None, evidence_id):
                self._fail(index, "details.request", "an owner's case.erase entry for this item",
                           str(request), "an owner erasure cites no erase request of an owner "
                           "for this item")
            return
        due = due_reason(policy, committed_at=item.committed, now=_seconds(entry["time"]),
                         members=[] if case is None else case.members,
                         uploader=item.uploader, delivered=item.delivered)
        if due is None or due != reason:
            self._fail(index, "details.reason", f"{due or 'not due'} (the policy in force)",
                       str(reason), "the erasure is not justified by the case's retention "
                       "policy at this point (not due yet, or not under this rule)")

    def _shred(self, index: int, entry: Mapping[str, Any]) -> None:
        case_id, epoch = entry["case"], entry["details"].get("epoch")
        items = [i for i in self._items.values() if i.case == case_id and i.epoch == epoch]
        current = None
        if self._replay is not None and (case := self._replay.trust.cases.get(case_id)):
            current = case.epoch
            if on_hold(case.policy):
                self._fail(index, "case", "a case not under legal hold", str(case_id)[:80],
                           "an epoch was shredded while its case was under legal hold",
                           rule=UNDER_HOLD)
        if not items or not all(i.erased for i in items) or (
                current is not None and not (isinstance(epoch, int) and epoch < current)):
            self._fail(index, "details.epoch", "an old epoch whose every item was erased",
                       str(epoch), "envelopes were shredded while items of the epoch remain "
                       "(or of the current epoch)", rule=SHRED_UNJUSTIFIED)
