"""Evidence routes: tus 1.0 uploads, commit, listing and streamed downloads (thin handlers).

Uploads follow tus 1.0 core with the creation, termination and expiration
extensions (``exchange.wire.tus``); every PATCH is signed with its own
Content-Digest, checked while the body streams (``exchange.service.evidence``).
Downloads stream the ciphertext with ``Range`` support and ``ETag`` = the blob
id (its SHA-256). Bodies are never buffered whole: PATCH bodies go from the
socket to the blob store piece by piece (it writes them in batches), downloads leave in the
blob store's chunks with the socket's back-pressure.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import structlog
from aiohttp import web

from exchange.errors import ExchangeError
from exchange.service import evidence, uploads
from exchange.service.core import Actor
from exchange.storage.blobs import LocalSpan
from exchange.storage.errors import BlobCorrupt
from exchange.transport.auth import (
    ACTOR_KEY,
    AUTHENTICATED_KEY,
    authenticate,
    perform,
    read_body,
    signed_request,
)
from exchange.transport.openapi import B64, ID, header, json_content, obj, operation
from exchange.transport.problems import AUDIT_INDEX_HEADER, error_response, is_outage
from exchange.transport.routing import SERVICE_KEY, Route, respond_json
from exchange.transport.stall import Stalled, StallGuard
from exchange.wire.tus import (
    MAX_CHUNK_HEADER,
    PATCH_CONTENT_TYPE,
    TUS_VERSION,
    discovery_headers,
    format_expires,
)

__all__ = ["routes"]

#: Commit bodies carry a sealed manifest (at most 1 MiB, so about 1.4 MiB of base64).
COMMIT_BODY_BYTES = 2 * 1024 * 1024
#: The send buffer a download asks the kernel for (Linux caps the request at
#: ``net.core.wmem_max`` and doubles it). See :func:`_send_local`.
DOWNLOAD_SEND_BUFFER_BYTES = 4 * 1024 * 1024
_TAGS = ("evidence",)
_log = structlog.get_logger(__name__)


def _tus_headers(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, "Cache-Control": "no-store", **extra}


def _expires(epoch_s: int) -> str:
    return format_expires(datetime.fromtimestamp(epoch_s, UTC))


async def upload_options(request: web.Request) -> web.StreamResponse:
    """OPTIONS /v1/uploads: tus discovery, unsigned (it says nothing about anyone)."""
    limits = request.app[SERVICE_KEY].config.limits
    return web.Response(status=204, headers={
        "Cache-Control": "no-store",
        **discovery_headers(max_size=limits.max_upload_bytes, max_chunk=limits.max_chunk_bytes),
    })


async def create_upload(request: web.Request) -> web.StreamResponse:
    """POST /v1/cases/{cid}/uploads: a new upload of Upload-Length bytes (members)."""
    cid = request.match_info["cid"]
    actor = await authenticate(request, "upload.create", case=cid)
    done = await uploads.create_upload(
        request.app[SERVICE_KEY], signed_request(request), actor, cid,
        tus_resumable=request.headers.get("Tus-Resumable"),
        upload_length=request.headers.get("Upload-Length"),
        upload_metadata=request.headers.get("Upload-Metadata"),
    )
    view = done.value
    return respond_json(view.to_json(), status=201, audit_index=done.audit_index,
                        headers=_tus_headers(**{
                            "Location": f"/v1/uploads/{view.upload_id}",
                            "Upload-Offset": "0",
                            "Upload-Expires": _expires(view.expires_at),
                        }))


async def upload_status(request: web.Request) -> web.StreamResponse:
    """HEAD /v1/uploads/{uid}: the offset to resume from."""
    uid = request.match_info["uid"]
    service = request.app[SERVICE_KEY]
    op = uploads.status_op(service, uid, tus_resumable=request.headers.get("Tus-Resumable"))
    done = await perform(request, "upload.status", op, object=uid)
    view = done.value
    return web.Response(status=200, headers=_tus_headers(**{
        "Upload-Offset": str(view.offset),
        "Upload-Length": str(view.length),
        "Upload-Expires": _expires(view.expires_at),
        AUDIT_INDEX_HEADER: str(done.audit_index),
    }))


async def _socket_body(request: web.Request) -> AsyncIterator[bytes]:
    """Yield the request body; a dropped connection becomes ``UploadInterrupted``.

    Piece by piece as aiohttp received them (``readchunk``): ``read(n)`` would
    join buffered pieces into a new bytes object, a copy of every byte.
    """
    expected = request.content_length
    timeout_s = request.app[SERVICE_KEY].config.limits.body_timeout_s
    seen = 0
    try:
        with StallGuard(timeout_s) as guard:
            while True:
                try:
                    with guard.waiting():
                        piece, chunk_end = await request.content.readchunk()
                except Stalled:
                    raise evidence.UploadInterrupted(
                        f"no body byte arrived for {timeout_s} s after {seen} bytes"
                    ) from None
                if not piece:
                    if chunk_end:  # the end of one chunk of a chunked body, not of the body
                        continue
                    break
                seen += len(piece)
                yield piece
    except ExchangeError:
        raise
    except Exception as exc:  # aiohttp reports a lost client in several ways
        raise evidence.UploadInterrupted(
            f"the body ended after {seen} bytes: {type(exc).__name__}"
        ) from None
    if expected is not None and seen != expected:
        raise evidence.UploadInterrupted(f"the body ended after {seen} of {expected} bytes")


def _refusal(request: web.Request, err: ExchangeError) -> web.Response:
    """Render a refusal; close the connection if the client may still be sending."""
    response = error_response(err)
    if not request.content.at_eof():
        response.force_close()
    return response


async def append(request: web.Request) -> web.StreamResponse:
    """PATCH /v1/uploads/{uid}: append one signed chunk at Upload-Offset."""
    uid = request.match_info["uid"]
    service = request.app[SERVICE_KEY]
    try:
        actor = await authenticate(request, "upload.append", object=uid)
        done = await evidence.append(
            service, signed_request(request), actor, uid,
            content_type=request.headers.get("Content-Type"),
            content_length=request.content_length, body=_socket_body(request),
        )
    except ExchangeError as err:
        if is_outage(err):
            raise
        return _refusal(request, err)
    return web.Response(status=204, headers=_tus_headers(**{
        "Upload-Offset": str(done.value.offset),
        "Upload-Expires": _expires(done.value.expires_at),
        AUDIT_INDEX_HEADER: str(done.audit_index),
    }))


async def terminate(request: web.Request) -> web.StreamResponse:
    """DELETE /v1/uploads/{uid}: drop an unfinished upload and its bytes."""
    uid = request.match_info["uid"]
    service = request.app[SERVICE_KEY]
    op = uploads.terminate_op(service, uid, tus_resumable=request.headers.get("Tus-Resumable"))
    done = await perform(request, "upload.terminate", op, object=uid)
    return web.Response(status=204, headers=_tus_headers(**{
        AUDIT_INDEX_HEADER: str(done.audit_index)}))


async def commit(request: web.Request) -> web.StreamResponse:
    """POST /v1/uploads/{uid}/commit: check the hash, record the evidence."""
    uid = request.match_info["uid"]
    service = request.app[SERVICE_KEY]
    limit = max(service.config.limits.max_json_bytes, COMMIT_BODY_BYTES)
    body = await read_body(request, max_bytes=limit, action="evidence.commit")
    signed = signed_request(request, body=body)
    request[AUTHENTICATED_KEY] = True
    actor: Actor = await service.authenticate(signed, "evidence.commit", object=uid)
    request[ACTOR_KEY] = actor.id
    done = await evidence.commit(service, signed, actor, uid, body=body,
                                 content_type=request.headers.get("Content-Type"))
    return respond_json(done.value, status=201, audit_index=done.audit_index)


async def list_evidence(request: web.Request) -> web.StreamResponse:
    """GET /v1/cases/{cid}/evidence: the case's evidence records (members)."""
    cid = request.match_info["cid"]
    done = await perform(request, "evidence.list", evidence.list_evidence_op(cid), case=cid)
    return respond_json({"evidence": done.value}, audit_index=done.audit_index)


async def show_evidence(request: web.Request) -> web.StreamResponse:
    """GET /v1/evidence/{eid}: one evidence record (members of its case)."""
    eid = request.match_info["eid"]
    done = await perform(request, "evidence.show", evidence.show_evidence_op(eid), object=eid)
    return respond_json(done.value, audit_index=done.audit_index)


async def download(request: web.Request) -> web.StreamResponse:
    """GET /v1/evidence/{eid}/content: the ciphertext, whole or a Range, streamed as stored.

    Not hashed again on the way out: the client verifies it against the signed
    manifest before releasing plaintext; ``exchange server check`` scrubs the store.
    """
    eid = request.match_info["eid"]
    service = request.app[SERVICE_KEY]
    actor = await authenticate(request, "evidence.download", object=eid)
    signed = signed_request(request)
    dl = await evidence.open_download(service, signed, actor, eid,
                                      range_header=request.headers.get("Range"))
    record = dl.record
    headers = {
        "Content-Type": "application/octet-stream",
        "ETag": f'"{record.blob_id}"',
        "Accept-Ranges": "bytes",
        "Cache-Control": "no-store",
        AUDIT_INDEX_HEADER: str(dl.audit_index),
    }
    if dl.partial:
        headers["Content-Range"] = f"bytes {dl.start}-{dl.end - 1}/{record.ciphertext_size}"
    else:
        digest = base64.b64encode(bytes.fromhex(record.blob_id)).decode("ascii")
        headers["Content-Digest"] = f"sha-256=:{digest}:"
    response = web.StreamResponse(status=206 if dl.partial else 200, headers=headers)
    response.content_length = dl.end - dl.start
    try:
        writer = await response.prepare(request)
        if dl.local is not None and writer is not None:
            # Counted by hand: the writer never sees bytes the kernel sent (metrics).
            writer.output_size += await _send_local(request, dl.local, record.blob_id)
        else:
            if dl.first:
                await response.write(dl.first)
            async for chunk in dl.rest:
                await response.write(chunk)
    except BlobCorrupt as err:
        # Headers are gone: log the failure and cut the connection so the
        # client sees a truncated body, never the last (unverified) bytes.
        refusal = await service.log_denied(signed, "evidence.download", err,
                                           case=record.case_id, object=eid, actor=actor)
        _log.error("blob_corrupt", evidence=eid, audit_index=refusal.audit_index)
        if request.transport is not None:
            request.transport.abort()
        return response
    finally:
        if dl.local is not None:
            dl.local.close()
    await response.write_eof()
    return response


async def _send_local(request: web.Request, span: LocalSpan, blob_id: str) -> int:
    """Hand ``span`` to the kernel (``sendfile``), return the bytes sent.

    No byte is copied through Python: that copy was most of a pull's server CPU.

    asyncio falls back to reads in a worker thread where sendfile cannot serve
    (a TLS transport). A file that ends early (truncated under us) raises
    ``BlobCorrupt``, so the connection is cut rather than the response padded.
    """
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("the client went away")
    _widen_send_buffer(transport.get_extra_info("socket"))
    count = span.end - span.start
    sent = await asyncio.get_running_loop().sendfile(transport, span.file, span.start, count)
    if sent != count:
        raise BlobCorrupt(f"blob {blob_id} ended after {sent} of {count} bytes",
                          blob_id=blob_id, found_sha256="")
    return sent


def _widen_send_buffer(sock: Any) -> None:
    """Ask for a :data:`DOWNLOAD_SEND_BUFFER_BYTES` send buffer on a download's socket.

    ``sock`` is the transport's ``"socket"`` extra (asyncio's socket wrapper), or None.

    The kernel wakes a sender when half its buffer is free, and each wake-up is
    a pass through the event loop (about a tenth of a second per GiB pulled when
    the client decrypts slower than the disk reads). With the default buffer
    (grown by the kernel to at most 4 MiB here) the pull cost the server 0.31-0.37
    CPU-seconds per GiB, with this one 0.24-0.31 (``bench/e2e.py``, issue 17). The
    memory is the kernel's, and only fills while the client reads slower than the
    server sends. A socket that refuses the option keeps its default.
    """
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, DOWNLOAD_SEND_BUFFER_BYTES)


# -- OpenAPI ------------------------------------------------------------------------

def _header(name: str, description: str, *, required: bool = False,
            schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


_TUS = _header("Tus-Resumable", "tus protocol version", required=True,
               schema={"type": "string", "enum": [TUS_VERSION]})
_UPLOAD = obj({"upload_id": ID, "case_id": ID, "length": {"type": "integer"},
               "offset": {"type": "integer"}, "expires_at": {"type": "integer"}},
              required=["upload_id", "case_id", "length", "offset", "expires_at"])
_EVIDENCE = obj({"evidence_id": ID, "case_id": ID,
                 "ciphertext_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                 "ciphertext_size": {"type": "integer"}, "sealed_manifest": B64,
                 "uploader": ID, "epoch": {"type": "integer"},
                 "committed_at": {"type": "integer"}, "audit_index": {"type": "integer"}},
                required=["evidence_id", "case_id", "ciphertext_sha256", "ciphertext_size",
                          "sealed_manifest", "uploader", "epoch", "committed_at",
                          "audit_index"])
_COMMIT = obj({"sealed_manifest": B64,
               "ciphertext_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
               "epoch": {"type": "integer", "minimum": 0},
               "case_head": {"type": "string", "pattern": "^[0-9a-f]{64}$",
                             "description": "SHA-256 (hex) of the newest statement of the "
                                            "case chain the uploader verified; the epoch must "
                                            "be the newest"}},
              required=["sealed_manifest", "ciphertext_sha256", "epoch", "case_head"])
_UPLOAD_PROBLEMS = (400, 401, 403, 404, 409, 410, 412, 413, 415)
_COUNT = {"type": "integer", "minimum": 0}
_H_TUS = {"Tus-Resumable": header("tus protocol version", {"const": TUS_VERSION})}
_H_OFFSET = {"Upload-Offset": header("bytes received and logged so far", _COUNT)}
_H_EXPIRES = {"Upload-Expires": header("RFC 9110 HTTP-date after which the upload is gone")}


def _no_content(description: str, **headers: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description}
    if headers:
        response["headers"] = {name: value for group in headers.values()
                               for name, value in group.items()}
    return {"204": response}


_DOWNLOAD_HEADERS = {"ETag": header("the ciphertext's SHA-256, quoted"),
                     "Accept-Ranges": header("bytes")}


def _patch_operation() -> dict[str, Any]:
    op = operation(
        "append a chunk at Upload-Offset (signed Content-Digest of this chunk)", tags=_TAGS,
        responses=_no_content("appended; Upload-Offset is the new offset", tus=_H_TUS,
                              offset=_H_OFFSET, expires=_H_EXPIRES),
        problems=(*_UPLOAD_PROBLEMS, 507), parameters=[
            _TUS, _header("Upload-Offset", "the offset this chunk starts at", required=True),
            _header("Content-Digest", "RFC 9530 sha-256 digest of this chunk (a PATCH "
                    "cut short keeps nothing: the digest covers the whole chunk); or, "
                    "instead, Exchange-Prefix-Digest"),
            _header("Exchange-Prefix-Digest", "sha-256 of the upload's bytes from offset 0 "
                    "through the end of this chunk, in Content-Digest's syntax (checked "
                    "against the server's running hash, so the body is hashed once); 409 "
                    "prefix-digest-unavailable from a server process that did not hash the "
                    "earlier bytes: send a Content-Digest instead"),
        ],
    )
    op["requestBody"] = {"required": True, "content": {
        PATCH_CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}}}
    return op


def routes() -> list[Route]:
    """Return the evidence routes."""
    return [
        Route(method="OPTIONS", path="/v1/uploads", handler=upload_options,
              action=None, signed=False, tus=True,
              openapi=operation("tus discovery (version, extensions, maximum sizes); unsigned",
                                tags=_TAGS, problems=(), signed=False, responses=_no_content(
                                    "Tus-Version, Tus-Extension, Tus-Max-Size and the largest "
                                    f"PATCH body in {MAX_CHUNK_HEADER} and Upload-Limit",
                                    tus=_H_TUS, discovery={
                                        "Tus-Version": header("versions spoken"),
                                        "Tus-Extension": header("creation,termination,"
                                                                "expiration"),
                                        "Tus-Max-Size": header("largest upload", _COUNT),
                                        MAX_CHUNK_HEADER: header("largest PATCH body", _COUNT),
                                        "Upload-Limit": header(
                                            "IETF resumable uploads: max-size, "
                                            "max-append-size"),
                                    }))),
        Route(method="POST", path="/v1/cases/{cid}/uploads", handler=create_upload,
              action="upload.create", tus=True,
              openapi=operation(
                  "create a resumable upload (tus creation)", tags=_TAGS,
                  problems=(*_UPLOAD_PROBLEMS, 429),
                  parameters=[_TUS,
                              _header("Upload-Length", "total bytes", required=True),
                              _header("Upload-Metadata", "tus metadata pairs")],
                  responses={"201": {"description": "created; Location names the upload",
                                     "content": json_content(_UPLOAD), "headers": {
                                         "Location": header("the upload's path"),
                                         **_H_TUS, **_H_OFFSET, **_H_EXPIRES}}})),
        Route(method="HEAD", path="/v1/uploads/{uid}", handler=upload_status,
              action="upload.status", tus=True,
              openapi=operation("the upload's offset (Upload-Offset, Upload-Length)",
                                tags=_TAGS, problems=(400, 401, 403, 404, 410, 412),
                                parameters=[_TUS],
                                responses={"200": {"description": "Upload-Offset header",
                                                   "headers": {
                                                       **_H_TUS, **_H_OFFSET, **_H_EXPIRES,
                                                       "Upload-Length": header(
                                                           "declared length", _COUNT)}}})),
        Route(method="PATCH", path="/v1/uploads/{uid}", handler=append,
              action="upload.append", body=True, tus=True, openapi=_patch_operation()),
        Route(method="DELETE", path="/v1/uploads/{uid}", handler=terminate,
              action="upload.terminate", tus=True,
              openapi=operation("terminate an upload (tus termination)", tags=_TAGS,
                                problems=(400, 401, 403, 404, 409, 412), parameters=[_TUS],
                                responses=_no_content("terminated", tus=_H_TUS))),
        Route(method="POST", path="/v1/uploads/{uid}/commit", handler=commit,
              action="evidence.commit", body=True,
              openapi=operation("commit a complete upload as evidence", tags=_TAGS,
                                request_schema=_COMMIT,
                                problems=(400, 401, 403, 404, 409, 410, 413, 415, 422),
                                responses={"201": {"description": "the evidence record",
                                                   "content": json_content(_EVIDENCE)}})),
        Route(method="GET", path="/v1/cases/{cid}/evidence", handler=list_evidence,
              action="evidence.list",
              openapi=operation("list a case's evidence (members)", tags=_TAGS,
                                responses={"200": {"description": "records", "content":
                                                   json_content(obj(
                                                       {"evidence": {"type": "array",
                                                                     "items": _EVIDENCE}},
                                                       required=["evidence"]))}})),
        Route(method="GET", path="/v1/evidence/{eid}", handler=show_evidence,
              action="evidence.show",
              openapi=operation("one evidence record (members of its case)", tags=_TAGS,
                                responses={"200": {"description": "the record",
                                                   "content": json_content(_EVIDENCE)}})),
        Route(method="GET", path="/v1/evidence/{eid}/content", handler=download,
              action="evidence.download",
              openapi=operation(
                  "download the ciphertext (Range supported; ETag = its SHA-256)",
                  tags=_TAGS, problems=(400, 401, 403, 404, 416, 500),
                  parameters=[_header("Range", "a single bytes= range")],
                  responses={
                      "200": {"description": "the whole ciphertext", "content": {
                          "application/octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}},
                              "headers": {**_DOWNLOAD_HEADERS, "Content-Digest": header(
                                  "RFC 9530 sha-256 of the whole ciphertext")}},
                      "206": {"description": "the requested range", "content": {
                          "application/octet-stream": {"schema": {"type": "string",
                                                                  "format": "binary"}}},
                              "headers": {**_DOWNLOAD_HEADERS, "Content-Range": header(
                                  "bytes first-last/size")}},
                  })),
    ]
