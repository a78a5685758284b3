"""Evidence upload: plaintext → age (case epoch) → tus, hashed in the same pass; resumable.

Theory of operation. ``exchange.client._upstream`` does the streaming: one
thread reads, hashes and encrypts the file and publishes the Content-Digest of
each planned tus PATCH (up to ``chunk_bytes``, 128 MiB by default) while
another regenerates the same ciphertext for the PATCH bodies, which the event
loop sends without copying. Nothing as large as a PATCH is ever held: memory is
a few MiB, whatever the file size.

Resumption: before the first byte is sent, a record is written to the state
directory (upload URL, file identity (path, size, mtime), epoch, the age
header and the payload key sealed to our own recipient). Rerunning the same
upload regenerates the identical ciphertext, hashes all of it again (both
hashes are needed for the manifest) and sends only what the server lacks
(``HEAD`` offset). Network errors, 5xx (503 included) and offset conflicts
are retried with exponential back-off. After the commit the record is
removed; if the commit's answer was lost, the rerun finds the committed
evidence by its ciphertext hash instead of uploading twice.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import mimetypes
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, cast

import aiohttp

from exchange.client._upstream import Hashed, Hasher, Piece, Sender, plan_patches
from exchange.client.cases import case_key, current_epoch
from exchange.client.errors import ClientError, MalformedReply, UploadChanged
from exchange.client.problems import refusal
from exchange.client.retry import MAX_BACKOFF_S, announce_retry
from exchange.client.session import Client
from exchange.crypto.age import AgeError
from exchange.crypto.manifest import (
    Manifest,
    check_handling,
    format_timestamp,
    safe_folder,
    seal_manifest,
)
from exchange.crypto.resumable import ResumableAge
from exchange.transport.client import SignedSession
from exchange.transport.client_evidence import (
    PREFIX_DIGEST_UNAVAILABLE,
    ByteSource,
    MalformedAnswer,
    PrefixDigest,
    RequestRefused,
    append_chunk,
    content_digest_of,
    upload_offset,
)
from exchange.wire.tus import TusError

__all__ = ["DEFAULT_CHUNK_BYTES", "USER_RETRY", "PatchFor", "Progress", "RetryPolicy", "UploadGone",
           "UploadResult", "chunked", "send_resumable", "upload_file"]

#: Largest PATCH: each costs a signature, an fsync, an audit entry and a round trip, and
#: none is held in memory (the ciphertext is regenerated, see ``_upstream``); an
#: interrupted PATCH is sent again whole, so this is also the most a failure re-sends.
DEFAULT_CHUNK_BYTES = 128 * 1024 * 1024
#: The first PATCH is small so the first byte leaves while later digests are computed.
_FIRST_PATCH_BYTES = 16 * 1024 * 1024
RECORD_VERSION = 1
#: Refusals of a prefix-digest PATCH after which the upload goes on with Content-Digests:
#: the server process cannot check it, or the server is older than prefix digests (its
#: profile then misses the content-digest component).
_NO_PREFIX_DIGEST = frozenset({PREFIX_DIGEST_UNAVAILABLE, "component-missing"})
_RETRYABLE = (aiohttp.ClientError, TimeoutError, ConnectionError)


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How many failed PATCHes in a row are retried, and how long to wait between them.

    A parameter of the one upload path (not a second path): users get
    :data:`USER_RETRY`, tests that provoke failures pass a shorter one.
    """

    attempts: int = 8
    base_s: float = 0.25
    cap_s: float = MAX_BACKOFF_S

    def delay_s(self, failures: int) -> float:
        """Return the wait before retry number ``failures`` (exponential, capped)."""
        return float(min(self.cap_s, self.base_s * 2.0 ** failures))


#: What ``exchange upload`` does: 8 attempts, back-off 0.5 s doubling up to 30 s.
USER_RETRY = RetryPolicy()

class PatchFor(Protocol):
    """``patch_for(offset, prefix=...)`` returns the next PATCH from ``offset``: its end,
    its digest and its body. The digest is a :class:`PrefixDigest` when ``prefix`` allows
    one (the server then hashes the body once), else a Content-Digest value (None: hashed
    from the body first)."""

    def __call__(self, offset: int, *,
                 prefix: bool) -> Awaitable[tuple[int, str | PrefixDigest | None, ByteSource]]:
        ...


class UploadGone(RequestRefused):
    """The server no longer knows the upload (404/410 when asked for its offset)."""


def chunked(source: ByteSource, length: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> PatchFor:
    """Return the plan of PATCHes of at most ``chunk_bytes`` from ``source`` (already
    ciphertext); each digest is computed from the body (the source is read twice)."""

    async def patch_for(offset: int, *,
                        prefix: bool) -> tuple[int, str | PrefixDigest | None, ByteSource]:
        return min(length, offset + chunk_bytes), None, source

    return patch_for


async def send_resumable(
    session: SignedSession, upload_path: str, length: int, patch_for: PatchFor, *,
    start: int | None = None, retry: RetryPolicy = USER_RETRY,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
    acknowledge: Callable[[int], None] | None = None,
) -> int:
    """PATCH everything the server lacks, resuming after failures; return the final offset.

    The one resumable sending loop (``upload_file`` and the tests both use it).
    Starts at ``start`` (None: the server's offset, so it also resumes an
    upload begun earlier). After a dropped connection, a 409 or a 5xx it waits
    ``retry.delay_s`` (``on_retry(err, failures, delay)`` first, except for a
    409, which is a resume point, not an outage), asks the server's offset and
    goes on from there; gives up after ``retry.attempts`` failures in a row by
    raising the last error. Any other refusal is raised at once; a 404/410 to
    the offset question is :class:`UploadGone`. ``acknowledge(offset)`` is
    called after each accepted PATCH.
    """
    offset = await _server_offset(session, upload_path) if start is None else start
    failures = 0
    prefix = True  # until a server process says it cannot check prefix digests
    while offset < length:
        end, digest, body = await patch_for(offset, prefix=prefix)
        try:
            offset = await append_chunk(session, upload_path, offset, end, body, digest=digest)
            if acknowledge is not None:
                acknowledge(offset)
            failures = 0
            continue
        except (RequestRefused, *_RETRYABLE) as err:
            if isinstance(err, RequestRefused) and isinstance(digest, PrefixDigest) and \
                    err.problem_type in _NO_PREFIX_DIGEST:
                # This server process did not hash the earlier bytes (it restarted, or
                # another one took them), or the server predates prefix digests: the rest
                # goes with Content-Digests.
                prefix = False
                continue
            status = err.status if isinstance(err, RequestRefused) else 0
            if isinstance(err, RequestRefused) and status != 409 and status < 500:
                raise
            failures += 1
            if failures >= retry.attempts:
                raise
            if status != 409 and on_retry is not None:
                on_retry(err, failures, retry.delay_s(failures))
        await asyncio.sleep(retry.delay_s(failures))
        with contextlib.suppress(*_RETRYABLE):
            offset = await _server_offset(session, upload_path)
    return offset


async def _server_offset(session: SignedSession, upload_path: str) -> int:
    try:
        return await upload_offset(session, upload_path)
    except RequestRefused as err:
        if err.status in (404, 410):
            raise UploadGone(err.status, err.body) from None
        raise

#: ``progress(done_bytes, total_bytes)`` after each piece (ciphertext bytes accounted).
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadResult:
    """A committed upload: the evidence record, and whether it resumed an earlier run."""

    evidence_id: str
    case_id: str
    file_name: str
    folder: str
    handling: str
    handling_note: str
    plaintext_size: int
    ciphertext_size: int
    plaintext_sha256: str
    ciphertext_sha256: str
    epoch: int
    audit_index: int | None
    resumed_from: int


def _record_name(case_id: str, path: Path) -> str:
    return f"uploads/{_key(case_id, str(path))}.json"


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


async def _create(client: Client, case_id: str, length: int) -> str:
    """Create the upload; return its path (checked: one of the server's upload paths)."""
    doing = f"starting the upload to case {case_id!r}"
    try:
        return (await client.http.create_upload(case_id, length)).path
    except RequestRefused as err:
        raise refusal(err.status, err.body, doing=doing) from None
    except MalformedAnswer as err:
        raise client.malformed(err, doing) from None


async def _offset(client: Client, upload_path: str) -> int | None:
    """Return the server's offset, or None when the upload no longer exists."""
    try:
        return await client.http.upload_offset(upload_path)
    except RequestRefused as err:
        if err.status in (404, 410):
            return None
        raise refusal(err.status, None, doing="asking the server for the upload offset") \
            from None
    except TusError as err:
        raise client.malformed(MalformedAnswer(str(err)),
                               "asking the server for the upload offset") from None


async def _start(client: Client, case_id: str, path: Path, stat: os.stat_result,
                 record_name: str) -> tuple[dict[str, Any], ResumableAge, int]:
    """Return (record, encryption, server offset): a resumed upload, or a new one."""
    record = client.state.read_json(record_name)
    epoch, _ = await current_epoch(client, case_id)
    if isinstance(record, dict) and record.get("version") == RECORD_VERSION:
        same_file = (record.get("size"), record.get("mtime_ns")) == (stat.st_size,
                                                                    stat.st_mtime_ns)
        offset = await _offset(client, str(record["upload_path"])) if same_file else None
        if same_file and offset is None and record.get("ciphertext_sha256"):
            return record, _open_age(client, record), -1  # committed, answer lost
        if same_file and offset is not None and record.get("epoch") == epoch:
            return record, _open_age(client, record), offset
        if not same_file:
            client.warn(f"{path.name} changed since its interrupted upload: starting again")
        elif offset is not None:
            client.warn(f"the key of case {case_id!r} was rotated since the interrupted upload "
                        f"of {path.name}: starting again with the new key")
        if offset is not None:
            with contextlib.suppress(ClientError, aiohttp.ClientError):
                await client.http.request("DELETE", str(record["upload_path"]),
                                          headers={"Tus-Resumable": "1.0.0"})
    key = await case_key(client, case_id, epoch)
    age = ResumableAge.new([key.recipient()])
    me = client.identity.public_bundle().recipient()
    upload_path = await _create(client, case_id, age.size(stat.st_size))
    record = {
        "version": RECORD_VERSION, "case_id": case_id, "path": str(path),
        "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "epoch": epoch,
        "upload_path": upload_path, "length": age.size(stat.st_size),
        "header": _b64(age.header), "sealed_key": _b64(age.seal_key(me)),
        "started_at": int(time.time()),
    }
    client.state.write_json(record_name, record)
    return record, age, 0


def _open_age(client: Client, record: dict[str, Any]) -> ResumableAge:
    try:
        return ResumableAge.open(base64.b64decode(record["header"]),
                                 base64.b64decode(record["sealed_key"]),
                                 client.identity.age_identities())
    except (AgeError, KeyError, ValueError) as err:
        raise ClientError(f"the upload resume record does not open with your keys ({err})",
                          "delete it from the state directory and rerun") from None


class _Rate:
    """An optional bandwidth cap (bytes per second) for ``--limit-rate``."""

    def __init__(self, bytes_per_s: float | None) -> None:
        self.bytes_per_s = bytes_per_s
        self.start = time.monotonic()
        self.sent = 0

    async def wait(self, n: int) -> None:
        if not self.bytes_per_s:
            return
        self.sent += n
        ahead = self.sent / self.bytes_per_s - (time.monotonic() - self.start)
        if ahead > 0:
            await asyncio.sleep(ahead)


async def upload_file(client: Client, case_id: str, path: Path, *,
                      chunk_bytes: int = DEFAULT_CHUNK_BYTES, media_type: str | None = None,
                      progress: Progress | None = None,
                      limit_bytes_per_s: float | None = None, folder: str = "",
                      handling: str = "", handling_note: str = "",
                      retry: RetryPolicy | None = None) -> UploadResult:
    """Encrypt ``path`` to the case's current epoch and upload it as evidence; return it.

    ``folder`` is the relative folder recorded (sealed) in the manifest, so a
    pull recreates the tree (see :func:`exchange.crypto.manifest.safe_folder`;
    ``""`` = none). Resumes an interrupted upload of the same file (same path,
    size and mtime). Raises :class:`UploadChanged` if the file changes while
    being read, ``UnsafeFileName`` (before anything is sent) for a bad folder.
    ``handling``/``handling_note`` (a code of ``HANDLING_CODES`` and free text)
    are signed and sealed in the manifest; ``ManifestError`` before anything is
    sent when they are invalid. ``retry`` defaults to :data:`USER_RETRY` (tests pass
    a shorter one, never a second upload path).
    """
    retry = retry or USER_RETRY
    safe_folder(folder)
    check_handling(handling, handling_note)
    file_name = Path(path).name  # a followed symlink keeps the name it has in the tree
    path = Path(path).resolve()
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        stat = os.fstat(fd)
        record_name = _record_name(case_id, path)
        record, age, offset = await _start(client, case_id, path, stat, record_name)
        resumed_from = max(offset, 0)
        done = await _stream(client, fd, age=age, upload_path=str(record["upload_path"]),
                             offset=offset, length=int(record["length"]), chunk_bytes=chunk_bytes,
                             progress=progress, rate=_Rate(limit_bytes_per_s), retry=retry)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns) or \
                done.plaintext_size != stat.st_size:
            client.state.remove(record_name)
            raise UploadChanged(f"{path.name} changed while it was being uploaded",
                                "upload it again once it is no longer being written")
    finally:
        os.close(fd)
    record["ciphertext_sha256"] = done.ciphertext_sha256
    client.state.write_json(record_name, record)
    epoch = int(record["epoch"])
    key = await case_key(client, case_id, epoch)
    client.trust.forget()
    newest, case_head = await current_epoch(client, case_id)
    if newest != epoch and offset >= 0:
        client.state.remove(record_name)
        raise ClientError(f"the key of case {case_id!r} was rotated during the upload of "
                          f"{path.name} (epoch {epoch} -> {newest}); nothing was committed",
                          "run the upload again: it will encrypt to the new key")
    manifest = Manifest(
        file_name=file_name,
        media_type=media_type or mimetypes.guess_type(file_name)[0] or "application/octet-stream",
        plaintext_size=done.plaintext_size, plaintext_sha256=done.plaintext_sha256,
        ciphertext_size=done.produced, ciphertext_sha256=done.ciphertext_sha256,
        case_id=case_id, epoch=epoch, uploader=client.identity.id,
        uploaded_at=format_timestamp(datetime.now(UTC)), folder=folder,
        handling=handling, handling_note=handling_note,
    )
    if offset < 0:
        evidence = await _find_committed(client, case_id, done.ciphertext_sha256)
    else:
        sealed = seal_manifest(manifest, client.identity.signing_key, key.recipient())
        commit_path = str(record["upload_path"]) + "/commit"
        reply = await client.call("POST", commit_path, json={
            "sealed_manifest": _b64(sealed), "ciphertext_sha256": done.ciphertext_sha256,
            "epoch": epoch, "case_head": case_head}, doing=f"committing {path.name}")
        evidence = dict(reply.object("the commit"))
        evidence.setdefault("audit_index", reply.audit_index)
        if not isinstance(evidence.get("evidence_id"), str):
            raise MalformedReply("the server's answer to the commit names no evidence id",
                                 "run 'exchange files CASE' to see whether it was recorded")
        await client.own_entry(reply.audit_index, "POST", commit_path, details={
            "ciphertext_sha256": done.ciphertext_sha256, "epoch": epoch,
            "case_head": case_head})
    client.state.remove(record_name)
    return UploadResult(
        evidence_id=str(evidence["evidence_id"]), case_id=case_id, file_name=file_name,
        folder=folder, handling=handling, handling_note=handling_note,
        plaintext_size=done.plaintext_size, ciphertext_size=done.produced,
        plaintext_sha256=done.plaintext_sha256, ciphertext_sha256=done.ciphertext_sha256,
        epoch=epoch, audit_index=evidence.get("audit_index"), resumed_from=resumed_from)


async def _find_committed(client: Client, case_id: str, sha: str) -> dict[str, Any]:
    reply = await client.call("GET", f"/v1/cases/{case_id}/evidence", doing="listing evidence")
    for record in reply.records("evidence", "listing evidence"):
        if record.get("ciphertext_sha256") == sha and record.get("uploader") == client.identity.id:
            return dict(record)
    raise ClientError("the interrupted upload is gone from the server and was not committed",
                      "rerun the same command to upload the file again")


async def _stream(client: Client, fd: int, *, age: ResumableAge, upload_path: str, offset: int,
                  length: int, chunk_bytes: int, progress: Progress | None,
                  rate: _Rate, retry: RetryPolicy = USER_RETRY) -> Hashed:
    """Hash the whole file and send what the server lacks (from ``offset``; -1: nothing).

    See ``exchange.client._upstream``: a hashing thread publishes each PATCH's
    digest while a sending thread regenerates the ciphertext for the body.
    """
    start = max(offset, 0)
    patches = plan_patches(start, length, first_bytes=min(_FIRST_PATCH_BYTES, chunk_bytes),
                           max_bytes=chunk_bytes) if offset >= 0 else []
    hasher = Hasher(fd, age, patches, lead_bytes=2 * chunk_bytes if patches else None)
    hasher.start()
    loop = asyncio.get_running_loop()
    senders: list[Sender] = []  # the one regenerating ciphertext from the current offset

    async def patch_for(offset: int, *,
                        prefix: bool) -> tuple[int, str | PrefixDigest | None, ByteSource]:
        try:
            end, prefix_value = await asyncio.to_thread(hasher.digest_for, offset)
        except KeyError:
            raise ClientError(f"the server holds {offset} bytes of the upload, which is "
                              "not where this run can continue",
                              "rerun the same command to resume") from None
        digest: str | PrefixDigest = PrefixDigest(prefix_value) if prefix else \
            await _content_digest(fd, age, offset, end, loop)
        if not senders or senders[0].position != offset:
            if senders:
                await asyncio.to_thread(senders.pop().stop)
            senders.append(Sender(fd, age, offset, loop))
            senders[0].start()
        # aiohttp writes memoryviews as they are: no copy of the body.
        return end, digest, cast(ByteSource, _body(senders[0], rate, progress, length))

    def on_retry(err: BaseException, failures: int, delay_s: float) -> None:
        announce_retry(client, err, doing="uploading", delay_s=delay_s, attempt=failures,
                       attempts=retry.attempts)

    try:
        if patches:
            try:
                await send_resumable(client.http, upload_path, length, patch_for, start=start,
                                     retry=retry, on_retry=on_retry,
                                     acknowledge=hasher.acknowledge)
            except UploadGone:
                raise ClientError("the server dropped the upload",
                                  "rerun the same command to start it again") from None
            except RequestRefused as err:
                raise refusal(err.status, err.body, doing="uploading") from None
            except TusError as err:
                raise client.malformed(MalformedAnswer(str(err)),
                                       "asking the server for the upload offset") from None
            except _RETRYABLE as err:
                raise client.unreachable(err) from None
        done = await asyncio.to_thread(hasher.finish)
    finally:
        for sender in senders:
            await asyncio.to_thread(sender.stop)
        await asyncio.to_thread(hasher.stop)
    if done.produced != length:
        raise UploadChanged("the file's size changed while it was being uploaded")
    return done


async def _content_digest(fd: int, age: ResumableAge, start: int, end: int,
                          loop: asyncio.AbstractEventLoop) -> str:
    """Return the Content-Digest of ciphertext ``[start, end)``, regenerated to hash it.

    Only for a server process that cannot check prefix digests (see
    :func:`send_resumable`): that PATCH's bytes are then encrypted once more.
    """
    sender = Sender(fd, age, start, loop)
    sender.start()
    try:
        return await content_digest_of(cast(ByteSource, _body(sender, _Rate(None), None, end)),
                                       start, end)
    finally:
        await asyncio.to_thread(sender.stop)


def _body(sender: Sender, rate: _Rate, progress: Progress | None,
          total: int) -> Callable[[int, int], AsyncIterator[Piece]]:
    """Return the byte source of one PATCH: the sender's pieces, no copies."""

    async def source(lo: int, hi: int) -> AsyncIterator[Piece]:
        if sender.position != lo:
            raise RuntimeError(f"internal error: sender at {sender.position}, PATCH at {lo}")
        while sender.position < hi:
            piece = await sender.next_piece(hi - sender.position)
            if not piece:
                raise UploadChanged("the file got shorter while it was being uploaded")
            await rate.wait(len(piece))
            yield piece
            if progress is not None:
                progress(sender.position, total)

    return source
