"""Evidence: the PATCH pipeline, commit, listing and downloads (issue 5 §4, DESIGN.md §7-8).

Theory of operation. Bodies that may be huge are never handled inside a
metadata transaction: the request is authenticated first (``Service.
authenticate``, nonce spent), admitted by short read units, the bytes are moved
(appended, hashed, promoted, verified), and the entry is written with
``Service.perform_as`` once the outcome is known. Every refusal, wherever it
happens, is one ``denied`` entry naming the authenticated actor.

* PATCH (:func:`append`): see ``exchange.service.uploads``; the body streams
  through a Content-Digest check into ``BlobStore.append`` and is logged from
  its ``on_durable`` hook, so a failed log write undoes the append.
* Commit (:func:`commit`): the upload must be complete; ``promote`` hashes the
  stored bytes and refuses a ``ciphertext_sha256`` that differs (422, the
  session stays); the epoch must exist for the case; the evidence record, the
  session's removal, the case event (``Service.membership_hook`` with kind
  ``"evidence"``) and the entry commit together.
* Download (:func:`open_download`): members only. The blob streams as it is
  stored, whole or a ``Range``, without being hashed again (issue 17): the
  server is untrusted for integrity anyway, and the client checks the
  ciphertext's SHA-256 and size against the signed manifest and authenticates
  every age chunk before it releases any plaintext, so a damaged blob is
  refused by the client whatever the server sends. A blob of the wrong size
  or a missing one is still refused here (500 ``blob-corrupt``, with its
  entry); bit rot is found by the background scrub, ``exchange server
  check``, which hashes every blob against its address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
)
from exchange.service.errors import (
    AuditedRefusal,
    InvalidRequest,
    RequestTooLarge,
    ServiceError,
)
from exchange.service.jsonbody import check_members, get_b64, get_int, get_str, parse_object
from exchange.service.policy import MEMBER_ROLES, require_case_member
from exchange.service.retention import erased_error
from exchange.service.uploads import (
    UploadView,
    access_case,
    admit_live,
    append_op,
    held,
    read_session,
)
from exchange.storage.blobs import LocalBlobs, LocalSpan
from exchange.storage.errors import (
    BlobCorrupt,
    BlobNotFound,
    InsufficientStorage,
    NotFound,
    UploadBusy,
    UploadIncomplete,
    UploadNotFound,
)
from exchange.storage.metadata import (
    MAX_INT,
    MAX_MANIFEST_BYTES,
    EvidenceRecord,
    Transaction,
)
from exchange.wire.httpsig import (
    PREFIX_DIGEST_FIELD,
    ContentDigestVerifier,
    DigestMissing,
    parse_prefix_digest,
)
from exchange.wire.tus import (
    PATCH_CONTENT_TYPE,
    UnsupportedMediaType,
    UploadStatus,
    UploadTooLarge,
    parse_decimal,
    require_tus_version,
)

__all__ = [
    "COALESCE_BYTES",
    "ChunkTooLarge",
    "Download",
    "InsufficientStorage",
    "RangeNotSatisfiable",
    "UnknownEpoch",
    "UploadInterrupted",
    "append",
    "commit",
    "evidence_json",
    "list_evidence_op",
    "open_download",
    "parse_range",
    "show_evidence_op",
]

#: A Content-Digest PATCH hashes its pieces in batches of this size (one thread hop each).
COALESCE_BYTES = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")


class UploadInterrupted(ServiceError):
    """The client went away (or the body ended early) in the middle of a PATCH."""

    problem_type = "upload-interrupted"


class ChunkTooLarge(RequestTooLarge):
    """A PATCH body larger than ``limits.max_chunk_bytes`` (413, the limit in the body)."""

    def __init__(self, message: str, *, limit_bytes: int) -> None:
        super().__init__(message)
        #: Sent as ``max_bytes`` in the problem body, so a client can re-chunk.
        self.limit_bytes = limit_bytes


class UnknownEpoch(ServiceError):
    """The commit names a key epoch the case does not have."""

    http_status = 409
    problem_type = "unknown-epoch"


class RangeNotSatisfiable(ServiceError):
    """The Range header is malformed, multi-part or outside the blob."""

    http_status = 416
    problem_type = "range-not-satisfiable"


async def _refused(
    service: Service, request: SignedRequest, actor: Actor, action: str, err: ExchangeError,
    *, case: str | None, object: str | None,
) -> ExchangeError:
    """Return what to raise for ``err``: logged as a denied entry unless it already was."""
    if isinstance(err, AuditedRefusal) or (
        err.problem_type in ("storage", "store-closed")
    ):
        return err
    return await service.log_refusal(request, action, err, case=case, object=object,
                                     actor=actor)


# -- PATCH --------------------------------------------------------------------------


def _patch_digest(request: SignedRequest) -> tuple[ContentDigestVerifier | None, bytes | None]:
    """Return how a PATCH binds its body: a Content-Digest verifier or a prefix digest.

    The prefix digest (``Exchange-Prefix-Digest``, the SHA-256 of the upload's
    bytes through this PATCH) is checked by the store against the running hash
    it keeps for the blob address, so the body is hashed once, not twice
    (issue 17). Both at once would be two bindings of one body: refused.
    """
    digest_field = request.field("content-digest")
    prefix_field = request.field(PREFIX_DIGEST_FIELD)
    if digest_field is not None and prefix_field is not None:
        raise InvalidRequest(f"a PATCH carries content-digest or {PREFIX_DIGEST_FIELD}, "
                             "not both")
    if prefix_field is not None:
        return None, parse_prefix_digest(prefix_field)
    if digest_field is not None:
        return ContentDigestVerifier(digest_field, require_sha256=True), None
    return None, None


async def _checked(
    body: AsyncIterator[bytes], verifier: ContentDigestVerifier | None, limit: int,
    too_large: ExchangeError, *, digest_required: bool = True,
) -> AsyncIterator[bytes]:
    """Yield ``body``'s pieces, bounded by ``limit``; with a verifier, check its digest.

    A prefix-digest PATCH (no verifier) passes its pieces straight on: the
    store hashes them into its running hash as it writes them. A
    Content-Digest PATCH hashes each ``COALESCE_BYTES`` batch of pieces in a
    worker thread (hashlib releases the GIL, so a hundred uploads hashing
    never starve the event loop that answers small requests, issue 17 item
    4) and yields a batch only after it is hashed, the last one only after
    the digest matched. Raising here makes ``BlobStore.append`` truncate the
    chunk away: a chunk whose digest fails never moves the offset. Pieces are
    never joined (a copy of every byte, issue 17).
    """
    pending: list[bytes] = []
    pending_len = 0
    total = 0
    async for piece in body:
        total += len(piece)
        if total > limit:
            raise too_large
        if verifier is None:
            if digest_required:
                raise DigestMissing("a PATCH with a body needs a content-digest or "
                                    f"{PREFIX_DIGEST_FIELD}")
            yield piece
            continue
        pending.append(piece)
        pending_len += len(piece)
        if pending_len >= COALESCE_BYTES:
            await asyncio.to_thread(_update_all, verifier, pending)
            for item in pending:
                yield item
            pending, pending_len = [], 0
    if verifier is not None:
        await asyncio.to_thread(_update_all, verifier, pending)
        verifier.verify()
        for item in pending:
            yield item


def _update_all(verifier: ContentDigestVerifier, pieces: list[bytes]) -> None:
    """Feed ``pieces`` to ``verifier`` in order (one worker-thread hop for the batch)."""
    for piece in pieces:
        verifier.update(piece)


async def append(
    service: Service, request: SignedRequest, actor: Actor, upload_id: str, *,
    content_type: str | None, content_length: int | None, body: AsyncIterator[bytes],
) -> Performed[UploadView]:
    """Append one PATCH body to ``upload_id``; return the new offset and its entry."""
    action = "upload.append"
    limits = service.config.limits
    case: str | None = None
    try:
        with held(service, upload_id):
            require_tus_version(request.field("tus-resumable"))
            if (content_type or "").split(";")[0].strip().lower() != PATCH_CONTENT_TYPE:
                raise UnsupportedMediaType(
                    f"PATCH body must be {PATCH_CONTENT_TYPE}, found {content_type!r:.60}"
                )
            offset = parse_decimal("Upload-Offset", request.field("upload-offset"),
                                   maximum=MAX_INT)
            if content_length is not None and content_length > limits.max_chunk_bytes:
                raise ChunkTooLarge(
                    f"PATCH body of {content_length} bytes exceeds the limit of "
                    f"{limits.max_chunk_bytes} bytes; send smaller chunks (the limit is "
                    f"in OPTIONS /v1/uploads)", limit_bytes=limits.max_chunk_bytes,
                )
            session = await read_session(service, actor, upload_id)
            case = session.case_id
            state = await admit_live(service, session)
            room = state.check_append(offset=offset, content_length=content_length,
                                      now=datetime.fromtimestamp(service.clock(), UTC))
            verifier, prefix = _patch_digest(request)
            limit = min(room, limits.max_chunk_bytes)
            too_large: ExchangeError = (
                UploadTooLarge(f"body passes the declared length ({room} bytes left)")
                if limit == room else
                ChunkTooLarge(f"PATCH body exceeds the limit of {limits.max_chunk_bytes} bytes",
                              limit_bytes=limits.max_chunk_bytes)
            )
            done: list[Performed[UploadView]] = []

            async def on_durable(new_offset: int) -> None:
                done.append(await service.perform_as(
                    request, actor, action,
                    append_op(upload_id, old_offset=offset, new_offset=new_offset,
                              length=session.length),
                    case=session.case_id, object=upload_id,
                ))

            # A full store raises InsufficientStorage (507) after cutting the partial
            # chunk, an unreachable one BlobStoreUnavailable (503): the store maps them.
            await service.blobs.append(
                upload_id, offset,
                _checked(body, verifier, limit, too_large, digest_required=prefix is None),
                on_durable=on_durable, prefix_sha256=prefix)
            return done[0]
    except ExchangeError as err:
        raise await _refused(service, request, actor, action, err, case=case,
                             object=upload_id) from err


# -- commit -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _CommitRequest:
    sealed_manifest: bytes
    ciphertext_sha256: str
    epoch: int
    case_head: str


def _parse_commit(body: bytes, content_type: str | None) -> _CommitRequest:
    obj = parse_object(body, content_type=content_type)
    check_members(obj, required=("sealed_manifest", "ciphertext_sha256", "epoch", "case_head"))
    manifest = get_b64(obj, "sealed_manifest", max_bytes=MAX_MANIFEST_BYTES)
    sha = get_str(obj, "ciphertext_sha256", max_chars=64)
    if not _HEX64.fullmatch(sha):
        raise InvalidRequest(f"ciphertext_sha256 must be 64 lowercase hex digits, "
                             f"found {sha[:70]!r}")
    head = get_str(obj, "case_head", max_chars=64)
    if not _HEX64.fullmatch(head):
        raise InvalidRequest("case_head must be the hex SHA-256 of the case chain's newest "
                             "statement the client verified")
    return _CommitRequest(manifest, sha, get_int(obj, "epoch"), head)


def evidence_json(record: EvidenceRecord) -> dict[str, Any]:
    """Return the JSON form of an evidence record (the manifest stays sealed, base64)."""
    return {
        "evidence_id": record.evidence_id,
        "case_id": record.case_id,
        "ciphertext_sha256": record.blob_id,
        "ciphertext_size": record.ciphertext_size,
        "sealed_manifest": base64.b64encode(record.sealed_manifest).decode("ascii"),
        "uploader": record.uploader,
        "epoch": record.epoch,
        "committed_at": record.committed_at,
        "audit_index": record.audit_index,
    }


async def _require_epoch(tx: Transaction, case_id: str, epoch: int) -> None:
    """Raise unless ``epoch`` is the case's newest: nothing new is encrypted to an old epoch."""
    try:
        await tx.get_key_epoch(case_id, epoch)
    except NotFound:
        raise UnknownEpoch(f"case {case_id[:60]!r} has no key epoch {epoch}") from None
    latest = await tx.latest_key_epoch(case_id)
    if latest.epoch != epoch:
        raise UnknownEpoch(f"case {case_id[:60]!r} has a newer key epoch ({latest.epoch}) "
                           f"than {epoch}; sync the case and encrypt again")


def _record_op(service: Service, upload_id: str, case_id: str, parsed: _CommitRequest,
               size: int) -> Operation[dict[str, Any]]:
    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        await access_case(tx, actor, case_id)
        await _require_epoch(tx, case_id, parsed.epoch)
        await tx.delete_upload_session(upload_id)
        evidence_id = "ev-" + secrets.token_hex(12)
        committed_at = int(service.clock())
        out: dict[str, Any] = {}

        async def after(tx: Transaction, index: int) -> None:
            record = EvidenceRecord(
                evidence_id=evidence_id, case_id=case_id, blob_id=parsed.ciphertext_sha256,
                ciphertext_size=size, sealed_manifest=parsed.sealed_manifest,
                uploader=actor.id, epoch=parsed.epoch, committed_at=committed_at,
                audit_index=index,
            )
            await tx.add_evidence(record)
            out.update(evidence_json(record))
            if service.membership_hook is not None:
                payload = {k: v for k, v in out.items() if k != "sealed_manifest"}
                await service.membership_hook(tx, "evidence", case_id, payload, index)

        return OpResult(value=out, after=after, object=evidence_id, details={
            "evidence_id": evidence_id, "upload_id": upload_id,
            "ciphertext_sha256": parsed.ciphertext_sha256, "ciphertext_size": size,
            "epoch": parsed.epoch, "case_head": parsed.case_head,
        })

    return op


async def commit(
    service: Service, request: SignedRequest, actor: Actor, upload_id: str, *,
    body: bytes, content_type: str | None,
) -> Performed[dict[str, Any]]:
    """Turn a complete upload into evidence: hash check, record, case event, entry."""
    action = "evidence.commit"
    case: str | None = None
    try:
        with held(service, upload_id):
            parsed = _parse_commit(body, content_type)
            session = await read_session(service, actor, upload_id)
            case = session.case_id
            state = await admit_live(service, session)
            if state.status is not UploadStatus.COMPLETE:
                raise UploadIncomplete(
                    f"upload has {state.offset} of {state.length} bytes; send the rest first"
                )
            await service.store.run_unit(
                "evidence.epoch", lambda tx: _require_epoch(tx, session.case_id, parsed.epoch))
            # The session outlives the promotion until the evidence is recorded: a
            # crash in between leaves a complete upload that can be committed again.
            info = await service.blobs.promote(upload_id, parsed.ciphertext_sha256,
                                               keep_session=True)
            done = await service.perform_as(
                request, actor, action,
                _record_op(service, upload_id, session.case_id, parsed, info.size),
                case=session.case_id, object=upload_id,
            )
            with contextlib.suppress(UploadNotFound, UploadBusy):
                await service.blobs.delete_upload(upload_id)
            return done
    except ExchangeError as err:
        raise await _refused(service, request, actor, action, err, case=case,
                             object=upload_id) from err


# -- reads --------------------------------------------------------------------------


def list_evidence_op(case_id: str) -> Operation[list[dict[str, Any]]]:
    """Return the operation listing a case's evidence (members only)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[list[dict[str, Any]]]:
        await access_case(tx, actor, case_id)
        records = await tx.list_evidence(case_id)
        return OpResult(value=[evidence_json(r) for r in records],
                        details={"count": len(records)})

    return op


async def _load_evidence(tx: Transaction, actor: Actor, evidence_id: str) -> EvidenceRecord:
    access_case_role_only(actor)
    try:
        record = await tx.get_evidence(evidence_id)
    except (ValueError, TypeError):
        raise NotFound(f"unknown evidence {evidence_id[:64]!r}") from None
    except NotFound:
        # An erased item says so (to members of its case only), not "no such object".
        try:
            erasure = await tx.get_erasure(evidence_id)
        except NotFound:
            raise NotFound(f"unknown evidence {evidence_id[:64]!r}") from None
        await access_case(tx, actor, erasure.case_id)
        raise erased_error(evidence_id, erasure) from None
    await access_case(tx, actor, record.case_id)
    return record


def access_case_role_only(actor: Actor) -> None:
    """Refuse admins and auditors before revealing whether an evidence id exists."""
    if actor.role not in {r.value for r in MEMBER_ROLES}:
        require_case_member(actor.role, None, "-")


def show_evidence_op(evidence_id: str) -> Operation[dict[str, Any]]:
    """Return the operation showing one evidence record (members of its case only)."""

    async def op(tx: Transaction, actor: Actor) -> OpResult[dict[str, Any]]:
        record = await _load_evidence(tx, actor, evidence_id)
        return OpResult(value=evidence_json(record), case=record.case_id)

    return op


def parse_range(value: str | None, size: int) -> tuple[int, int] | None:
    """Return ``[start, end)`` for a single ``bytes=`` range, None for no Range header."""
    if value is None:
        return None
    match = _RANGE.fullmatch(value.strip())
    if match is None or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"only one byte range is supported, found {value!r:.60}")
    first, last = match.group(1), match.group(2)
    if first == "":
        count = int(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable(f"suffix range {value!r:.40} selects no byte")
        return max(0, size - count), size
    start = int(first)
    end = size if last == "" else min(int(last) + 1, size)
    if start >= size or (last != "" and int(last) < start):
        raise RangeNotSatisfiable(f"range {value!r:.60} is outside the {size} bytes")
    return start, end


@dataclass(frozen=True, slots=True, kw_only=True)
class Download:
    """An admitted, logged download: what to send and the entry that logged it."""

    record: EvidenceRecord
    start: int
    end: int
    partial: bool
    first: bytes
    rest: AsyncIterator[bytes]
    audit_index: int
    #: The bytes as an open local file (the filesystem store), for ``sendfile``; then
    #: ``first`` and ``rest`` are empty and the caller closes it.
    local: LocalSpan | None = None


def _corrupt(blob_id: str, what: str) -> BlobCorrupt:
    return BlobCorrupt(f"blob {blob_id} is {what}", blob_id=blob_id, found_sha256="")


async def open_download(
    service: Service, request: SignedRequest, actor: Actor, evidence_id: str, *,
    range_header: str | None,
) -> Download:
    """Admit, check and log a download; return the bytes to stream (see module notes)."""
    action = "evidence.download"
    case: str | None = None
    local: LocalSpan | None = None
    first, chunks = b"", _no_chunks()
    try:
        record = await service.store.run_unit(
            "evidence.read", lambda tx: _load_evidence(tx, actor, evidence_id))
        case = record.case_id
        span = parse_range(range_header, record.ciphertext_size)
        start, end = span if span is not None else (0, record.ciphertext_size)
        try:
            info = await service.blobs.stat(record.blob_id)
            if info.size != record.ciphertext_size:
                raise _corrupt(record.blob_id,
                               f"{info.size} bytes, want {record.ciphertext_size}")
            # Not hashed again: see the module notes (client verification + scrub).
            if isinstance(service.blobs, LocalBlobs):
                local = await service.blobs.open_local(record.blob_id, start, end)
            else:
                chunks = await service.blobs.open_range(record.blob_id, start, end)
                first = await anext(chunks, b"")
        except BlobNotFound:
            raise _corrupt(record.blob_id, "missing") from None

        async def log_op(tx: Transaction, actor: Actor) -> OpResult[None]:
            await access_case(tx, actor, record.case_id)

            async def delivered(tx: Transaction, index: int) -> None:
                # A pull that reaches the last byte delivers the item (retention's
                # "until every intended recipient has pulled"; the verifier counts the same).
                if end == record.ciphertext_size:
                    await tx.record_delivery(evidence_id, actor.id, index)

            return OpResult(value=None, after=delivered, details={
                "ciphertext_sha256": record.blob_id, "start": start, "end": end,
            })

        done = await service.perform_as(request, actor, action, log_op, case=record.case_id,
                                        object=evidence_id)
    except BaseException as err:
        if local is not None:
            local.close()
        if not isinstance(err, ExchangeError):
            raise
        raise await _refused(service, request, actor, action, err, case=case,
                             object=evidence_id) from err
    return Download(record=record, start=start, end=end, partial=span is not None,
                    first=first, rest=chunks, local=local, audit_index=done.audit_index)


async def _no_chunks() -> AsyncIterator[bytes]:
    """The chunk stream of a download served from a local file (``Download.local``)."""
    return
    yield
