"""Signed statements on the server: accept, store, log and serve them (issue 10).

The server is not trusted with them: clients and the verifier replay every
statement themselves (``exchange.crypto.chains``). It checks them anyway,
with the same engine, so that an honest server never stores a statement that
clients would refuse, and so that two concurrent requests cannot both
extend one chain head (the statements table's key refuses the second).

Each accepted statement is stored verbatim and carried in its audit entry's
details (``statement`` base64, ``statement_hash``, ``chain``, ``seq``), so an
auditor can re-check it from the log alone.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from exchange.audit.entry import DetailValue
from exchange.crypto.anchor import AnchorError, TrustAnchor, parse_anchor
from exchange.crypto.chains import ChainError, TrustState
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    StatementError,
    case_chain,
    parse_signed_statement,
)
from exchange.errors import StorageError
from exchange.service.errors import Forbidden, InvalidRequest
from exchange.storage._statementtx import MAX_STATEMENTS_PER_READ, StoredStatement
from exchange.storage.metadata import Transaction

__all__ = [
    "TRUST_FILE",
    "accept_statement",
    "load_anchor",
    "replay",
    "statement_details",
    "statement_from_body",
    "store_statement",
]

#: The trust anchor's file in the data directory (written by ``exchange server init``).
TRUST_FILE = "trust.json"
MAX_STATEMENT_B64 = 60 * 1024
#: Rules whose breach means "you may not", not "this is malformed".
_FORBIDDEN_RULES = frozenset({"not-admin", "admin-quorum", "not-owner", "not-member",
                              "suspended", "bad-signature", "no-possession"})


class AnchorMissing(StorageError):
    """The data directory has no trust anchor (made before signed statements existed)."""

    http_status = 503
    problem_type = "trust-anchor-missing"


@functools.lru_cache(maxsize=8)
def _read_anchor(path: Path, mtime_ns: int) -> TrustAnchor:
    return parse_anchor(path.read_bytes())


def load_anchor(data_dir: Path) -> TrustAnchor:
    """Return the data directory's trust anchor; :class:`AnchorMissing` when it has none."""
    path = Path(data_dir) / TRUST_FILE
    try:
        return _read_anchor(path, path.stat().st_mtime_ns)
    except FileNotFoundError:
        raise AnchorMissing(
            f"the data directory has no {TRUST_FILE}: it was made before signed statements; "
            "run 'exchange server init' for a new log (statements cannot be invented for old "
            "entries)") from None
    except (OSError, AnchorError) as err:
        raise AnchorMissing(f"the trust anchor {str(path)!r} is unreadable: {err}") from None


async def _load(tx: Transaction, chain: str) -> list[StoredStatement]:
    out: list[StoredStatement] = []
    while True:
        batch = await tx.list_statements(chain, after=out[-1].seq if out else -1)
        out.extend(batch)
        if len(batch) < MAX_STATEMENTS_PER_READ:
            return out


async def replay(tx: Transaction, anchor: TrustAnchor, *case_ids: str) -> TrustState:
    """Return the trust state of the directory and ``case_ids``, replayed in log order."""
    stored = await _load(tx, DIRECTORY_CHAIN)
    for case_id in case_ids:
        stored += await _load(tx, case_chain(case_id))
    state = TrustState(anchor)
    for record in sorted(stored, key=lambda r: r.audit_index):
        try:
            state.apply(parse_signed_statement(record.statement), index=record.audit_index)
        except StatementError as err:
            raise StorageError(f"stored statement {record.chain} #{record.seq} does not "
                               f"replay: {err}") from None
    return state


def statement_from_body(obj: dict[str, Any]) -> SignedStatement:
    """Return the signed statement in a request body's ``statement`` member (base64)."""
    value = obj.get("statement")
    if not isinstance(value, str) or len(value) > MAX_STATEMENT_B64:
        raise InvalidRequest("the request needs 'statement': the signed statement, base64")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("'statement' is not valid base64") from None
    try:
        return parse_signed_statement(data)
    except StatementError as err:
        raise InvalidRequest(f"statement: {err}") from None


def accept_statement(state: TrustState, signed: SignedStatement, *, actor_id: str,
                     kind: str, chain: str) -> None:
    """Apply ``signed`` to ``state`` after checking it is the statement this request makes.

    The statement's issuer must be the request's signer, its type the route's
    action and its chain the route's case (or the directory). A chain rule
    broken answers 403 when it is about rights, 400 otherwise.
    """
    statement = signed.statement
    if statement.type != kind:
        raise InvalidRequest(f"this request takes a {kind} statement, not {statement.type}")
    if statement.chain != chain:
        raise InvalidRequest(f"the statement is for chain {statement.chain[:70]!r}, "
                             f"this request for {chain!r}")
    if statement.issuer != actor_id:
        raise Forbidden("the statement's issuer is not the participant who signed the request")
    try:
        state.apply(signed)
    except ChainError as err:
        if err.rule in _FORBIDDEN_RULES:
            raise Forbidden(f"statement refused ({err.rule}): {err}") from None
        raise InvalidRequest(f"statement refused ({err.rule}): {err}") from None


def statement_details(signed: SignedStatement) -> dict[str, DetailValue]:
    """Return the audit details that carry ``signed`` (verbatim, base64)."""
    return {
        "statement": base64.b64encode(signed.encode()).decode("ascii"),
        "statement_hash": signed.hash,
        "chain": signed.statement.chain,
        "seq": signed.statement.seq,
    }


def store_statement(signed: SignedStatement) -> Callable[[Transaction, int], Awaitable[None]]:
    """Return an ``after`` hook storing ``signed`` with the index of its audit entry."""

    async def after(tx: Transaction, index: int) -> None:
        await tx.add_statement(StoredStatement(
            chain=signed.statement.chain, seq=signed.statement.seq, hash=signed.hash,
            statement=signed.encode(), audit_index=index))

    return after


def then(*hooks: Callable[[Transaction, int], Awaitable[None]] | None
         ) -> Callable[[Transaction, int], Awaitable[None]]:
    """Return one ``after`` hook running ``hooks`` in order (None ones skipped)."""

    async def after(tx: Transaction, index: int) -> None:
        for hook in hooks:
            if hook is not None:
                await hook(tx, index)

    return after
