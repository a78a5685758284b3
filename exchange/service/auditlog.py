"""The audit-log read API: checkpoints, C2SP tlog-tiles, RFC 6962 proofs, tlog-proof receipts.

Specs: C2SP tlog-checkpoint (the signed note served as is), C2SP tlog-tiles
v0.1.0 (hash tiles built from the stored full-subtree node hashes via
``exchange.audit.tiles``; entry bundles), RFC 6962 §2.1.1–2.1.2 inclusion and
consistency proofs (``exchange.audit.proof`` names the nodes, the store
fetches them), C2SP tlog-proof@v1 receipts (``exchange.audit.receipt``).

Who reads what (server design "Roles"): anyone authenticated may read the
checkpoint, hash tiles, proofs and the receipts of entries it is the actor
of; entry bundles and other participants' receipts are for auditors and
administrators only, since entries name who touched which case.

Logging: proofs and receipts are ``audit.read`` entries (ok or denied);
checkpoint fetches, hash tiles and entry bundles are not logged when they
succeed (:func:`release`), only their refusals are. A client polls the
checkpoint to watch the log, and a mirror fetches one tile per 256 entries:
if each appended an entry, the log would grow while it is being read, so
every checkpoint would be stale the moment it was served, a quiet log would
never be quiet, and a mirror could never catch up. A checkpoint and a hash
tile say nothing beyond the signed checkpoint; an entry bundle is served only
to auditors and administrators, whose role already entitles them to the whole
log. Each request is still authenticated and its nonce spent, so mirroring a
log costs the proofs it asks for (one consistency proof per run), not one
entry per tile.

Reads run *before* the logging transaction (:func:`prefetch`) so the
group-committed unit of work stays short; the operation then checks the
actor's role first and only then releases the value, or re-raises the
deferred error (a bad size or index becomes a denied entry like any refusal).
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from exchange.audit.entry import DetailValue, parse_entry
from exchange.audit.proof import ProofError, consistency_nodes, inclusion_nodes
from exchange.audit.receipt import encode_receipt
from exchange.audit.tiles import (
    TILE_WIDTH,
    TileError,
    TileId,
    encode_bundle,
    tile_node_ids,
    tile_width,
)
from exchange.errors import ExchangeError
from exchange.service.core import Actor, Operation, OpResult
from exchange.service.errors import Forbidden, InvalidRequest
from exchange.service.policy import Role, require_role
from exchange.storage.errors import NotFound
from exchange.storage.metadata import MetadataStore, StoredCheckpoint, Transaction

__all__ = [
    "AUDIT_READ",
    "ENTRY_READERS",
    "Fetched",
    "Receipt",
    "check_receipt_reader",
    "consistency_hashes",
    "consistency_proof",
    "current_checkpoint",
    "entry_bundle",
    "hash_tile",
    "inclusion_proof",
    "parse_size",
    "prefetch",
    "read_op",
    "receipt",
    "release",
    "tile_error",
]

T = TypeVar("T")
AUDIT_READ = "audit.read"
#: Roles that may read log entries of others (bundles, any receipt).
ENTRY_READERS = frozenset({Role.AUDITOR, Role.ADMIN})
#: Longest decimal accepted for a size or index query parameter (uint64).
_MAX_DIGITS = 20


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True)
class Fetched(Generic[T]):
    """A value read before the logging transaction, or the error reading it raised."""

    value: T | None = None
    error: ExchangeError | None = None

    def get(self) -> T:
        """Return the value or raise the deferred error."""
        if self.error is not None:
            raise self.error
        assert self.value is not None
        return self.value


async def prefetch(read: Awaitable[T]) -> Fetched[T]:
    """Run ``read`` now and keep its value or its error for the operation to release."""
    try:
        return Fetched(value=await read)
    except ExchangeError as err:
        return Fetched(error=err)
    except (ValueError, TypeError) as err:  # malformed parameters caught by the pure core
        return Fetched(error=InvalidRequest(str(err)[:200]))


def read_op(
    fetched: Fetched[T], resource: str, *, readers: frozenset[Role] | None = None,
    check: Callable[[Actor, T], None] | None = None,
    selected: Callable[[T], Mapping[str, int]] | None = None,
) -> Operation[T]:
    """Return the ``audit.read`` operation: role check, then the value (or its error).

    ``readers`` limits the roles; ``check(actor, value)`` is a finer rule that
    needs the value (a receipt's entry actor). ``resource`` goes into the entry,
    and so do the ``selected(value)`` parameters (a proof's sizes), which the
    offline verifier binds to the signed request's query (``exchange.audit.actions``).
    """

    async def op(tx: Transaction, actor: Actor) -> OpResult[T]:
        value = release(fetched, actor, resource, readers=readers, check=check)
        details: dict[str, DetailValue] = {"resource": resource[:200]}
        if selected is not None:
            details.update(selected(value))
        return OpResult(value=value, details=details)

    return op


def release(
    fetched: Fetched[T], actor: Actor, resource: str, *, readers: frozenset[Role] | None = None,
    check: Callable[[Actor, T], None] | None = None,
) -> T:
    """Return the value ``actor`` may read: role first, then the deferred error, then ``check``."""
    if readers is not None:
        require_role(actor.role, readers, f"reading {resource.partition('/')[0]}")
    value = fetched.get()
    if check is not None:
        check(actor, value)
    return value


def parse_size(text: str | None, name: str) -> int:
    """Return a canonical non-negative decimal query parameter; ``InvalidRequest`` otherwise."""
    if text is None:
        raise InvalidRequest(f"query parameter {name} is required")
    if (
        not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit()
        or (text != "0" and text.startswith("0"))
    ):
        raise InvalidRequest(f"{name} must be a canonical decimal, found {text[:30]!r}")
    value = int(text)
    if value >= 2**63:
        raise InvalidRequest(f"{name} {value} is outside [0, 2**63)")
    return value


async def current_checkpoint(store: MetadataStore) -> StoredCheckpoint:
    """Return the latest checkpoint, publishing one first when the committed tree grew.

    This is the on-demand half of publication (the server also publishes at
    most once a second in the background); publication is idempotent per size.
    """
    size = await store.tree_size()
    try:
        latest: StoredCheckpoint | None = await store.latest_checkpoint()
    except NotFound:
        latest = None
    if latest is None or latest.size < size:
        latest = await store.publish_checkpoint()
    return latest


async def hash_tile(store: MetadataStore, tile: TileId) -> bytes:
    """Return the contents of hash tile ``tile`` for the committed tree.

    A partial tile may be asked for with any width up to what the tree has
    (the tlog-tiles rule: a partial tile of width W is the first W hashes);
    a full tile exists only once all 256 hashes do.
    """
    if tile.level is None:
        raise InvalidRequest("entry bundles are not hash tiles")
    size = await store.tree_size()
    available = tile_width(tile.level, tile.index, size)
    if available < tile.width:
        raise NotFound(
            f"tile {tile.path()} needs {tile.width} hashes, the tree of {size} has {available}"
        )
    return b"".join(await store.node_hashes(tile_node_ids(tile)))


async def entry_bundle(store: MetadataStore, tile: TileId) -> bytes:
    """Return entry bundle ``tile`` (entries N·256 … N·256+W−1) of the committed log."""
    if tile.level is not None:
        raise InvalidRequest("hash tiles are not entry bundles")
    start = tile.index * TILE_WIDTH
    size = await store.tree_size()
    if start + tile.width > size:
        raise NotFound(
            f"bundle {tile.path()} needs entries up to {start + tile.width}, the log has {size}"
        )
    entries = await store.audit_entries(start, start + tile.width)
    return encode_bundle(e.entry for e in entries)


async def _sized(store: MetadataStore, *sizes: int) -> None:
    size = await store.tree_size()
    for value in sizes:
        if value > size:
            raise NotFound(f"tree size {value} is larger than the current log size {size}")


async def inclusion_proof(store: MetadataStore, index: int, size: int) -> dict[str, Any]:
    """Return the inclusion proof of leaf ``index`` in the tree of ``size`` (≤ current size)."""
    hashes = (await inclusion_proofs(store, [index], size))[index]
    return {"index": index, "size": size, "hashes": [_b64(h) for h in hashes]}


async def inclusion_proofs(store: MetadataStore, indexes: Sequence[int],
                           size: int) -> dict[int, list[bytes]]:
    """Return the inclusion proofs of leaves ``indexes`` in the tree of ``size``.

    The nodes of all of them are fetched in one batch: a listing of a hundred
    statements costs a few queries, not three hundred round trips.
    """
    await _sized(store, size)
    try:
        wanted = {index: inclusion_nodes(index, size) for index in indexes}
    except ProofError as err:
        raise InvalidRequest(str(err)) from None
    ids = sorted({node for nodes in wanted.values() for node in nodes.ids})
    found = dict(zip(ids, await store.node_hashes(ids), strict=True))
    return {index: nodes.rehash([found[node] for node in nodes.ids])
            for index, nodes in wanted.items()}


async def consistency_proof(store: MetadataStore, old: int, new: int) -> dict[str, Any]:
    """Return the consistency proof from tree size ``old`` to ``new`` (≤ current size).

    An empty proof for ``old`` 0 or ``old == new``; the verifier applies the
    tlog-witness rule for size 0.
    """
    hashes = await consistency_hashes(store, old, new)
    return {"old": old, "new": new, "hashes": [_b64(h) for h in hashes]}


async def consistency_hashes(store: MetadataStore, old: int, new: int) -> list[bytes]:
    """Return the RFC 6962 consistency proof from ``old`` to ``new`` (≤ current size)."""
    await _sized(store, old, new)
    try:
        nodes = consistency_nodes(old, new)
    except ProofError as err:
        raise InvalidRequest(str(err)) from None
    return nodes.rehash(await store.node_hashes(nodes.ids))


@dataclass(frozen=True, slots=True)
class Receipt:
    """A tlog-proof receipt and the actor of the entry it proves (for the access rule)."""

    text: bytes
    actor: str


async def receipt(store: MetadataStore, index: int,
                  witnessed: StoredCheckpoint | None = None) -> Receipt:
    """Return the tlog-proof receipt of entry ``index`` against a kept signed checkpoint.

    Uses ``witnessed`` (the newest checkpoint with its witness quorum) when it
    covers ``index``, else the latest checkpoint, publishing one on demand
    when it does not cover ``index`` yet.
    """
    (stored,) = await store.audit_entries(index, index + 1)
    checkpoint = witnessed if witnessed is not None and witnessed.size > index else (
        await store.latest_checkpoint())
    if checkpoint.size <= index:
        checkpoint = await current_checkpoint(store)
    nodes = inclusion_nodes(index, checkpoint.size)
    proof = nodes.rehash(await store.node_hashes(nodes.ids))
    actor = parse_entry(stored.entry).actor
    # The entry rides along (the receipt's "extra" line): a client checks that the
    # entry carries exactly the request signature it sent, not just that *an* entry
    # exists at the index the server named.
    return Receipt(text=encode_receipt(index, proof, checkpoint.note, extra=stored.entry),
                   actor=actor)


def check_receipt_reader(actor: Actor, value: Receipt) -> None:
    """Allow auditors and administrators any receipt, others those of their own entries."""
    if actor.role in {r.value for r in ENTRY_READERS} or value.actor == actor.id:
        return
    raise Forbidden("a receipt of another participant's entry needs role auditor or admin")


def tile_error(err: TileError) -> InvalidRequest:
    """Return the request error for a malformed tile path."""
    return InvalidRequest(str(err)[:200])
