"""Collecting witness cosignatures for the log's checkpoints (C2SP tlog-witness client side).

Theory of operation: after the publisher signs a new checkpoint it wakes the
:class:`WitnessCollector`, a background task (requests never wait for it).
For each witness that has not cosigned the latest checkpoint, it sends
``old <size>`` (the size that witness last cosigned, as far as we know), the
consistency proof from there, and the signed note. On 409 the body is the
witness's real size (``text/x.tlog.size``): the request is rebuilt from that
size and sent again. Each cosignature line that comes back is verified
against the witness's key before it is added to the kept note. Once a
quorum of the configured witnesses cosigned a checkpoint it becomes the one
served as *the* checkpoint; when witnesses are down the newest checkpoint
that met the quorum keeps being served (freshness degrades, correctness does
not), and ``GET /v1/health`` says so.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from exchange.audit.note import Signature, parse_note, sign_note
from exchange.audit.witness_policy import Witness, WitnessPolicy, cosignature_status
from exchange.errors import ExchangeError
from exchange.service.auditlog import consistency_hashes
from exchange.storage import durability
from exchange.storage.errors import NotFound
from exchange.storage.metadata import MetadataStore, StoredCheckpoint
from exchange.witness.protocol import MAX_PROOF_LINES, SIZE_CONTENT_TYPE

__all__ = ["RETRY_INTERVAL_S", "WITNESSES_KEY", "WitnessCollector", "add_checkpoint_body"]

#: A failed or incomplete round is retried this often (and on every new checkpoint).
RETRY_INTERVAL_S = 5.0
#: One add-checkpoint exchange; a witness slower than this counts as down for the round.
REQUEST_TIMEOUT_S = 10.0
#: 409 answers followed per witness and round (a second 409 means it moves under us).
MAX_CONFLICTS = 3
#: Kept checkpoints searched at start-up for the newest one that met the quorum.
STARTUP_SCAN = 256
_MAX_ANSWER_BYTES = 16 * 1024
_log = structlog.get_logger(__name__)


def add_checkpoint_body(old: int, proof: list[bytes], note: bytes) -> bytes:
    """Return a tlog-witness add-checkpoint request body."""
    if len(proof) > MAX_PROOF_LINES:
        raise ValueError(f"proof of {len(proof)} hashes, at most {MAX_PROOF_LINES}")
    lines = [f"old {old}"] + [base64.b64encode(h).decode("ascii") for h in proof]
    return ("\n".join(lines) + "\n\n").encode("ascii") + note


@dataclass
class _State:
    """What the collector knows of one witness."""

    witness: Witness
    size: int | None = None  # the size it last cosigned (None: not known yet)
    last_success: float | None = None
    last_error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.witness.name, "url": self.witness.url,
                "cosigned_size": self.size, "last_error": self.last_error,
                "last_success_at": None if self.last_success is None
                else int(self.last_success)}


class _Refused(Exception):
    """A witness answered with a refusal; the message is for the health output."""


class WitnessCollector:
    """Gathers cosignatures for the store's checkpoints and tracks the newest witnessed one."""

    def __init__(self, store: MetadataStore, policy: WitnessPolicy) -> None:
        self.store = store
        self.policy = policy
        self.witnessed: StoredCheckpoint | None = None
        self.latest_size: int | None = None
        self._states = [_State(w) for w in policy.witnesses]
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- life cycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Find the newest kept checkpoint that met the quorum, then start collecting."""
        for kept in await self.store.recent_checkpoints(STARTUP_SCAN):
            valid, _ = cosignature_status(kept.note, self.policy.witnesses)
            if len(valid) >= self.policy.quorum:
                self.witnessed = kept
                break
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S))
        self._task = asyncio.create_task(self._run(), name="witnesses")

    async def stop(self) -> None:
        """Stop collecting and close the HTTP session."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    def notify(self) -> None:
        """Wake the collector: a new checkpoint was published."""
        self._wakeup.set()

    async def _run(self) -> None:
        while True:
            try:
                await self.collect_once()
            except ExchangeError as err:  # database away: next round
                _log.warning("witness_round_failed", error=type(err).__name__)
            except Exception as err:  # a bug must not stop witnessing for good
                _log.error("witness_round_crashed", error=type(err).__name__,
                           detail=str(err)[:200])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), RETRY_INTERVAL_S)
            self._wakeup.clear()

    # -- one round ----------------------------------------------------------------------

    async def collect_once(self) -> None:
        """Send the latest checkpoint to every witness that has not cosigned it yet."""
        try:
            with durability.tracking() as seen:
                latest = await self.store.latest_checkpoint()
        except NotFound:
            return
        # A witness must never cosign a checkpoint a power cut could take back.
        await self.store.wait_durable(seen.commit)
        self.latest_size = latest.size
        valid, _ = cosignature_status(latest.note, self.policy.witnesses)
        todo = [s for s in self._states if s.witness.name not in valid]
        if todo:
            answers = await asyncio.gather(*(self._submit(s, latest) for s in todo))
            lines = [line for line in answers if line is not None]
            if lines:
                latest = await self._keep(latest, lines)
                valid, _ = cosignature_status(latest.note, self.policy.witnesses)
        if len(valid) >= self.policy.quorum and (
                self.witnessed is None or latest.size >= self.witnessed.size):
            if self.witnessed is None or self.witnessed.note != latest.note:
                _log.info("checkpoint_witnessed", tree_size=latest.size, cosigners=len(valid))
            self.witnessed = latest

    async def _keep(self, kept: StoredCheckpoint, lines: list[Signature]) -> StoredCheckpoint:
        text, signatures = parse_note(kept.note)
        new = {(s.name, s.key_id) for s in lines}
        keep = [s for s in signatures if (s.name, s.key_id) not in new] + lines
        note = sign_note(text, [], keep=keep)
        await self.store.replace_checkpoint_note(kept.size, note)
        return StoredCheckpoint(size=kept.size, root_hash=kept.root_hash, note=note,
                                created_at=kept.created_at)

    async def _submit(self, state: _State, latest: StoredCheckpoint) -> Signature | None:
        """Return the witness's verified cosignature of ``latest``, or None (state updated)."""
        old = state.size if state.size is not None and state.size <= latest.size else 0
        try:
            for _ in range(MAX_CONFLICTS):
                proof = await consistency_hashes(self.store, old, latest.size)
                status, body = await self._post(state.witness,
                                                add_checkpoint_body(old, proof, latest.note))
                if status == 409:
                    old = _stored_size(body)
                    state.size = old
                    if old > latest.size:
                        raise _Refused(f"the witness cosigned size {old}, larger than this "
                                       f"log's {latest.size}")
                    continue
                if status != 200:
                    raise _Refused(f"refused with {status}: {_detail(body)}")
                line = self._verified_line(state.witness, latest, body)
                state.size = latest.size
                state.last_success = time.time()
                state.last_error = None
                _log.info("checkpoint_cosigned", witness=state.witness.name,
                          tree_size=latest.size)
                return line
            raise _Refused("the witness's size kept changing (409 again and again)")
        except _Refused as err:
            state.last_error = str(err)[:300]
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            state.last_error = f"unreachable: {type(err).__name__} {str(err)[:160]}"
        _log.warning("witness_failed", witness=state.witness.name, tree_size=latest.size,
                     detail=state.last_error)
        return None

    async def _post(self, witness: Witness, body: bytes) -> tuple[int, bytes]:
        assert self._session is not None
        url = witness.url.rstrip("/") + "/add-checkpoint"
        async with self._session.post(url, data=body) as response:
            data = await response.content.read(_MAX_ANSWER_BYTES + 1)
            if len(data) > _MAX_ANSWER_BYTES:
                raise _Refused(f"answer larger than {_MAX_ANSWER_BYTES} bytes")
            if response.status == 409 and not response.headers.get(
                    "Content-Type", "").startswith(SIZE_CONTENT_TYPE):
                raise _Refused(f"409 without a {SIZE_CONTENT_TYPE} body")
            return response.status, data

    def _verified_line(self, witness: Witness, latest: StoredCheckpoint,
                       body: bytes) -> Signature:
        verifier = witness.verifier
        text, _ = parse_note(latest.note)
        try:
            _, lines = parse_note(text.encode("utf-8") + b"\n" + body)
        except ExchangeError as err:
            raise _Refused(f"malformed cosignature answer: {err}") from None
        for line in lines:
            if (line.name, line.key_id) == (verifier.name, verifier.key_id) and \
                    verifier.verify(text.encode("utf-8"), line.data):
                return line
        raise _Refused("no valid cosignature from the configured key in the answer")

    # -- status -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """Return the witnessing status for ``GET /v1/health``."""
        witnessed = None if self.witnessed is None else self.witnessed.size
        fresh = witnessed is not None and witnessed == self.latest_size
        return {"quorum": self.policy.quorum, "log_size": self.latest_size,
                "witnessed_size": witnessed, "fresh": fresh,
                "witnesses": [s.to_json() for s in self._states]}


def _stored_size(body: bytes) -> int:
    text = body.decode("ascii", errors="replace")
    if not text.endswith("\n") or not text[:-1].isdigit() or len(text) > 21:
        raise _Refused(f"malformed 409 body {text[:30]!r}")
    return int(text[:-1])


def _detail(body: bytes) -> str:
    try:
        return str(json.loads(body).get("detail", ""))[:200]
    except (ValueError, AttributeError):
        return body[:120].decode("utf-8", errors="replace")


#: The collector of a server started with witnesses (absent otherwise).
WITNESSES_KEY = web.AppKey("exchange_witnesses", WitnessCollector)
