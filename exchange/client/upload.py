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
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import aiohttp

from exchange.client._upstream import Hashed, Hasher, Piece, Sender, plan_patches
from exchange.client.cases import case_key, current_epoch
from exchange.client.errors import ClientError, MalformedReply, UploadChanged
from exchange.client.problems import refusal
from exchange.client.retry import announce_retry, backoff_s
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
from exchange.transport.client_evidence import (
    ByteSource,
    MalformedAnswer,
    RequestRefused,
    append_chunk,
)
from exchange.wire.tus import TusError

__all__ = ["DEFAULT_CHUNK_BYTES", "Progress", "UploadResult", "upload_file"]

#: Largest PATCH: each costs a signature, an fsync, an audit entry and a round trip, and
#: none is held in memory (the ciphertext is regenerated, see ``_upstream``); an
#: interrupted PATCH is sent again whole, so this is also the most a failure re-sends.
DEFAULT_CHUNK_BYTES = 128 * 1024 * 1024
#: The first PATCH is small so the first byte leaves while later digests are computed.
_FIRST_PATCH_BYTES = 16 * 1024 * 1024
_ATTEMPTS = 8
RECORD_VERSION = 1

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
                      handling: str = "", handling_note: str = "") -> UploadResult:
    """Encrypt ``path`` to the case's current epoch and upload it as evidence; return it.

    ``folder`` is the relative folder recorded (sealed) in the manifest, so a
    pull recreates the tree (see :func:`exchange.crypto.manifest.safe_folder`;
    ``""`` = none). Resumes an interrupted upload of the same file (same path,
    size and mtime). Raises :class:`UploadChanged` if the file changes while
    being read, ``UnsafeFileName`` (before anything is sent) for a bad folder.
    ``handling``/``handling_note`` (a code of ``HANDLING_CODES`` and free text)
    are signed and sealed in the manifest; ``ManifestError`` before anything is
    sent when they are invalid.
    """
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
                             progress=progress, rate=_Rate(limit_bytes_per_s))
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
                  rate: _Rate) -> Hashed:
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
    sender: Sender | None = None
    try:
        failures = 0
        offset = start
        while patches and offset < length:
            try:
                end, digest = await asyncio.to_thread(hasher.digest_for, offset)
            except KeyError:
                raise ClientError(f"the server holds {offset} bytes of the upload, which is "
                                  "not where this run can continue",
                                  "rerun the same command to resume") from None
            if sender is None or sender.position != offset:
                if sender is not None:
                    await asyncio.to_thread(sender.stop)
                sender = Sender(fd, age, offset, loop)
                sender.start()
            try:
                # aiohttp writes memoryviews as they are: no copy of the body.
                body = cast(ByteSource, _body(sender, rate, progress, length))
                offset = await append_chunk(client.http, upload_path, offset, end, body,
                                            digest=digest)
                hasher.acknowledge(offset)
                failures = 0
                continue
            except (RequestRefused, aiohttp.ClientError, TimeoutError, ConnectionError) as err:
                status = err.status if isinstance(err, RequestRefused) else 0
                if isinstance(err, RequestRefused) and status != 409 and status < 500:
                    raise refusal(status, err.body, doing="uploading") from None
                failures += 1
                if failures >= _ATTEMPTS:
                    if isinstance(err, RequestRefused):
                        raise refusal(status, err.body, doing="uploading") from None
                    raise client.unreachable(err) from None
                if status != 409:  # a 409 is a resume point to ask for, not an outage
                    announce_retry(client, err, doing="uploading", delay_s=backoff_s(failures),
                                   attempt=failures, attempts=_ATTEMPTS)
            # Exponential back-off, then ask the server where to resume.
            await asyncio.sleep(backoff_s(failures))
            server: int | None = offset
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ConnectionError):
                server = await _offset(client, upload_path)
            if server is None:
                raise ClientError("the server dropped the upload",
                                  "rerun the same command to start it again")
            offset = server
        done = await asyncio.to_thread(hasher.finish)
    finally:
        if sender is not None:
            await asyncio.to_thread(sender.stop)
        await asyncio.to_thread(hasher.stop)
    if done.produced != length:
        raise UploadChanged("the file's size changed while it was being uploaded")
    return done


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
