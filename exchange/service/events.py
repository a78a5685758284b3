"""Case events for the live feed, written in the same transaction as the operation.

An event is keyed by the audit index of the entry that logged the operation,
so a feed resumed with ``Last-Event-ID: N`` continues exactly after entry N and
every event can be checked against the log. Payloads are small JSON objects
with ids and numbers only (never metadata or keys).
"""

from __future__ import annotations

import json
from typing import Any

from exchange.storage._casetx import CaseEvent
from exchange.storage.metadata import Transaction

__all__ = ["EVIDENCE", "MEMBERSHIP", "record_case_event"]

MEMBERSHIP = "membership"
EVIDENCE = "evidence"


async def record_case_event(
    tx: Transaction, kind: str, case_id: str, payload: dict[str, Any], audit_index: int
) -> None:
    """Store one case event (``kind`` is ``membership`` or ``evidence``) in ``tx``."""
    await tx.add_case_event(CaseEvent(
        case_id=case_id, audit_index=audit_index, kind=kind,
        payload=json.dumps(payload, sort_keys=True, separators=(",", ":")),
    ))
