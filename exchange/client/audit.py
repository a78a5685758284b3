"""The auditor's library: mirror the audit log over the tlog-tiles API and verify all of it.

Specs: C2SP tlog-checkpoint and signed-note (the log key), C2SP tlog-tiles
v0.1.0 (what is fetched and how it is stored, see ``audit_mirror``), RFC 6962
consistency proofs, and the exchange entry rules checked by
``exchange.audit.verify.verify_log``.

Theory of operation (:func:`verify_mirror`): fetch the latest checkpoint and
open it with the pinned log key; if a checkpoint was verified before, check
that the new one extends it (rollback and fork detection: RFC 6962
consistency proof from the server, plus the recomputed root at the old size);
fetch only the tiles and entry bundles that are new or grew since then into a
staging area; stream every entry (mirror + staged) through the offline
verifier; check the hash tiles against the entries; compare re-fetched
entries with the bytes verified earlier. Everything becomes a
:class:`~exchange.audit.verify.Finding` and the run keeps going. Only a clean
run commits the staged files and remembers the new checkpoint; a failed run
saves its evidence (both signed checkpoints, the proof, what was served).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from exchange.audit.checkpoint import Checkpoint, key_chain, open_checkpoint, open_under_any
from exchange.audit.note import Ed25519Verifier, parse_verifier_key
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency
from exchange.audit.tiles import (
    TILE_WIDTH,
    TileError,
    TileId,
    changed_tiles,
    entry_bundles,
    parse_bundle,
    split_tile,
)
from exchange.audit.tree import leaf_hash, node_hash
from exchange.audit.verify import Finding, TrustedCheckpoint, verify_log
from exchange.client.audit_mirror import AuditMirror, MirrorError, dump_json
from exchange.client.errors import KeyProblem, ServerRefused
from exchange.client.session import Client
from exchange.client.witnessing import WitnessedFetcher
from exchange.crypto.anchor import TrustAnchor
from exchange.errors import ExchangeError, TransportError

__all__ = [
    "AuditFetchError",
    "AuditRun",
    "ClientLogFetcher",
    "LogFetcher",
    "MirrorKeyMismatch",
    "Progress",
    "load_verifier",
    "verify_mirror",
    "verify_mirror_as",
    "verify_offline",
]

#: Concurrent tile fetches: enough to hide latency, few enough to be polite to the server.
FETCH_CONCURRENCY = 4
#: Findings kept per run; past this the log is clearly broken and more lines do not help.
MAX_FINDINGS = 100
AUDIT_PREFIX = "/v1/audit/"


class AuditFetchError(TransportError):
    """The server refused or failed a read of the audit API; ``status`` and ``slug`` say how."""

    problem_type = "audit-fetch"

    def __init__(self, path: str, status: int, slug: str, detail: str) -> None:
        super().__init__(f"the server answered {status} ({slug}) for {path}: {detail[:200]}")
        self.path = path
        self.status = status
        self.slug = slug
        self.detail = detail


class MirrorKeyMismatch(KeyProblem):
    """The mirror was verified with another log key than the one pinned now."""

    problem_type = "audit-mirror-key"


class LogFetcher(Protocol):
    """Reads the audit API of one log."""

    async def fetch(self, path: str) -> bytes:
        """Return the body of ``GET /v1/audit/<path>``.

        MUST raise :class:`AuditFetchError` for any non-200 answer; network
        failures propagate as they are.
        """
        ...


class ClientLogFetcher:
    """A :class:`LogFetcher` over a :class:`~exchange.client.session.Client` (signed requests)."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __repr__(self) -> str:
        return f"ClientLogFetcher({self.client!r})"

    async def fetch(self, path: str) -> bytes:
        """Return the body of ``GET /v1/audit/<path>`` (see :class:`LogFetcher`)."""
        try:
            body, _ = await self.client.call_text(AUDIT_PREFIX + path)
        except ServerRefused as err:
            raise AuditFetchError(path, err.status, err.slug, str(err)) from None
        return body


@dataclass(slots=True)
class Progress:
    """Callbacks a front end supplies: a new stage begins; ``done`` of ``total`` items."""

    stage: Callable[[str], None] = lambda text: None
    advance: Callable[[int, int], None] = lambda done, total: None


@dataclass(slots=True)
class AuditRun:
    """What one verification run found and did."""

    log_key: str
    findings: list[Finding] = field(default_factory=list)
    warnings: list[Finding] = field(default_factory=list)
    anchor: str | None = None  # fingerprint of the trust anchor the statements were replayed from
    checkpoint: Checkpoint | None = None
    remembered: Checkpoint | None = None
    entries: int = 0
    fetched_files: int = 0
    fetched_bytes: int = 0
    truncated: bool = False
    committed: bool = False
    evidence: Path | None = None

    @property
    def ok(self) -> bool:
        """Whether the log verified with no findings."""
        return not self.findings

    def add(self, index: int | None, where: str, expected: str, found: str, message: str, *,
            rule: str = "") -> None:
        """Record one finding (silently dropped past :data:`MAX_FINDINGS`)."""
        if len(self.findings) >= MAX_FINDINGS:
            self.truncated = True
            return
        self.findings.append(Finding(index, where, expected, found, message, rule))

    def to_json(self) -> dict[str, Any]:
        """Return the JSON summary (``exchange audit verify --json``)."""
        return {
            "ok": self.ok,
            "log_key": self.log_key,
            "anchor": self.anchor,
            "checkpoint": _checkpoint_json(self.checkpoint),
            "remembered": _checkpoint_json(self.remembered),
            "entries": self.entries,
            "fetched": {"files": self.fetched_files, "bytes": self.fetched_bytes},
            "findings": [finding_json(f) for f in self.findings],
            "warnings": [finding_json(f) for f in self.warnings],
            "truncated": self.truncated,
            "committed": self.committed,
            "evidence": None if self.evidence is None else str(self.evidence),
        }


def finding_json(finding: Finding) -> dict[str, Any]:
    """Return a finding as a JSON object (``rule`` only when a trust rule was broken)."""
    out: dict[str, Any] = {"index": finding.index, "field": finding.field,
                           "expected": finding.expected, "found": finding.found,
                           "message": finding.message}
    if finding.rule:
        out["rule"] = finding.rule
    return out


def _checkpoint_json(checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    return {"origin": checkpoint.origin, "size": checkpoint.size,
            "root": base64.b64encode(checkpoint.root).decode("ascii")}


def load_verifier(log_key: str) -> Ed25519Verifier:
    """Return the Ed25519 verifier for a ``name+hash+base64`` log key (``VerifierKeyError``)."""
    verifier = parse_verifier_key(log_key.strip())
    if not isinstance(verifier, Ed25519Verifier):
        raise MirrorKeyMismatch("the log key must be an Ed25519 (type 0x01) verifier key")
    return verifier


def _check_mirror_key(mirror: AuditMirror, log_key: str) -> None:
    kept = mirror.log_key()
    if kept is not None and kept != log_key.strip():
        raise MirrorKeyMismatch(
            f"the mirror in {str(mirror.root)!r} was verified with log key {kept[:80]!r}, "
            f"not {log_key.strip()[:80]!r}"
        )


def _subtree_root(hashes: Sequence[bytes]) -> bytes:
    level = list(hashes)
    while len(level) > 1:
        level = [node_hash(level[i], level[i + 1]) for i in range(0, len(level), 2)]
    return level[0]


class _Run:
    """One verification run's working state (not reusable)."""

    def __init__(self, fetcher: LogFetcher, mirror: AuditMirror, verifier: Ed25519Verifier,
                 run: AuditRun, progress: Progress) -> None:
        self.fetcher = fetcher
        self.mirror = mirror
        self.verifier = verifier
        self.run = run
        self.progress = progress
        self.files: dict[str, bytes] = {}
        self.rotations: list[bytes] = []  # log-key transition notes, kept with the mirror

    async def fetch_tiles(self, tiles: Sequence[TileId]) -> None:
        limit = asyncio.Semaphore(FETCH_CONCURRENCY)
        done = 0

        async def one(tile: TileId) -> None:
            nonlocal done
            async with limit:
                try:
                    data = await self.fetcher.fetch(tile.path())
                except AuditFetchError as err:
                    if err.status in (401, 403):
                        raise  # our identity or role, not the log: stop and say so
                    self.run.add(None, tile.path(), "the tile or bundle (HTTP 200)",
                                 f"HTTP {err.status} {err.slug}",
                                 "the server did not serve a file the checkpoint needs")
                    return
            self.run.fetched_files += 1
            self.run.fetched_bytes += len(data)
            cut = self._normalise(tile, data)
            if cut is not None:
                self.mirror.stage(tile, cut)
            done += 1
            self.progress.advance(done, len(tiles))

        await asyncio.gather(*(one(tile) for tile in tiles))

    def _normalise(self, tile: TileId, data: bytes) -> bytes | None:
        """Return the tile cut to its width (a log may serve more), or None with a finding."""
        try:
            if tile.level is None:
                entries = parse_bundle(data)
                if len(entries) < tile.width:
                    raise TileError(f"bundle has {len(entries)} entries, want {tile.width}")
                return b"".join(len(e).to_bytes(2, "big") + e for e in entries[: tile.width])
            want = 32 * tile.width
            if len(data) < want or len(data) not in (want, 32 * TILE_WIDTH):
                raise TileError(f"tile is {len(data)} bytes, want {want}")
            return data[:want]
        except TileError as err:
            self.run.add(None, tile.path(), "a well-formed tlog-tiles file", str(err)[:80],
                         "the server served a malformed tile or entry bundle")
            return None

    def entries(self, size: int, remembered_size: int) -> Iterator[bytes]:
        """Yield every entry; check level-0 tiles and re-fetched entries on the way."""
        for bundle in range(-(-size // TILE_WIDTH)):
            first = bundle * TILE_WIDTH
            width = min(TILE_WIDTH, size - first)
            tile = TileId(None, bundle, width)
            try:
                entries = parse_bundle(self.mirror.read(tile), width)
            except (MirrorError, TileError):
                return
            leaves = self._level0(TileId(0, bundle, width))
            before = (self._verified_before(bundle, remembered_size)
                      if self.mirror.is_staged(tile) else [])
            for offset, entry in enumerate(entries):
                index = first + offset
                if leaves is not None and leaves[offset] != leaf_hash(entry):
                    self.run.add(index, tile.path().replace("entries", "0"),
                                 leaf_hash(entry).hex(), leaves[offset].hex(),
                                 "the hash tile does not hold this entry's leaf hash: the "
                                 "server's tree and its entries disagree")
                if offset < len(before) and before[offset] != entry:
                    self.run.add(index, "entry",
                                 f"sha256 {hashlib.sha256(before[offset]).hexdigest()[:16]}… "
                                 "(verified earlier)",
                                 f"sha256 {hashlib.sha256(entry).hexdigest()[:16]}…",
                                 "the server now serves other bytes for an entry it served "
                                 "before: the log was rewritten here")
                yield entry

    def _level0(self, tile: TileId) -> list[bytes] | None:
        if not self.mirror.is_staged(tile):
            return None  # committed tiles were checked when they were fetched
        try:
            return split_tile(self.mirror.read(tile), tile.width)
        except (MirrorError, TileError):
            return None

    def _verified_before(self, bundle: int, remembered_size: int) -> list[bytes]:
        width = min(TILE_WIDTH, remembered_size - bundle * TILE_WIDTH)
        if width <= 0:
            return []
        try:
            return parse_bundle(self.mirror.read(TileId(None, bundle, width), committed=True),
                                width)
        except (MirrorError, TileError):
            return []

    def check_upper_tiles(self, tiles: Sequence[TileId]) -> None:
        """Each hash of a level-L tile must be the root of the 256 hashes below it."""
        for tile in tiles:
            if tile.level is None or tile.level == 0 or not self.mirror.is_staged(tile):
                continue
            try:
                hashes = split_tile(self.mirror.read(tile), tile.width)
            except (MirrorError, TileError):
                continue
            for offset, value in enumerate(hashes):
                below = TileId(tile.level - 1, tile.index * TILE_WIDTH + offset)
                try:
                    want = _subtree_root(split_tile(self.mirror.read(below), TILE_WIDTH))
                except (MirrorError, TileError):
                    self.run.add(None, below.path(), "a full tile", "missing",
                                 "a tile needed to check the level above is missing")
                    continue
                if want != value:
                    self.run.add(None, f"{tile.path()}[{offset}]", want.hex(), value.hex(),
                                 "the hash tile does not match the tiles below it")


async def verify_mirror(
    fetcher: LogFetcher, mirror: AuditMirror, log_key: str, *,
    progress: Progress | None = None, full: bool = False, anchor: TrustAnchor | None = None,
    rotations: Sequence[bytes] = (),
) -> AuditRun:
    """Update ``mirror`` from the server and verify the whole log; return the run's result.

    ``full`` re-fetches every tile instead of only what is new. ``anchor``
    is the pinned trust anchor the statements are replayed from (without it
    the run carries a warning instead). Raises
    :class:`MirrorKeyMismatch` or ``VerifierKeyError`` for a key problem,
    :class:`AuditFetchError` when the checkpoint itself cannot be read, and
    lets network errors propagate; every verification problem is a finding.
    """
    progress = progress or Progress()
    first = load_verifier(log_key)
    _check_mirror_key(mirror, log_key)
    run = AuditRun(log_key=log_key.strip())
    try:
        # ``rotations`` come verified from the client; checked again here, and by the log.
        verifier = key_chain(first, rotations)[-1]
    except ExchangeError as err:
        run.add(None, "rotations", "log-key transitions signed by the old and the new key",
                str(err)[:80], "a log-key transition does not verify")
        return run
    state = _Run(fetcher, mirror, verifier, run, progress)
    state.rotations = list(rotations)
    mirror.discard_staging()
    remembered_note = mirror.checkpoint()
    if remembered_note is not None:
        try:
            run.remembered = open_under_any(
                remembered_note, key_chain(first, mirror.rotations() or rotations))
        except ExchangeError as err:
            run.add(None, "remembered checkpoint", "a checkpoint signed by the log key",
                    str(err)[:80], f"the checkpoint kept in {str(mirror.root)!r} does not verify")
    progress.stage("fetch the latest checkpoint")
    note = await fetcher.fetch("checkpoint")
    state.files["checkpoint.latest"] = note
    try:
        run.checkpoint = open_checkpoint(note, verifier).checkpoint
    except ExchangeError as err:
        run.add(None, "checkpoint.signature", "a checkpoint signed by the log key",
                str(err)[:80], "the server's checkpoint does not verify with the pinned log key")
        return _finish(state, note)
    latest = run.checkpoint
    base = 0
    trusted: list[TrustedCheckpoint] = []
    old = run.remembered
    if old is not None and remembered_note is not None:
        state.files["checkpoint.remembered"] = remembered_note
        progress.stage(f"check consistency with the remembered checkpoint (size {old.size})")
        if await _consistent(state, old, latest):
            base = 0 if full else old.size
            trusted.append(TrustedCheckpoint(note=remembered_note))
    progress.stage(f"mirror tiles and entry bundles (tree size {latest.size})")
    tiles = [*changed_tiles(base, latest.size), *entry_bundles(base, latest.size)]
    await state.fetch_tiles(tiles)
    progress.stage(f"verify {latest.size} entries (signatures, chain, tree, encoding)")
    remembered_size = old.size if old is not None else 0
    report = verify_log(state.entries(latest.size, remembered_size), first, note,
                        trusted=trusted, max_findings=MAX_FINDINGS, anchor=anchor,
                        rotations=rotations)
    run.entries = report.entries
    run.truncated = run.truncated or report.truncated
    run.warnings, run.anchor = report.warnings, report.anchor
    for finding in report.findings:
        run.add(finding.index, finding.field, finding.expected, finding.found, finding.message,
                rule=finding.rule)
    progress.stage("check hash tiles against the entries")
    state.check_upper_tiles(tiles)
    return _finish(state, note)


async def _consistent(state: _Run, old: Checkpoint, latest: Checkpoint) -> bool:
    """Check that ``latest`` extends ``old``; record rollback/fork findings."""
    run = state.run
    if latest.size < old.size:
        run.add(None, "checkpoint.size", f">= {old.size} (the remembered checkpoint)",
                str(latest.size), "the log rolled back: it is smaller than a checkpoint the "
                "same log key signed earlier")
        return False
    proof: list[bytes] = []
    if latest.size > old.size:
        try:
            body = await state.fetcher.fetch(f"proof/consistency?old={old.size}&new={latest.size}")
        except AuditFetchError as err:
            run.add(None, "proof/consistency", "a consistency proof", f"HTTP {err.status}",
                    "the server did not serve a consistency proof")
            return False
        state.files["consistency-proof.json"] = body
        try:
            proof = [base64.b64decode(h, validate=True) for h in json.loads(body)["hashes"]]
        except (ValueError, KeyError, TypeError, binascii.Error):
            run.add(None, "proof/consistency", "a JSON list of base64 hashes",
                    repr(body[:40]), "the consistency proof is malformed")
            return False
    try:
        verify_consistency(old.size, latest.size, proof, old.root, latest.root)
    except (ProofError, RootMismatch) as err:
        found = (f"{err.which} {err.calculated.hex()[:16]}… by the server's proof"
                 if isinstance(err, RootMismatch) else str(err)[:100])
        run.add(None, "checkpoint.consistency",
                f"a tree extending size {old.size} root {old.root.hex()[:16]}…", found,
                "the log forked: the latest checkpoint does not extend the remembered one")
        return False
    return True


def _finish(state: _Run, note: bytes) -> AuditRun:
    run = state.run
    run.findings.sort(key=lambda f: (-1 if f.index is None else f.index))
    if run.ok and run.checkpoint is not None:
        state.mirror.commit(note, run.log_key, state.rotations)
        run.committed = True
        return run
    files = dict(state.files)
    files["findings.json"] = dump_json([finding_json(f) for f in run.findings])
    run.evidence = state.mirror.save_evidence(files)
    return run


async def verify_mirror_as(client: Client, mirror: AuditMirror, log_key: str, *,
                           anchor: TrustAnchor | None, progress: Progress | None = None,
                           full: bool = False) -> AuditRun:
    """Update and verify ``mirror`` over ``client``'s signed requests (``audit verify``).

    The pinned log key is checked first; checkpoints must meet the client's
    witness policy; after a clean run the client's own remembered checkpoint
    is moved to the mirror's, so a fork between the two views is itself a
    failure. See :func:`verify_mirror` for the rest.
    """
    client.trusted_checkpoint()  # checks the pinned log key (log.json) first
    # The server's checkpoint, verified as every client does: a rotated log key is
    # learnt here, only through a transition the previous key signed too.
    await client.checkpoint()
    fetcher = WitnessedFetcher(ClientLogFetcher(client), log_key, client.witness_policy)
    run = await verify_mirror(fetcher, mirror, log_key, progress=progress, full=full,
                              anchor=anchor, rotations=client.log_rotations())
    if run.ok and mirror.checkpoint() is not None:
        await client.verify_checkpoint(mirror.checkpoint() or b"")
    return run


def verify_offline(mirror: AuditMirror, log_key: str, *,
                   anchor: TrustAnchor | None = None) -> tuple[Checkpoint, list[Finding]]:
    """Re-verify the mirror against its own remembered checkpoint, without the server.

    Returns the checkpoint and the findings (empty when the mirror is sound);
    with ``anchor``, the statements are replayed from it as in :func:`verify_mirror`.
    Raises :class:`MirrorError` when there is no mirror yet.
    """
    first = load_verifier(log_key)
    _check_mirror_key(mirror, log_key)
    note = mirror.checkpoint()
    if note is None:
        raise MirrorError(f"no verified audit log in {str(mirror.root)!r} yet")
    rotations = mirror.rotations()
    checkpoint = open_checkpoint(note, key_chain(first, rotations)[-1]).checkpoint
    report = verify_log(mirror.entries(checkpoint.size, committed=True), first, note,
                        max_findings=MAX_FINDINGS, anchor=anchor, rotations=rotations)
    return checkpoint, report.findings
