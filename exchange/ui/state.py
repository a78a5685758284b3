"""The UI process's state: settings, the unlocked identity (memory only), jobs and events.

The unlocked :class:`~exchange.client.Client` (and with it the private keys)
lives only in this object, never on disk or in a cookie. It is dropped by
:meth:`UiState.lock`, by the idle timer (``idle_lock_s`` without a request
from the page), and when the process ends. Long operations (uploads, pulls,
log verification) are :class:`Job` objects whose progress is published to the
page's event stream (``GET /events``, server-sent events), as are live feed
events from the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exchange.client.config import ClientConfig
from exchange.client.errors import ClientError
from exchange.client.session import Client
from exchange.client.trust import VerifiedParticipant
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.keystore import KeystoreError, open_keystore, read_public_bundle
from exchange.keyfiles import read_secret_file
from exchange.ui.i18n import DEFAULT_LANGUAGE

__all__ = ["Job", "UiSettings", "UiState", "Unlocked"]

#: Progress events per job per second at most (the page redraws each one).
_PROGRESS_HZ = 8.0
_QUEUE_SIZE = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class UiSettings:
    """What ``exchange ui`` was started with (no secrets)."""

    url: str
    anchor: TrustAnchor | None
    keystores: tuple[Path, ...]
    state_root: Path
    pull_dir: Path
    idle_lock_s: float = 15 * 60
    #: Shown on the unlock page of ``exchange demo --ui`` only (public demo material).
    demo_passphrase: str | None = None

    @property
    def log_key(self) -> str | None:
        """The log's verifier key, from the pinned trust anchor."""
        return self.anchor.log_key if self.anchor is not None else None

    def state_dir(self, participant_id: str) -> Path:
        """Return the client state directory of ``participant_id`` (as the CLI computes it)."""
        return ClientConfig(url=self.url, state_root=self.state_root).state_dir(participant_id)


@dataclass(slots=True)
class Unlocked:
    """An unlocked identity: the client and the participant as the log records it."""

    client: Client
    me: VerifiedParticipant | None
    keystore: Path


@dataclass(slots=True)
class Job:
    """A long operation shown with progress on the page."""

    id: str
    kind: str
    label: str
    done: int = 0
    total: int = 0
    state: str = "running"  # running, done, failed
    message: str = ""
    started: float = field(default_factory=time.monotonic)
    result: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Return the job as the page sees it (rate and time left are computed there)."""
        return {"type": "job", "id": self.id, "kind": self.kind, "label": self.label,
                "done": self.done, "total": self.total, "state": self.state,
                "message": self.message, "elapsed": round(time.monotonic() - self.started, 3),
                "result": self.result}


class UiState:
    """Everything one ``exchange ui`` process holds."""

    def __init__(self, settings: UiSettings) -> None:
        self.settings = settings
        self.language = DEFAULT_LANGUAGE
        self.unlocked: Unlocked | None = None
        self.last_seen = time.monotonic()
        self.jobs: dict[str, Job] = {}
        self.flash: list[tuple[str, str]] = []
        self.background: set[asyncio.Task[Any]] = set()
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._ids = itertools.count(1)
        self._last_publish: dict[str, float] = {}
        #: Live feeds being followed, by case id.
        self.followed: dict[str, asyncio.Task[None]] = {}
        self.warnings: list[str] = []
        #: Bundles an administrator dropped, waiting for the fingerprint comparison.
        #: token -> (the step it was read for, the bundle file).
        self.pending_bundles: dict[str, tuple[str, bytes]] = {}
        #: Uploads and pulls run one at a time (bounded CPU, memory and disk load).
        self.upload_lock = asyncio.Lock()
        #: Staged files being received or uploaded (dropping one again meanwhile is refused).
        self.staging: set[Path] = set()
        self.pull_lock = asyncio.Lock()

    # -- the identity -------------------------------------------------------------------

    def keystore_choices(self) -> list[tuple[int, str, Path]]:
        """Return (index, participant id, path) of each configured keystore."""
        out = []
        for index, path in enumerate(self.settings.keystores):
            try:
                pid = read_public_bundle(path.read_bytes()).id
            except (OSError, ValueError, KeystoreError):
                pid = path.name
            out.append((index, pid, path))
        return out

    async def unlock(self, index: int, passphrase: str) -> Unlocked:
        """Open keystore number ``index`` with ``passphrase`` and connect; raise on failure.

        Argon2id takes about a second: it runs in a thread so the page stays live.
        """
        await self.lock()
        path = self.settings.keystores[index]
        data = await asyncio.to_thread(read_secret_file, path, warn=self.warnings.append)
        identity = await asyncio.to_thread(open_keystore, data, passphrase)
        client = Client(identity, self.settings.url, anchor=self.settings.anchor,
                        state_dir=self.settings.state_dir(identity.id),
                        warn=self.warnings.append)
        try:
            await client.checkpoint()  # the log must extend what this client saw before
            try:
                me: VerifiedParticipant | None = await client.participant(identity.id)
            except ClientError:
                me = None  # not enrolled yet: the page says so
        except BaseException:
            await client.close()
            raise
        self.unlocked = Unlocked(client=client, me=me, keystore=path)
        self.touch()
        return self.unlocked

    async def lock(self) -> None:
        """Forget the identity: stop feeds and jobs' clients, close the connection."""
        unlocked, self.unlocked = self.unlocked, None
        for task in list(self.followed.values()):
            task.cancel()
        self.followed.clear()
        self.pending_bundles.clear()
        if unlocked is not None:
            unlocked.client.case_keys.clear()
            await unlocked.client.close()
        self.publish({"type": "locked"} if unlocked is not None else {"type": "noop"})

    def touch(self) -> None:
        """Note activity from the page (the idle lock counts from here)."""
        self.last_seen = time.monotonic()

    async def idle_watch(self, period_s: float = 1.0) -> None:
        """Lock after ``idle_lock_s`` without a request from the page (runs until cancelled).

        The page's open event stream does not count as activity, a busy job does.
        """
        while True:
            await asyncio.sleep(period_s)
            busy = any(job.state == "running" for job in self.jobs.values())
            if busy:
                self.touch()
            elif self.unlocked is not None and \
                    time.monotonic() - self.last_seen > self.settings.idle_lock_s:
                await self.lock()

    # -- events and jobs ----------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[str]:
        """Return a queue that receives every published event (as JSON text)."""
        queue: asyncio.Queue[str] = asyncio.Queue(_QUEUE_SIZE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[str]) -> None:
        """Stop delivering events to ``queue``."""
        self._subscribers.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        """Send ``event`` to every open page (a full queue drops it: the page reloads)."""
        text = json.dumps(event, ensure_ascii=False)
        for queue in list(self._subscribers):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(text)

    def new_job(self, kind: str, label: str, total: int = 0) -> Job:
        """Register and announce a job."""
        job = Job(id=f"job-{next(self._ids)}", kind=kind, label=label, total=total)
        self.jobs[job.id] = job
        self.publish(job.to_json())
        return job

    def progress(self, job: Job, done: int, total: int, message: str | None = None) -> None:
        """Update a job's progress; published at most ``_PROGRESS_HZ`` times a second."""
        job.done, job.total = done, total
        if message is not None:
            job.message = message
        now = time.monotonic()
        if done >= total or now - self._last_publish.get(job.id, 0.0) >= 1 / _PROGRESS_HZ or \
                message is not None:
            self._last_publish[job.id] = now
            self.publish(job.to_json())

    def finish(self, job: Job, *, ok: bool, message: str = "",
               result: dict[str, Any] | None = None) -> None:
        """Mark a job done or failed and announce it."""
        job.state = "done" if ok else "failed"
        job.message = message
        job.result = result or {}
        if ok and job.total:
            job.done = job.total
        self.publish(job.to_json())

    def spawn(self, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``work`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(work())
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        return task
