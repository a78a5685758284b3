"""When may an evidence item be erased? One pure rule for the server and the verifier (issue 19).

The server applies it to enforce a case's retention policy (its sweep), the
verifier applies it to every ``evidence.erase`` entry of the log: the two
must agree, so the rule lives here once. The inputs are facts both sides
have: the policy in force (a verified ``case.policy`` statement), when the
item was committed, the members of the case at the moment of erasure and
who completed a download of the item.

*Intended recipients* are the case's current members other than the
uploader: a member removed meanwhile can no longer pull, so waiting for them
would keep the item forever; a member added after the upload is in the case
to receive it, so they count. With no intended recipient nothing has been
delivered to anyone, and the item is kept.

A legal hold (``legal_hold: true``) blocks every erasure, the owner's
erase-now included, until a later policy statement lifts it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

__all__ = [
    "DAY_S",
    "REASONS",
    "REASON_DAYS",
    "REASON_DELIVERED",
    "REASON_OWNER",
    "due_reason",
    "on_hold",
    "recipients",
]

DAY_S = 86_400
REASON_DAYS = "retention-days"
REASON_DELIVERED = "delivered"
REASON_OWNER = "owner"
REASONS = frozenset({REASON_DAYS, REASON_DELIVERED, REASON_OWNER})


def on_hold(policy: Mapping[str, Any] | None) -> bool:
    """Whether ``policy`` puts the case under legal hold."""
    return bool(policy and policy.get("legal_hold") is True)


def recipients(members: Collection[str], uploader: str) -> set[str]:
    """The intended recipients of an item: the current members but its uploader."""
    return set(members) - {uploader}


def due_reason(policy: Mapping[str, Any] | None, *, committed_at: float, now: float,
               members: Collection[str], uploader: str,
               delivered: Collection[str]) -> str | None:
    """Return why the item is due for erasure under ``policy`` (a reason), or None.

    ``committed_at`` and ``now`` are Unix seconds; ``delivered`` the
    participants who completed a download of the item.
    """
    if policy is None or on_hold(policy):
        return None
    retention = policy.get("retention")
    if not isinstance(retention, Mapping):
        return None
    mode = retention.get("mode")
    if mode == "days":
        days = retention.get("days")
        if isinstance(days, int) and now >= committed_at + days * DAY_S:
            return REASON_DAYS
        return None
    if mode == "until-delivered":
        wanted = recipients(members, uploader)
        if wanted and wanted <= set(delivered):
            return REASON_DELIVERED
    return None
