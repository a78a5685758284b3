"""Resumable upload sessions of the S3 blob store, on S3 multipart uploads.

Theory of operation. A session is one JSON *state* object
(``uploads/<id>/state``) plus the bytes: full parts of one S3 multipart
upload, and a *tail* object (``uploads/<id>/tail-<token>``) holding the bytes
after the last full part, because S3 parts must be at least 5 MiB (except
the last) while a tus PATCH may carry a few bytes. The state lists the parts
and the tail, so any server process can resume the session: nothing lives in
one process's memory.

There is no lock across processes. Instead:

- the state is replaced only by a conditional ``PUT`` (``If-Match`` its
  ETag; created with ``If-None-Match: *``), and carries a sequence number so
  no two versions are byte-identical: a writer that read an old version loses
  with :class:`~exchange.storage._s3io.Conflict` and re-reads;
- every part has the same size, so part *k* always holds the same byte range
  and an append after a failed or trimmed one simply uploads it again (Ceph
  RGW refuses to complete an upload while any uploaded part is left out, and
  S3 cannot delete one part). Two appends racing from the same offset could
  both upload part *k*; only one commits, and should the loser's bytes land
  last, completion fails on the part's ETag and the SHA-256 check would catch
  it anyway: never silent, and the tus client sends one PATCH at a time;
- a tail is written once under a fresh name and never changed;
- each append that moves the offset records the layout it replaced
  (*checkpoint*) until its ``on_durable`` hook (the audit log entry) has
  succeeded, so :meth:`trim_upload` can go back to the logged offset exactly;
  while a hook runs the state names it (*logging*, with a lease), and a trim
  waits for it, as it would wait for the filesystem store's lock.

Small PATCHes therefore cost one read of the tail (at most one part) and one
write of a new tail each; large ones stream part by part with at most one
part in memory.

Completion ("promotion") completes the multipart upload into
``uploads/<id>/data``, hashes it (from memory if this process appended every
byte, otherwise by reading it back) and installs it at the blob's address
(see :class:`~exchange.storage.s3_blobs.S3BlobStore`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from exchange.storage._fsio import wait_out
from exchange.storage._s3io import MAX_PART_NUMBER, MIN_PART_BYTES, Conflict, Missing, S3Bucket
from exchange.storage.blobs import (
    BlobId,
    BlobInfo,
    Chunks,
    UploadId,
    UploadState,
    aiter_chunks,
    check_prefix,
    check_within_length,
    parse_blob_id,
    parse_upload_id,
)
from exchange.storage.errors import (
    AlreadyExists,
    BlobHashMismatch,
    InvalidUploadId,
    PrefixHashUnknown,
    UploadBusy,
    UploadBytesLost,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadOffsetMismatch,
    UploadStateCorrupt,
    ValueTooLarge,
    shown,
)

#: Default size of the parts of a multipart upload (S3's minimum is 5 MiB).
PART_BYTES = 8 * 1024 * 1024
#: Part sizes grow with the declared length so an upload fits S3's 10 000 parts.
MAX_DATA_PARTS = 9_000
#: How long a running ``on_durable`` hook holds back trims (a crashed process's hook).
LOGGING_LEASE_S = 10.0
#: Conflicting state writes retried before giving up (contention is between a few processes).
MAX_CAS_TRIES = 100

Tail = tuple[str, int]
Part = tuple[int, int, str]
Install = Callable[[str, BlobId, int], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class _Checkpoint:
    """A layout an unconfirmed append replaced: what a trim goes back to."""

    offset: int
    parts: int
    tail: Tail | None


@dataclass(frozen=True, slots=True)
class _State:
    """The JSON state object of a session (see the module notes)."""

    seq: int
    length: int
    expires_at: int
    part_size: int
    mpu: str | None
    parts: tuple[Part, ...] = ()
    tail: Tail | None = None
    checkpoints: tuple[_Checkpoint, ...] = ()
    logging: tuple[tuple[str, float], ...] = ()
    completed: bool = False
    deleted: bool = False

    @property
    def offset(self) -> int:
        return sum(size for _, size, _ in self.parts) + (self.tail[1] if self.tail else 0)

    def layout(self) -> tuple[tuple[Part, ...], Tail | None]:
        return self.parts, self.tail

    def tails(self) -> set[str]:
        """Every tail object this state may still need."""
        names = {cp.tail[0] for cp in self.checkpoints if cp.tail}
        if self.tail:
            names.add(self.tail[0])
        return names

    def encode(self) -> bytes:
        body: dict[str, Any] = {
            "seq": self.seq, "length": self.length, "expires_at": self.expires_at,
            "part_size": self.part_size, "mpu": self.mpu, "parts": [list(p) for p in self.parts],
            "tail": list(self.tail) if self.tail else None,
            "checkpoints": [[cp.offset, cp.parts, list(cp.tail) if cp.tail else None]
                            for cp in self.checkpoints],
            "logging": [list(item) for item in self.logging],
            "completed": self.completed, "deleted": self.deleted,
        }
        return json.dumps(body, sort_keys=True).encode()

    @classmethod
    def decode(cls, data: bytes, uid: UploadId) -> _State:
        try:
            raw = json.loads(data)
            tail = raw["tail"]
            state = cls(
                seq=int(raw["seq"]), length=int(raw["length"]),
                expires_at=int(raw["expires_at"]), part_size=int(raw["part_size"]),
                mpu=raw["mpu"], parts=tuple((int(n), int(s), str(e)) for n, s, e in raw["parts"]),
                tail=(str(tail[0]), int(tail[1])) if tail else None,
                checkpoints=tuple(_Checkpoint(int(o), int(p), (str(t[0]), int(t[1])) if t else None)
                                  for o, p, t in raw["checkpoints"]),
                logging=tuple((str(t), float(u)) for t, u in raw["logging"]),
                completed=bool(raw["completed"]), deleted=bool(raw["deleted"]),
            )
        except (ValueError, TypeError, KeyError, IndexError, RecursionError):
            raise UploadStateCorrupt(
                f"upload {uid} has a damaged state object: found {shown(data[:60])}",
                upload_id=uid,
            ) from None
        if not 0 <= state.offset <= state.length:
            raise UploadStateCorrupt(
                f"upload {uid} has a damaged state object: offset {state.offset} outside "
                f"its length {state.length}", upload_id=uid,
            )
        return state


@dataclass(slots=True)
class _Attempt:
    """The parts one append uploaded after those of the state it started from."""

    base: _State
    parts: list[Part] = field(default_factory=list)


class S3UploadSessions:
    """Upload sessions of an :class:`~exchange.storage.s3_blobs.S3BlobStore`."""

    def __init__(self, bucket: S3Bucket, *, install: Install, io_chunk_bytes: int,
                 part_bytes: int = PART_BYTES, clock: Callable[[], float] = time.time,
                 logging_lease_s: float = LOGGING_LEASE_S) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"parts must be at least {MIN_PART_BYTES} bytes (S3's minimum)")
        self._bucket = bucket
        self._install = install
        self._chunk = io_chunk_bytes
        self._part = part_bytes
        self._clock = clock
        self._lease = logging_lease_s
        #: upload id -> (offset, running hash) when this process appended every byte so far.
        #: Keyed by the state's sequence number too: another process's append or trim
        #: (which may re-send different bytes up to the same offset) invalidates it.
        self._running: dict[UploadId, tuple[int, int, hashlib._Hash]] = {}

    # -- state ---------------------------------------------------------------

    @staticmethod
    def _state_name(uid: UploadId) -> str:
        return f"uploads/{uid}/state"

    @staticmethod
    def data_name(uid: UploadId) -> str:
        """The object a completed session's bytes live in."""
        return f"uploads/{uid}/data"

    async def _read(self, uid: UploadId) -> tuple[_State, str]:
        try:
            data, etag = await self._bucket.get_bytes(self._state_name(uid), f"upload {uid}")
        except Missing:
            raise UploadNotFound(f"no upload {uid}") from None
        state = _State.decode(data, uid)
        if state.deleted:
            raise UploadNotFound(f"no upload {uid}")
        return state, etag

    async def _update(self, uid: UploadId,
                      change: Callable[[_State], _State]) -> _State:
        """Replace the state by ``change(state)`` with a compare-and-swap; retry on conflict."""
        for _ in range(MAX_CAS_TRIES):
            state, etag = await self._read(uid)
            new = replace(change(state), seq=state.seq + 1)
            try:
                await self._bucket.put_bytes(self._state_name(uid), new.encode(),
                                             f"upload {uid}", match=etag)
            except (Conflict, Missing):
                await asyncio.sleep(secrets.randbelow(20) / 1000)
                continue
            return new
        raise UploadBusy(f"upload {uid} is changed by too many writers at once; retry")

    def _live_logging(self, state: _State) -> bool:
        now = self._clock()
        return any(until > now for _, until in state.logging)

    # -- sessions ------------------------------------------------------------

    async def create_upload(self, *, length: int, expires_at: int,
                            upload_id: str | None = None) -> UploadState:
        """Create an empty session (see ``BlobStore.create_upload``)."""
        uid = parse_upload_id(upload_id if upload_id is not None else secrets.token_urlsafe(24))
        if not isinstance(length, int) or length < 0:
            raise ValueTooLarge(f"declared length must be a non-negative int, not {length!r}")
        part = max(self._part, -(-length // MAX_DATA_PARTS))
        part = -(-part // (1024 * 1024)) * 1024 * 1024
        mpu = None
        if length > part:
            created = await self._bucket.call(f"upload {uid}", self._bucket.client.
                                              create_multipart_upload(
                                                  Bucket=self._bucket.location.bucket,
                                                  Key=self._bucket.key(self.data_name(uid))))
            mpu = created["UploadId"]
        state = _State(seq=0, length=length, expires_at=expires_at, part_size=part, mpu=mpu)
        try:
            await self._bucket.put_bytes(self._state_name(uid), state.encode(),
                                         f"upload {uid}", create_only=True)
        except Conflict:
            if mpu is not None:
                await self._abort(uid, mpu)
            raise AlreadyExists(f"upload {uid} exists already") from None
        return UploadState(upload_id=uid, length=length, offset=0, expires_at=expires_at)

    async def upload_state(self, upload_id: str) -> UploadState:
        """Return the durable state (see ``BlobStore.upload_state``)."""
        uid = parse_upload_id(upload_id)
        state, _ = await self._read(uid)
        return UploadState(upload_id=uid, length=state.length, offset=state.offset,
                           expires_at=state.expires_at)

    async def append(
        self, upload_id: str, offset: int, chunks: Chunks, *,
        on_durable: Callable[[int], Awaitable[None]] | None = None,
        prefix_sha256: bytes | None = None,
    ) -> int:
        """Append at ``offset`` durably (see ``BlobStore.append`` and the module notes)."""
        uid = parse_upload_id(upload_id)
        base, _ = await self._read(uid)
        if base.expires_at <= self._clock():
            raise UploadExpired(f"upload {uid} expired at {base.expires_at}")
        if offset != base.offset:
            raise UploadOffsetMismatch(
                f"append at offset {offset}, but upload {uid} has {base.offset} durable bytes",
                expected=base.offset, found=offset,
            )
        running = self._running_from(uid, base)
        if prefix_sha256 is not None and running is None:
            raise PrefixHashUnknown(
                f"this server process has not hashed the first {base.offset} bytes of upload "
                f"{uid}; send the PATCH with a Content-Digest")
        attempt = _Attempt(base)
        buffer = bytearray()
        if base.tail is not None:
            buffer += await self._tail_bytes(uid, base.tail)
        hasher = Hasher(running)
        new_offset = base.offset
        new_tail: Tail | None = None
        committed = False
        token = secrets.token_hex(8)
        try:
            async for chunk in aiter_chunks(chunks):
                check_within_length(new_offset + len(chunk), base.length)
                buffer += chunk
                new_offset += len(chunk)
                await hasher.add(chunk)
                while len(buffer) >= base.part_size:
                    piece = bytes(buffer[:base.part_size])
                    del buffer[:base.part_size]
                    await self._upload_part(uid, attempt, piece)
            await hasher.finish()
            if prefix_sha256 is not None:
                check_prefix(running, prefix_sha256, uid, new_offset)
            if new_offset == base.offset:
                if on_durable is not None:
                    await on_durable(new_offset)
                return new_offset
            if buffer and new_offset == base.length and base.mpu is not None:
                await self._upload_part(uid, attempt, bytes(buffer))
            elif buffer:
                new_tail = (f"uploads/{uid}/tail-{new_offset}-{token}", len(buffer))
                await self._bucket.put_bytes(new_tail[0], bytes(buffer), f"upload {uid}")
            buffer.clear()

            def commit(state: _State) -> _State:
                if state.layout() != base.layout():
                    raise UploadOffsetMismatch(
                        f"upload {uid} moved to {state.offset} bytes during this append",
                        expected=state.offset, found=offset,
                    )
                if on_durable is None:  # nothing to log: no way back is needed
                    return replace(state, parts=state.parts + tuple(attempt.parts),
                                   tail=new_tail, checkpoints=())
                return replace(
                    state, parts=state.parts + tuple(attempt.parts), tail=new_tail,
                    checkpoints=(*state.checkpoints,
                                 _Checkpoint(state.offset, len(state.parts), state.tail)),
                    logging=(*state.logging, (token, self._clock() + self._lease)),
                )

            # Seen to its end even if we are cancelled: whether the state now names
            # the new tail decides whether the cleanup below may delete it.
            committing = asyncio.ensure_future(self._update(uid, commit))
            interrupted = await wait_out(committing)
            committed = not committing.cancelled() and committing.exception() is None
            if interrupted:
                raise asyncio.CancelledError
            after = committing.result()
            if on_durable is None:
                for name in base.tails() - ({new_tail[0]} if new_tail else set()):
                    await _quietly(self._bucket.delete(name, f"upload {uid}"))
                self._keep_running(uid, after, running)
                return new_offset
        finally:
            if not committed and new_tail is not None:
                await _quietly(self._bucket.delete(new_tail[0], f"upload {uid}"))
        self._keep_running(uid, None, None)
        confirmed = False
        settled: _State | None = None
        try:
            # Not cancelled with us: its outcome must be known before the state
            # says the hook is over, or a trim elsewhere could cut logged bytes.
            logging = asyncio.ensure_future(on_durable(new_offset))
            if await wait_out(logging):
                if not logging.cancelled():
                    logging.exception()
                raise asyncio.CancelledError
            logging.result()
            confirmed = True
        finally:
            with contextlib.suppress(Exception):  # the lease runs out by itself
                settled = await self._settle(uid, token, new_offset, confirmed=confirmed)
        self._keep_running(uid, settled, running)
        return new_offset

    async def _settle(self, uid: UploadId, token: str, offset: int, *,
                      confirmed: bool) -> _State:
        """End an append's hook: drop its lease; once logged, forget the older layouts."""
        dropped: set[str] = set()

        def settle(state: _State) -> _State:
            keep = tuple(cp for cp in state.checkpoints if not confirmed or cp.offset >= offset)
            new = replace(state, logging=tuple(i for i in state.logging if i[0] != token),
                          checkpoints=keep)
            dropped.clear()
            dropped.update(state.tails() - new.tails())
            return new

        settled = await self._update(uid, settle)
        for name in dropped:
            await self._bucket.delete(name, f"upload {uid}")
        return settled

    async def _tail_bytes(self, uid: UploadId, tail: Tail) -> bytes:
        try:
            data, _ = await self._bucket.get_bytes(tail[0], f"upload {uid}")
        except Missing:
            data = b""
        if len(data) != tail[1]:
            raise UploadBytesLost(
                f"upload {uid}: its tail object holds {len(data)} bytes, the state "
                f"records {tail[1]}", upload_id=uid, durable=0, logged=tail[1],
            )
        return data

    async def _upload_part(self, uid: UploadId, attempt: _Attempt, piece: bytes) -> None:
        if attempt.base.mpu is None:
            raise UploadStateCorrupt(f"upload {uid} has no multipart upload", upload_id=uid)
        number = len(attempt.base.parts) + len(attempt.parts) + 1
        if number > MAX_PART_NUMBER:
            raise ValueTooLarge(f"upload {uid} would need more than {MAX_PART_NUMBER} parts")
        answer = await self._bucket.call(f"upload {uid}", self._bucket.client.upload_part(
            Bucket=self._bucket.location.bucket, Key=self._bucket.key(self.data_name(uid)),
            UploadId=attempt.base.mpu, PartNumber=number, Body=piece))
        attempt.parts.append((number, len(piece), answer["ETag"]))

    async def trim_upload(
        self, upload_id: str, logged_offset: Callable[[], Awaitable[int]]
    ) -> UploadState:
        """Go back to the logged offset (see ``BlobStore.trim_upload`` and the module notes)."""
        uid = parse_upload_id(upload_id)
        delay = 0.02
        while True:
            state, etag = await self._read(uid)
            if self._live_logging(state):
                # A hook is logging an append right now: its outcome decides.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            target = await logged_offset()
            if target > state.offset:
                raise UploadBytesLost(
                    f"upload {uid} holds {state.offset} durable bytes but the log accounts "
                    f"for {target}: bytes were lost after they were logged; the upload must "
                    "be terminated and sent again",
                    upload_id=uid, durable=state.offset, logged=target,
                )
            if target == state.offset:
                return UploadState(upload_id=uid, length=state.length, offset=target,
                                   expires_at=state.expires_at)
            point = next((cp for cp in state.checkpoints if cp.offset == target), None)
            if point is None:
                raise UploadStateCorrupt(
                    f"upload {uid} cannot go back to the logged offset {target}: no recorded "
                    f"layout ends there (it holds {state.offset} bytes)", upload_id=uid,
                )
            new = replace(state, seq=state.seq + 1, parts=state.parts[:point.parts],
                          tail=point.tail,
                          checkpoints=tuple(cp for cp in state.checkpoints
                                            if cp.offset < target))
            try:
                await self._bucket.put_bytes(self._state_name(uid), new.encode(),
                                             f"upload {uid}", match=etag)
            except (Conflict, Missing):
                continue
            self._keep_running(uid, None, None)
            for name in state.tails() - new.tails():
                await _quietly(self._bucket.delete(name, f"upload {uid}"))
            return UploadState(upload_id=uid, length=new.length, offset=new.offset,
                               expires_at=new.expires_at)

    async def promote(self, upload_id: str, expected_sha256: str, *,
                      keep_session: bool = False) -> BlobInfo:
        """Turn a complete, verified session into a blob (see ``BlobStore.promote``)."""
        uid = parse_upload_id(upload_id)
        expected = parse_blob_id(expected_sha256)
        state, _ = await self._read(uid)
        if state.offset != state.length:
            raise UploadIncomplete(f"upload {uid} has {state.offset} of {state.length} bytes")
        kept = self._running.get(uid)
        found = (kept[2].hexdigest() if kept is not None and kept[:2] == (state.offset, state.seq)
                 else None)
        if state.mpu is None:
            data = b"" if state.tail is None else await self._tail_bytes(uid, state.tail)
            found = hashlib.sha256(data).hexdigest()
            if found != expected:
                raise BlobHashMismatch(f"upload {uid} hashes to {found}, want {expected}")
            await self.install_bytes(data, expected)
        else:
            if not state.completed:
                await self._complete(uid, state)
            if found is None:
                found = await self._hash_object(self.data_name(uid))
            if found != expected:
                raise BlobHashMismatch(f"upload {uid} hashes to {found}, want {expected}")
            await self._install(self.data_name(uid), expected, state.length)
        if not keep_session:
            await self.delete_upload(uid, force=True)
        return BlobInfo(blob_id=expected, size=state.length)

    async def install_bytes(self, data: bytes, blob_id: BlobId) -> None:
        """Store a small blob with one create-only ``PUT`` (an existing one is kept)."""
        with contextlib.suppress(Conflict):  # it exists: same address, same bytes
            await self._bucket.put_bytes(f"blobs/{blob_id}", data, f"blob {blob_id}",
                                         create_only=True)

    async def _complete(self, uid: UploadId, state: _State) -> None:
        """Complete the multipart upload into the data object; record it in the state."""
        try:
            await self._bucket.call(f"upload {uid}", self._bucket.client.complete_multipart_upload(
                Bucket=self._bucket.location.bucket, Key=self._bucket.key(self.data_name(uid)),
                UploadId=state.mpu or "",
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e}
                                           for n, _, e in state.parts]}))
        except Missing:
            # Another process completed it first: its data object must be there.
            if await self._bucket.size(self.data_name(uid), f"upload {uid}") != state.length:
                raise UploadStateCorrupt(
                    f"upload {uid}: its multipart upload is gone and no complete data "
                    "object replaced it", upload_id=uid) from None

        def done(current: _State) -> _State:
            return replace(current, completed=True)

        await self._update(uid, done)

    async def _hash_object(self, name: str) -> str:
        digest = hashlib.sha256()
        size = await self._bucket.size(name, name)
        async for data in self._bucket.stream(name, 0, size, self._chunk, name):
            await asyncio.to_thread(digest.update, data)
        return digest.hexdigest()

    async def _abort(self, uid: UploadId, mpu: str) -> None:
        with contextlib.suppress(Missing):
            await self._bucket.call(f"upload {uid}", self._bucket.client.abort_multipart_upload(
                Bucket=self._bucket.location.bucket, Key=self._bucket.key(self.data_name(uid)),
                UploadId=mpu))

    async def delete_upload(self, upload_id: str, *, force: bool = False) -> None:
        """Remove a session (see ``BlobStore.delete_upload``).

        A session whose ``on_durable`` hook is running is busy (:class:`UploadBusy`).
        The state is first marked deleted, so an append under way can never
        commit into it again; then its bytes go.
        """
        uid = parse_upload_id(upload_id)

        def mark(state: _State) -> _State:
            if not force and self._live_logging(state):
                raise UploadBusy(f"upload {uid} is logging an append under way")
            return replace(state, deleted=True)

        state = await self._update(uid, mark)
        self._keep_running(uid, None, None)
        await self._remove(uid, state)

    async def _remove(self, uid: UploadId, state: _State) -> None:
        if state.mpu is not None and not state.completed:
            await self._abort(uid, state.mpu)
        for name in sorted(state.tails()):
            await self._bucket.delete(name, f"upload {uid}")
        await self._bucket.delete(self.data_name(uid), f"upload {uid}")
        await self._bucket.delete(self._state_name(uid), f"upload {uid}")

    async def expire_uploads(self, now: int) -> list[UploadId]:
        """Delete expired sessions (see ``BlobStore.expire_uploads``)."""
        gone: list[UploadId] = []
        async for name, _ in self._bucket.names("uploads/", delimiter="/"):
            try:
                uid = parse_upload_id(name.removeprefix("uploads/").rstrip("/"))
            except InvalidUploadId:
                continue
            try:
                data, _ = await self._bucket.get_bytes(self._state_name(uid), f"upload {uid}")
                state = _State.decode(data, uid)
                if state.deleted:
                    await self._remove(uid, state)  # finish a delete that was cut short
                elif state.expires_at <= now:
                    await self.delete_upload(uid)
                    gone.append(uid)
            except (Missing, UploadNotFound, UploadBusy, UploadStateCorrupt):
                continue
        return sorted(gone)

    # -- running hashes ------------------------------------------------------

    def _running_from(self, uid: UploadId, state: _State) -> hashlib._Hash | None:
        """A copy of the running hash if this process hashed exactly the bytes of ``state``."""
        if state.offset == 0:
            return hashlib.sha256()
        kept = self._running.get(uid)
        if kept is None or kept[:2] != (state.offset, state.seq):
            return None
        return kept[2].copy()

    def _keep_running(self, uid: UploadId, state: _State | None,
                      running: hashlib._Hash | None) -> None:
        """Remember ``running`` as the hash of ``state``'s bytes (None: forget it)."""
        if running is None or state is None:
            self._running.pop(uid, None)
        else:
            self._running[uid] = (state.offset, state.seq, running)
            while len(self._running) > 1024:
                self._running.pop(next(iter(self._running)))


class Hasher:
    """Feeds a hash in batches of about 1 MiB in a worker thread, overlapping the caller's I/O.

    One batch at a time, in order; a thread hop per 64 KiB network read would
    cost more than the hashing. ``None`` hashes nothing.
    """

    BATCH = 1024 * 1024

    def __init__(self, digest: hashlib._Hash | None) -> None:
        self._digest = digest
        self._pending: list[bytes] = []
        self._size = 0
        self._job: asyncio.Future[None] | None = None

    async def add(self, data: bytes) -> None:
        """Queue ``data``; start hashing once a batch is full (after the previous one)."""
        if self._digest is None:
            return
        self._pending.append(data)
        self._size += len(data)
        if self._size >= self.BATCH:
            await self._launch()

    async def _launch(self) -> None:
        assert self._digest is not None
        if self._job is not None:
            await self._job
        batch = b"".join(self._pending)
        self._pending, self._size = [], 0
        self._job = asyncio.ensure_future(asyncio.to_thread(self._digest.update, batch))

    async def finish(self) -> None:
        """Hash what is left and wait for it."""
        if self._digest is None:
            return
        if self._pending:
            await self._launch()
        if self._job is not None:
            await self._job
            self._job = None


async def _quietly(work: Awaitable[None]) -> None:
    """Await best-effort cleanup; its failure must not hide the error under way."""
    with contextlib.suppress(Exception):  # leftovers are swept later; the caller's error wins
        await work


__all__ = ["LOGGING_LEASE_S", "PART_BYTES", "Hasher", "S3UploadSessions"]
