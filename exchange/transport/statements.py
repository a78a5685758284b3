"""What the statement routes share: the request schema, the listing query and its entries.

A statement listing answers ``{"chain", "statements": [{seq, audit_index,
statement}]}``; :func:`with_entries` adds each statement's audit entry
(base64) and, when the client named a tree ``size``, the inclusion proof of
that entry in the tree of that size, so one round trip gives a client all it
needs to check that every statement it uses is in the log it verified.
"""

from __future__ import annotations

import base64
from typing import Any

from aiohttp import web

from exchange.service.auditlog import inclusion_proofs, parse_size
from exchange.storage.metadata import MetadataStore
from exchange.transport.openapi import B64, obj

__all__ = ["STATEMENTS_SCHEMA", "_STATEMENT_SCHEMA", "statement_query", "with_entries"]

_STATEMENT_SCHEMA = obj({"statement": {**B64, "description":
                                       "the exchange-signed-statement/v1 document, base64"}},
                        required=["statement"], additional=True)
STATEMENTS_SCHEMA = obj({
    "chain": {"type": "string"},
    "statements": {"type": "array", "items": obj({
        "seq": {"type": "integer"}, "audit_index": {"type": "integer"}, "statement": B64,
        "entry": B64, "proof": {"type": "array", "items": B64},
    }, required=["seq", "audit_index", "statement"], additional=True)},
}, required=["chain", "statements"])


def statement_query(request: web.Request) -> tuple[int, int | None]:
    """Return (after, size) from ``?after=SEQ&size=N`` (after defaults to -1: everything)."""
    query = request.rel_url.query
    after = parse_size(query["after"], "after") if "after" in query else -1
    size = parse_size(query["size"], "size") if "size" in query else None
    return after, size


async def with_entries(store: MetadataStore, value: dict[str, Any],
                       size: int | None) -> dict[str, Any]:
    """Add each listed statement's audit entry (and its inclusion proof in ``size``).

    Entries and proof nodes are fetched in batches, whatever the number of statements.
    """
    items = value["statements"]
    indexes = [int(item["audit_index"]) for item in items]
    entries = await store.audit_entries_at(indexes)
    proven = [index for index in indexes if size is not None and index < size]
    proofs = await inclusion_proofs(store, proven, size) if size is not None and proven else {}
    for item, index in zip(items, indexes, strict=True):
        entry = entries.get(index)
        item["entry"] = None if entry is None else base64.b64encode(entry.entry).decode("ascii")
        if index in proofs:
            item["proof"] = [base64.b64encode(h).decode("ascii") for h in proofs[index]]
    return value
