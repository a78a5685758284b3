"""The client's verified view of keys, members and epochs: statements it checked itself.

Theory of operation (DESIGN.md trust model; issue 10). The server's listings
of participants, members and epochs are hints. What the client acts on is the
trust state it replays (``exchange.crypto.chains``) from signed statements,
starting from the trust anchor the participant pinned out of band:

1. fetch the statements of the directory (and of the cases at hand) that
   this client has not seen yet, each with its audit entry and an inclusion
   proof in the checkpoint the client has just verified (signed by the pinned
   log key, consistent with every checkpoint it verified before);
2. check that each entry is in that checkpoint, is the ``ok`` entry of that
   very statement, and that the statements extend the chains it holds;
3. keep the verified statements in the state directory (``statements.json``)
   and replay them all, in log order, with the rules.

What this stops: a server that substitutes keys, invents members or
envelopes, replays a statement from another case or server, or forges a
statement fails at step 2 or 3. Kept statements are the client's high-water
mark: a server that later hides a statement (an epoch rotation, a key change)
cannot make this client go back, because nothing it held is ever dropped. A
server can still *delay* showing a statement to a client that never saw it;
every action therefore names what it relied on (member fingerprints in
statements, the case head in a commit), and ``exchange audit verify`` flags an
action built on a stale view, naming the entry.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exchange.audit.entry import EntryError, parse_entry
from exchange.audit.proof import ProofError, RootMismatch, verify_inclusion
from exchange.audit.tree import leaf_hash
from exchange.client.errors import MalformedReply, VerificationFailed
from exchange.client.witnessing import covering
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.chains import CaseState, ChainError, TrustState
from exchange.crypto.keys import PublicBundle
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    Statement,
    StatementError,
    case_chain,
    issued_at,
    parse_signed_statement,
    sign_statement,
)

if TYPE_CHECKING:
    from exchange.audit.checkpoint import Checkpoint
    from exchange.client.session import Client

__all__ = ["STATEMENTS_FILE", "TrustView", "VerifiedParticipant"]

STATEMENTS_FILE = "statements.json"
#: How long a synced state is reused before the server is asked again (seconds).
CACHE_S = 10.0
_MAX_NEW_PER_SYNC = 100_000


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedParticipant:
    """A participant whose served keys were taken from the verified directory."""

    bundle: PublicBundle
    role: str
    status: str
    organisation: str
    country: str
    key_index: int | None
    logged: bool  # False only when the server offered no key entry to check

    @property
    def id(self) -> str:
        """The participant id."""
        return self.bundle.id

    @property
    def fingerprint(self) -> str:
        """The overall fingerprint of the keys (read it aloud to compare)."""
        return self.bundle.fingerprint


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _path(chain: str) -> str:
    if chain == DIRECTORY_CHAIN:
        return "/v1/directory/statements"
    return f"/v1/cases/{chain.removeprefix('case:')}/statements"


class TrustView:
    """One client's verified statements, synced from the server and kept locally."""

    def __init__(self, client: Client, anchor: TrustAnchor) -> None:
        self.client = client
        self.anchor = anchor
        self._cache: dict[tuple[str, ...], tuple[float, TrustState]] = {}

    def __repr__(self) -> str:
        return f"TrustView(anchor={self.anchor.fingerprint!r})"

    # -- local store ----------------------------------------------------------------------

    def _kept(self) -> dict[str, list[list[Any]]]:
        """Return {chain: [[seq, audit_index, statement b64], ...]} as kept on disk."""
        doc = self.client.state.read_json(STATEMENTS_FILE)
        if not isinstance(doc, dict) or doc.get("anchor") != self.anchor.fingerprint:
            if doc is not None and isinstance(doc, dict) and doc.get("anchor"):
                raise VerificationFailed(
                    "the statements kept in the state directory were verified under another "
                    "trust anchor",
                    f"move {str(self.client.state.root)!r} aside if the anchor really changed")
            return {}
        chains = doc.get("chains")
        return chains if isinstance(chains, dict) else {}

    def _keep(self, chains: Mapping[str, list[list[Any]]]) -> None:
        self.client.state.write_json(STATEMENTS_FILE, {
            "anchor": self.anchor.fingerprint, "chains": dict(chains)})

    # -- sync -----------------------------------------------------------------------------

    def forget(self) -> None:
        """Drop the states synced in this session (after this client made a statement)."""
        self._cache.clear()

    async def sync(self, *case_ids: str, fresh: bool = False) -> TrustState:
        """Fetch what is new in the directory and ``case_ids``; return the replayed state.

        Synced at most every ``CACHE_S`` seconds unless ``fresh`` (a command
        is short; a long-running one, ``pull --watch`` or the local interface,
        sees new statements within that time).
        Raises :class:`VerificationFailed` (exit 3) when anything the server
        sent does not verify; nothing unverified is kept.
        """
        key = tuple(sorted(set(case_ids)))
        if not fresh and (reused := self._reuse(key)) is not None:
            return reused
        state = await self._sync(key)
        self._cache[key] = (time.monotonic(), state)
        return state

    def _reuse(self, key: tuple[str, ...]) -> TrustState | None:
        """Return a state for ``key`` from a sync younger than ``CACHE_S``, if there is one.

        A sync of more cases covers ``key`` too: it fetched the directory and every
        chain of ``key`` under the same checkpoint. Those chains are replayed from
        the kept (verified) statements, so the state holds exactly ``key``'s cases,
        as fresh as that sync (a pull's manifest check after its case-key sync asks
        the server nothing again).
        """
        now = time.monotonic()
        cached = self._cache.get(key)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        for other, (synced_at, _) in list(self._cache.items()):
            if now - synced_at < CACHE_S and set(key) <= set(other):
                state = self.replay(self._kept(), [DIRECTORY_CHAIN, *map(case_chain, key)])
                self._cache[key] = (synced_at, state)
                return state
        return None

    async def _sync(self, case_ids: tuple[str, ...]) -> TrustState:
        checkpoint = await self.client.checkpoint()
        kept = self._kept()
        chains = [DIRECTORY_CHAIN, *(case_chain(c) for c in case_ids)]
        for chain in chains:
            have = kept.setdefault(chain, [])
            await self._fetch(chain, have, checkpoint)
        self._keep(kept)
        return self.replay(kept, chains)

    def replay(self, kept: Mapping[str, list[list[Any]]], chains: list[str]) -> TrustState:
        """Return the trust state of ``chains`` replayed in log order from kept statements."""
        items = [(int(i), chain, str(s)) for chain in chains for (_, i, s) in kept.get(chain, [])]
        state = TrustState(self.anchor)
        for index, chain, text in sorted(items):
            try:
                state.apply(parse_signed_statement(base64.b64decode(text)), index=index)
            except StatementError as err:
                rule = getattr(err, "rule", "malformed")
                raise VerificationFailed(
                    f"the {chain} statement logged at entry {index} breaks the rules "
                    f"({rule}): {err}",
                    "the server holds a statement its signer could not make; keep the state "
                    "directory as evidence and tell your auditor") from None
        return state

    def statements(self, *case_ids: str) -> list[tuple[int, SignedStatement]]:
        """Return the kept (verified) statements of the directory and ``case_ids``.

        (audit index, statement) pairs; call :meth:`sync` first to be current.
        """
        kept = self._kept()
        chains = [DIRECTORY_CHAIN, *(case_chain(c) for c in case_ids)]
        return [(int(i), parse_signed_statement(base64.b64decode(str(text))))
                for chain in chains for (_, i, text) in kept.get(chain, [])]

    async def _fetch(self, chain: str, have: list[list[Any]], checkpoint: Checkpoint) -> None:
        query = f"after={len(have) - 1}&" if have else ""
        items = await self._listing(chain, query, checkpoint)
        indexes = [i["audit_index"] for i in items if isinstance(i.get("audit_index"), int)]
        newest = max(indexes, default=-1)
        if newest >= checkpoint.size:
            # A statement logged a moment ago may not be under the (witnessed) checkpoint
            # yet: wait for one that covers it, then read the listing again with proofs.
            checkpoint = await covering(newest, checkpoint, self.client.checkpoint,
                                        self.client.witness_policy)
            items = await self._listing(chain, query, checkpoint)
        for item in items:
            have.append(self._check_item(chain, len(have), item, checkpoint))

    async def _listing(self, chain: str, query: str,
                       checkpoint: Checkpoint) -> list[dict[str, Any]]:
        reply = await self.client.call(
            "GET", f"{_path(chain)}?{query}size={checkpoint.size}",
            doing=f"reading the signed statements of {chain}")
        items = reply.records("statements", "the statement listing")
        if len(items) > _MAX_NEW_PER_SYNC:
            raise MalformedReply("the server sent more statements than any chain holds")
        return items

    def _check_item(self, chain: str, seq: int, item: dict[str, Any],
                    checkpoint: Checkpoint) -> list[Any]:
        """Return [seq, index, statement b64] once the item verifies; else VerificationFailed."""
        where = f"{chain} statement {seq}"
        try:
            index = item["audit_index"]
            data = base64.b64decode(str(item["statement"]), validate=True)
            entry_bytes = base64.b64decode(str(item["entry"]), validate=True)
            proof = [base64.b64decode(str(h), validate=True) for h in item["proof"]]
        except (KeyError, TypeError, ValueError, binascii.Error):
            raise VerificationFailed(f"the server's {where} is incomplete (statement, entry "
                                     "and inclusion proof are all required)") from None
        if item.get("seq") != seq or not isinstance(index, int) or not (
                0 <= index < checkpoint.size):
            raise VerificationFailed(f"the server's {where} is out of place")
        try:
            signed = parse_signed_statement(data)
        except StatementError as err:
            raise VerificationFailed(f"the server's {where} is not a valid signed statement: "
                                     f"{err}") from None
        if signed.statement.chain != chain or signed.statement.seq != seq:
            raise VerificationFailed(f"the server sent a statement of {signed.statement.chain} "
                                     f"#{signed.statement.seq} as {where}")
        try:
            entry = parse_entry(entry_bytes)
            verify_inclusion(leaf_hash(entry_bytes), index, checkpoint.size, proof,
                             checkpoint.root)
        except (EntryError, ProofError, RootMismatch, ValueError) as err:
            raise VerificationFailed(f"the {where} is not in the log this client verified "
                                     f"({err})") from None
        details = entry.details
        if (entry.index != index or entry.outcome != "ok" or entry.action != signed.statement.type
                or details.get("statement") != _b64(data)
                or details.get("statement_hash") != signed.hash):
            raise VerificationFailed(f"the audit entry {index} does not carry the {where}")
        return [seq, index, _b64(data)]

    # -- making statements ------------------------------------------------------------------

    def make(self, state: TrustState, *, chain: str, kind: str,
             body: dict[str, Any]) -> SignedStatement:
        """Return a new statement of ``kind`` on ``chain`` extending ``state``, signed by us.

        It is checked against a copy of ``state`` first, so the client never
        sends a statement it would itself refuse.
        """
        me = self.client.identity
        seq, head = state.chain_head(chain)
        statement = Statement(type=kind, chain=chain, seq=seq, prev=head, issuer=me.id,
                              issued_at=issued_at(time.time()), origin=self.anchor.origin,
                              body=body)
        signed = sign_statement(statement, [(me.id, me.signing_key)])
        try:
            state.copy().apply(signed)
        except ChainError as err:
            raise VerificationFailed(f"you may not make this {kind} statement ({err.rule}): "
                                     f"{err}") from None
        return signed

    @staticmethod
    def check_envelope(case: CaseState, member: str, epoch: int, envelope: bytes) -> None:
        """Raise unless ``envelope`` is the one a verified statement names for ``member``."""
        named = case.envelope_hash(member, epoch)
        if named is None:
            raise VerificationFailed(
                f"no verified statement of case {case.case_id!r} names an envelope of epoch "
                f"{epoch} for {member!r}",
                "the server offers an envelope nobody vouched for; tell a prosecutor of the case")
        if not hmac.compare_digest(named, hashlib.sha256(envelope).hexdigest()):
            raise VerificationFailed(
                f"the envelope the server sent for case {case.case_id!r} epoch {epoch} is not "
                "the one its statement names (envelope substitution)",
                "nothing was decrypted with it; keep the state directory and tell your auditor")
