"""Resumable evidence uploads: tus 1.0 core, creation, termination, expiration (issue 5 §4).

Theory of operation. An upload has two halves that must agree: the blob
store's session (its ``.state`` file is the truth about which bytes are
durable) and the ``upload_sessions`` row (owner, case, and the offset that the
audit log has accounted for). A PATCH is authenticated (nonce spent) and
admitted *before* its body is read, streamed into ``BlobStore.append`` while
its signed Content-Digest is checked, and logged from ``append``'s
``on_durable`` hook: the ``upload.append`` entry and the row's new offset
commit after the bytes are fsynced but before the session is unlocked, and
that hook runs to its end even if the request is cancelled meanwhile. The
entry is the truth: bytes that became durable without an entry (a crash, or a
failed or cancelled log transaction) are trimmed under the session lock at the
next PATCH or commit and never reported by HEAD, so no byte survives without
its entry and no logged byte is rolled back; logged bytes missing from the
blob store are ``UploadBytesLost``. A chunk whose digest fails never moves the
offset.

Locks: one PATCH, commit or termination per upload at a time in a process
(others get 409 ``upload-locked`` at once); across processes the blob store's
``flock`` serialises appends, and the loser sees an offset mismatch (409).
Quota: ``limits.max_concurrent_uploads`` unfinished sessions per participant
(429); expired sessions are swept whenever an upload is created.

No blob-store lock is ever taken inside a metadata transaction (units of work
are group-committed, so waiting there could stall every writer), and a new
upload's blob-side half is created before its unit, not in it
(:func:`create_upload`).
"""

from __future__ import annotations

import contextlib
import secrets
import weakref
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from exchange.errors import ExchangeError
from exchange.service.core import (
    Actor,
    Operation,
    OpResult,
    Performed,
    Service,
    SignedRequest,
    is_outage,
)
from exchange.service.errors import AuditedRefusal, Forbidden, ServiceError
from exchange.service.policy import MEMBER_ROLES, require_case_member
from exchange.storage.errors import NotFound, UploadBusy, UploadBytesLost, UploadNotFound
from exchange.storage.metadata import MAX_INT, Membership, Transaction, UploadSession
from exchange.wire.tus import (
    UploadGone,
    UploadState,
    UploadStatus,
    parse_decimal,
    parse_metadata,
    require_tus_version,
)

__all__ = [
    "NotUploadOwner",
    "TooManyUploads",
    "UploadGone",
    "UploadLocked",
    "UploadView",
    "access_case",
    "admit_live",
    "append_op",
    "chunks_with_limit",
    "create_upload",
    "create_upload_op",
    "held",
    "load_upload",
    "logged_offset",
    "new_upload_id",
    "read_session",
    "status_op",
    "terminate_op",
    "tus_state",
]


class UploadLocked(ServiceError):
    """Another PATCH, commit or termination of this upload is in progress."""

    http_status = 409
    problem_type = "upload-locked"


class TooManyUploads(ServiceError):
    """The participant has as many unfinished uploads as the limit allows."""

    http_status = 429
    problem_type = "too-many-uploads"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message)
        #: Seconds until a slot frees itself (the earliest session expires).
        self.retry_after_s = retry_after_s


class NotUploadOwner(Forbidden):
    """Only the participant who created an upload may touch it."""

    problem_type = "not-upload-owner"


@dataclass(eq=False)
class _Local:
    """Per-process state of a Service: uploads with an operation in flight."""

    busy: set[str] = field(default_factory=set)


_LOCAL: weakref.WeakKeyDictionary[Service, _Local] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def held(service: Service, upload_id: str) -> Iterator[None]:
    """Hold the in-process lock of ``upload_id``; ``UploadLocked`` if it is taken."""
    local = _LOCAL.setdefault(service, _Local())
    if upload_id in local.busy:
        raise UploadLocked(f"upload {upload_id[:64]!r} is busy with another request")
    local.busy.add(upload_id)
    try:
        yield
    finally:
        local.busy.discard(upload_id)


def new_upload_id() -> str:
    """Return a fresh upload id (192 bits, url-safe; also a valid blob-store session name)."""
    return secrets.token_urlsafe(24)


def _now(service: Service) -> int:
    return int(service.clock())


async def _membership(tx: Transaction, case_id: str, participant_id: str) -> Membership | None:
    try:
        return await tx.get_membership(case_id, participant_id)
    except (NotFound, ValueError, TypeError):  # no such case, or an id no case can have
        return None


async def access_case(tx: Transaction, actor: Actor, case_id: str) -> None:
    """Raise unless ``actor`` is an active member of ``case_id``.

    Role first (admins and auditors learn nothing), then active membership
    (403 ``not-a-member``): a case the actor may not see answers the same
    whether it exists or not.
    """
    if actor.role not in {r.value for r in MEMBER_ROLES}:
        require_case_member(actor.role, None, case_id)  # raises Forbidden
    require_case_member(actor.role, await _membership(tx, case_id, actor.id), case_id)


async def load_upload(tx: Transaction, actor: Actor, upload_id: str) -> UploadSession:
    """Return the session ``upload_id`` if ``actor`` owns it and may still work in its case."""
    if actor.role not in {r.value for r in MEMBER_ROLES}:
        require_case_member(actor.role, None, "-")  # raises Forbidden
    try:
        session = await tx.get_upload_session(upload_id)
    except (ValueError, TypeError):
        raise UploadNotFound(f"unknown upload {upload_id[:64]!r}") from None
    if session.participant_id != actor.id:
        raise NotUploadOwner(f"upload {upload_id[:64]!r} belongs to another participant")
    await access_case(tx, actor, session.case_id)
    return session


def tus_state(session: UploadSession, durable_offset: int) -> UploadState:
    """Return the tus state: the offset is what is both durable and logged.

    The log is the truth. Durable bytes past the logged offset are not
    reported (the next PATCH trims them); logged bytes missing from the blob
    store cannot be reported or repaired (``UploadBytesLost``).
    """
    if durable_offset < session.offset:
        raise UploadBytesLost(
            f"upload {session.upload_id[:64]!r} holds {durable_offset} durable bytes but the "
            f"log accounts for {session.offset}: logged bytes were lost; the upload must be "
            "terminated and sent again",
            upload_id=session.upload_id, durable=durable_offset, logged=session.offset,
        )
    offset = session.offset
    status = UploadStatus.COMPLETE if offset == session.length else UploadStatus.RECEIVING
    return UploadState(
        upload_id=session.upload_id, length=session.length, offset=offset,
        expires_at=datetime.fromtimestamp(session.expires_at, UTC), status=status,
    )


async def logged_offset(service: Service, upload_id: str) -> int:
    """Return the offset the audit log accounts for (read in its own short unit)."""
    async def unit(tx: Transaction) -> int:
        return (await tx.get_upload_session(upload_id)).offset

    return await service.store.run_unit("upload.offset", unit)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadView:
    """What the HTTP layer reports about an upload."""

    upload_id: str
    case_id: str
    length: int
    offset: int
    expires_at: int

    def to_json(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"upload_id": self.upload_id, "case_id": self.case_id, "length": self.length,
                "offset": self.offset, "expires_at": self.expires_at}


async def _sweep_expired(service: Service, tx: Transaction, now: int) -> int:
    """Delete expired sessions (rows and bytes); return how many."""
    swept = 0
    for session in await tx.expired_upload_sessions(now):
        try:
            await service.blobs.delete_upload(session.upload_id)
        except UploadBusy:
            continue  # an append is finishing; the next sweep takes it
        except UploadNotFound:
            pass
        await tx.delete_upload_session(session.upload_id)
        swept += 1
    return swept


def _check_quota(mine: list[UploadSession], limit: int, now: int) -> None:
    """Refuse a new upload when the participant has ``limit`` unfinished ones (429).

    An upload complete in tus terms (every byte received) no longer counts as
    unfinished; it waits only for the commit. Its disk space is still
    reserved, so complete-but-uncommitted uploads have their own cap of
    ``limit`` as well (2 x ``limit`` live sessions at most). ``Retry-After`` is
    the time until the earliest counted session expires and is swept.
    """
    unfinished = [s for s in mine if s.offset < s.length]
    complete = [s for s in mine if s.offset >= s.length]
    for group, what in ((unfinished, "unfinished"), (complete, "complete but uncommitted")):
        if len(group) >= limit:
            wait = max(1, min(s.expires_at for s in group) - now)
            raise TooManyUploads(
                f"participant has {len(group)} {what} uploads, the limit is {limit}; "
                f"{'finish' if group is unfinished else 'commit'} or terminate one first",
                retry_after_s=wait,
            )


async def create_upload(
    service: Service, request: SignedRequest, actor: Actor, case_id: str, *,
    tus_resumable: str | None, upload_length: str | None, upload_metadata: str | None,
) -> Performed[UploadView]:
    """Create an upload of ``case_id`` for ``actor``, authenticated (nonce spent) already.

    The blob store's half of the session (an empty file and its state, each
    fsynced, or an S3 multipart upload) is created *before* the unit of work
    that checks the case, the quota and the headers and logs ``upload.create``,
    not inside it: it waits for the disk or the network, and a unit that waits
    holds every unit queued behind it. Under the 100-client load that wait
    took 16 ms on average and up to 213 ms, and was the longest part of the
    small requests' p99 (issue 17). If the unit refuses, the half just created
    is deleted again; one left by a crash, a cancelled request or an outage
    expires at its own ``expires_at`` and is swept like any expired upload.
    Headers that do not parse create nothing: the unit refuses them (logged).
    """
    now = _now(service)
    expires_at = now + service.config.limits.upload_expiry_s
    upload_id = new_upload_id()
    length: int | ExchangeError
    try:
        length = _declared_length(service, tus_resumable, upload_length, upload_metadata)
    except ExchangeError as err:
        length = err  # nothing is created; the unit refuses it (logged)
    else:
        try:
            await service.blobs.create_upload(length=length, expires_at=expires_at,
                                              upload_id=upload_id)
        except ExchangeError as err:
            if is_outage(err):
                raise
            raise await service.log_refusal(request, "upload.create", err, case=case_id,
                                            actor=actor) from err
    op = create_upload_op(service, case_id, upload_id=upload_id, now=now,
                          expires_at=expires_at, length=length,
                          upload_metadata=upload_metadata)
    try:
        return await service.perform_as(request, actor, "upload.create", op, case=case_id)
    except AuditedRefusal:
        # Refused and undone (a denied entry says why): the blob-side half has no row.
        if isinstance(length, int):
            with contextlib.suppress(ExchangeError):
                await service.blobs.delete_upload(upload_id)
        raise


def _declared_length(service: Service, tus_resumable: str | None, upload_length: str | None,
                     upload_metadata: str | None) -> int:
    """Return the declared length; raise if the creation headers are not valid."""
    require_tus_version(tus_resumable)
    length = parse_decimal("Upload-Length", upload_length,
                           maximum=service.config.limits.max_upload_bytes)
    parse_metadata(upload_metadata)  # validate; kept verbatim
    return length


def create_upload_op(
    service: Service, case_id: str, *, upload_id: str, now: int, expires_at: int,
    length: int | ExchangeError, upload_metadata: str | None,
) -> Operation[UploadView]:
    """Return the operation recording upload ``upload_id`` of ``case_id`` (tus creation).

    The blob store's half exists already (:func:`create_upload`); this checks
    and records the rest in the unit of work. ``length`` is the declared
    length, or why the creation headers were refused (raised after the case
    check, so a non-member learns nothing from it).
    """
    limits = service.config.limits

    async def op(tx: Transaction, actor: Actor) -> OpResult[UploadView]:
        await access_case(tx, actor, case_id)
        if isinstance(length, ExchangeError):
            raise length
        swept = await _sweep_expired(service, tx, now)
        # Every live session (expired ones were just swept): few by construction.
        mine = [s for s in await tx.expired_upload_sessions(MAX_INT)
                if s.participant_id == actor.id]
        _check_quota(mine, limits.max_concurrent_uploads, now)
        await tx.create_upload_session(UploadSession(
            upload_id=upload_id, participant_id=actor.id, case_id=case_id, length=length,
            offset=0, expires_at=expires_at,
            metadata=(upload_metadata or "").encode("ascii", "replace"),
        ))
        view = UploadView(upload_id=upload_id, case_id=case_id, length=length, offset=0,
                          expires_at=expires_at)
        return OpResult(value=view, object=upload_id,
                        details={"length": length, "expires_at": expires_at, "swept": swept})

    return op


def status_op(service: Service, upload_id: str, *,
              tus_resumable: str | None) -> Operation[UploadView]:
    """Return the operation answering HEAD: the offset both durable and logged."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[UploadView]:
        session = await load_upload(tx, actor, upload_id)
        require_tus_version(tus_resumable)
        durable = await service.blobs.upload_state(upload_id)
        state = tus_state(session, durable.offset)
        state.check_live(datetime.fromtimestamp(service.clock(), UTC))
        view = UploadView(upload_id=upload_id, case_id=session.case_id, length=state.length,
                          offset=state.offset, expires_at=session.expires_at)
        return OpResult(value=view, case=session.case_id,
                        details={"offset": state.offset, "length": state.length})

    return op


def terminate_op(service: Service, upload_id: str, *,
                 tus_resumable: str | None) -> Operation[str]:
    """Return the operation removing an upload and its bytes (tus termination)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[str]:
        session = await load_upload(tx, actor, upload_id)
        require_tus_version(tus_resumable)
        with held(service, upload_id):
            await tx.delete_upload_session(upload_id)
            with contextlib.suppress(UploadNotFound):
                await service.blobs.delete_upload(upload_id)
        return OpResult(value=session.case_id, case=session.case_id,
                        details={"length": session.length, "offset": session.offset})

    return op


async def admit_live(service: Service, session: UploadSession) -> UploadState:
    """Return the upload's state after trimming unlogged bytes; refuse a dead upload.

    Runs outside any metadata transaction (the trim takes the session lock).
    """
    durable = await service.blobs.upload_state(session.upload_id)
    if durable.offset != session.offset:
        durable = await service.blobs.trim_upload(
            session.upload_id, lambda: logged_offset(service, session.upload_id))
        session = await _reload(service, session.upload_id)
    state = tus_state(session, durable.offset)
    state.check_live(datetime.fromtimestamp(service.clock(), UTC))
    return state


async def _reload(service: Service, upload_id: str) -> UploadSession:
    async def unit(tx: Transaction) -> UploadSession:
        return await tx.get_upload_session(upload_id)

    return await service.store.run_unit("upload.reload", unit)


async def read_session(service: Service, actor: Actor, upload_id: str) -> UploadSession:
    """Return the session after the ownership and membership checks (a short read unit)."""
    async def unit(tx: Transaction) -> UploadSession:
        return await load_upload(tx, actor, upload_id)

    return await service.store.run_unit("upload.read", unit)


def append_op(upload_id: str, *, old_offset: int, new_offset: int,
              length: int) -> Operation[UploadView]:
    """Return the operation logging an append and moving the row's offset with it."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[UploadView]:
        session = await load_upload(tx, actor, upload_id)
        await tx.advance_upload_session(upload_id, old_offset, new_offset)
        view = UploadView(upload_id=upload_id, case_id=session.case_id, length=length,
                          offset=new_offset, expires_at=session.expires_at)
        return OpResult(value=view, case=session.case_id, details={
            "offset": old_offset, "appended": new_offset - old_offset, "length": length,
        })

    return op


async def chunks_with_limit(source: AsyncIterator[bytes], limit: int,
                            error: ExchangeError) -> AsyncIterator[bytes]:
    """Yield ``source`` but raise ``error`` once more than ``limit`` bytes went by."""
    seen = 0
    async for chunk in source:
        seen += len(chunk)
        if seen > limit:
            raise error
        yield chunk

