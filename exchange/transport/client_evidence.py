"""Client side of evidence uploads and downloads over a :class:`SignedSession` (tus 1.0).

Uploads: create (``POST /v1/cases/{cid}/uploads``), then PATCH chunks of at
most ``chunk_bytes``, each signed with its own RFC 9530 Content-Digest; the
chunk's bytes come from a :data:`ByteSource` twice (once to hash, once to
send), so nothing is buffered whole and the source can be a file of any size.
An interrupted PATCH (connection lost, 409 offset mismatch, 5xx) is resumed
from the server's ``Upload-Offset`` (HEAD). Downloads send an optional
``Range`` and stream the response.

``SignedSession`` exposes these as methods; the functions here take the
session as their first argument.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import re
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from exchange.errors import TransportError
from exchange.wire.httpsig import PREFIX_DIGEST_FIELD, content_digest_from_sha256
from exchange.wire.tus import PATCH_CONTENT_TYPE, TUS_VERSION, parse_decimal

if TYPE_CHECKING:
    from exchange.transport.client import SignedSession

__all__ = [
    "MAX_ANSWER_BYTES",
    "MAX_PROBLEM_BYTES",
    "PREFIX_DIGEST_UNAVAILABLE",
    "ByteSource",
    "MalformedAnswer",
    "PrefixDigest",
    "RequestRefused",
    "UploadHandle",
    "append_chunk",
    "commit_upload",
    "content_digest_of",
    "create_upload",
    "created_upload",
    "file_source",
    "open_download",
    "problem_from_body",
    "problem_slug",
    "read_at_most",
    "read_json_answer",
    "read_problem",
    "upload_offset",
]

#: ``source(start, end)`` yields the bytes ``[start, end)`` of the thing being uploaded.
ByteSource = Callable[[int, int], AsyncIterator[bytes]]
_READ = 1024 * 1024
#: Our server's problems are a few hundred bytes; a longer error body is not read.
MAX_PROBLEM_BYTES = 64 * 1024
#: Largest success answer read into memory: an evidence listing carries every sealed
#: manifest of a case (each at most 1 MiB, ~1.4 MiB of base64); anything larger than
#: this is a hostile or broken server, refused rather than buffered.
MAX_ANSWER_BYTES = 64 * 1024 * 1024
_MAX_OFFSET = 2**63 - 1
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,59}")
_MAX_DETAIL_CHARS = 200
#: Upload locations our server hands out (``/v1/uploads/<upload id>``); anything else
#: (an absolute URL, a path elsewhere) would make us sign requests to places we never chose.
_LOCATION = re.compile(r"/v1/uploads/[A-Za-z0-9_-]{1,64}")


class MalformedAnswer(TransportError):
    """A server's success answer is not what the protocol promises (size, JSON, fields)."""

    http_status = 502
    problem_type = "malformed-answer"


def problem_slug(body: Any) -> str:
    """Return the problem type slug of a decoded problem body, or ``"http-error"``.

    Only a well-formed slug (lowercase letters, digits, dashes) is taken from
    the server: anything else could carry control characters into a message.
    """
    kind = body.get("type") if isinstance(body, dict) else None
    slug = kind.rsplit("/", 1)[-1] if isinstance(kind, str) else ""
    return slug if _SLUG.fullmatch(slug) else "http-error"


class RequestRefused(TransportError):
    """The server answered with an error; ``status`` and the problem ``body`` say why.

    The body comes from the server, so only a well-formed slug becomes
    ``problem_type`` and the message shows ``detail`` as a truncated repr.
    """

    def __init__(self, status: int, body: Any) -> None:
        slug = problem_slug(body)
        detail = body.get("detail") if isinstance(body, dict) else None
        message = f"server answered {status} {slug}"
        if isinstance(detail, str) and detail:
            message += f": {detail[:_MAX_DETAIL_CHARS]!r}"
        super().__init__(message)
        self.status = status
        self.body = body
        self.http_status = status
        self.problem_type = slug


def problem_from_body(data: bytes) -> dict[str, Any] | None:
    """Return the JSON object of an error body, or None if it is not one; never raises.

    Bodies over :data:`MAX_PROBLEM_BYTES` are not parsed.
    """
    if len(data) > MAX_PROBLEM_BYTES:
        return None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return body if isinstance(body, dict) else None


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadHandle:
    """A created upload: its path (``Location``), id, declared length and expiry."""

    path: str
    upload_id: str
    length: int
    expires: str


async def read_at_most(response: aiohttp.ClientResponse, max_bytes: int) -> bytes | None:
    """Return the response body, or None if it is longer than ``max_bytes`` (then unread).

    Reads at most one byte past the cap, so a hostile body costs bounded memory.
    """
    if response.content_length is not None and response.content_length > max_bytes:
        return None
    data = bytearray()
    while len(data) <= max_bytes:
        piece = await response.content.read(max_bytes + 1 - len(data))
        if not piece:
            break
        data += piece
    return bytes(data) if len(data) <= max_bytes else None


async def read_problem(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """Return an error answer's problem object (see :func:`problem_from_body`); never raises
    for what the body holds (network errors propagate)."""
    data = await read_at_most(response, MAX_PROBLEM_BYTES)
    return None if data is None else problem_from_body(data)


async def read_json_answer(response: aiohttp.ClientResponse, *, what: str,
                           max_bytes: int = MAX_ANSWER_BYTES) -> Any:
    """Return a success answer's decoded JSON; raise :class:`MalformedAnswer` otherwise.

    ``what`` names the request in the message ("the answer to <what> ...").
    """
    data = await read_at_most(response, max_bytes)
    if data is None:
        raise MalformedAnswer(f"the answer to {what} is larger than {max_bytes} bytes")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        raise MalformedAnswer(
            f"the answer to {what} is not valid json, found {data[:40]!r}"
        ) from None


async def _refused(response: aiohttp.ClientResponse) -> RequestRefused:
    """Return the error for a refusal, reading at most one byte past the problem size cap."""
    async with response:
        return RequestRefused(response.status, await read_problem(response))


def _offset(response: aiohttp.ClientResponse) -> int:
    """Return the server's Upload-Offset; a missing or malformed one is a ``TusError``."""
    return parse_decimal("Upload-Offset", response.headers.get("Upload-Offset"),
                         maximum=_MAX_OFFSET)


def file_source(path: Path) -> ByteSource:
    """Return a source reading ``path`` (a pre-encrypted file) in 1 MiB pieces."""

    async def source(start: int, end: int) -> AsyncIterator[bytes]:
        fd = await asyncio.to_thread(os.open, path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            position = start
            while position < end:
                data = await asyncio.to_thread(os.pread, fd, min(_READ, end - position),
                                               position)
                if not data:
                    raise OSError(f"{path.name} ended at {position}, want {end} bytes")
                position += len(data)
                yield data
        finally:
            os.close(fd)

    return source


def _tus(**extra: str) -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION, **extra}


async def create_upload(
    session: SignedSession, case_id: str, length: int, *,
    metadata: Mapping[str, bytes] | None = None,
) -> UploadHandle:
    """Create an upload of ``length`` bytes in ``case_id``."""
    headers = _tus(**{"Upload-Length": str(length)})
    if metadata:
        headers["Upload-Metadata"] = ",".join(
            f"{key} {base64.b64encode(value).decode('ascii')}" if value else key
            for key, value in metadata.items()
        )
    response = await session.request("POST", f"/v1/cases/{case_id}/uploads", headers=headers)
    if response.status != 201:
        raise await _refused(response)
    async with response:
        body = await read_json_answer(response, what="the upload creation")
        return created_upload(response.headers, body, length)


def created_upload(headers: Mapping[str, str], body: Any, length: int) -> UploadHandle:
    """Return the handle described by a 201 answer to an upload creation.

    Raises :class:`MalformedAnswer` unless ``Location`` is one of our upload
    paths, the body names the same upload and ``length``, and
    ``Upload-Expires`` is present.
    """
    location = headers.get("Location", "")
    if not _LOCATION.fullmatch(location):
        raise MalformedAnswer(f"the upload creation answered with location {location[:80]!r}, "
                              "expected /v1/uploads/<upload id>")
    upload_id = body.get("upload_id") if isinstance(body, dict) else None
    if upload_id != location.rsplit("/", 1)[-1]:
        raise MalformedAnswer(f"the upload creation names upload {str(upload_id)[:80]!r}, "
                              f"but its location is {location!r}")
    if type(body.get("length")) is not int or body["length"] != length:
        raise MalformedAnswer(f"the upload creation declares {str(body.get('length'))[:30]!r} "
                              f"bytes, expected {length}")
    expires = headers.get("Upload-Expires")
    if expires is None:
        raise MalformedAnswer("the upload creation answered without Upload-Expires")
    return UploadHandle(path=location, upload_id=upload_id, length=length,
                        expires=expires[:100])


async def upload_offset(session: SignedSession, upload_path: str) -> int:
    """Return the offset to resume from (HEAD)."""
    response = await session.request("HEAD", upload_path, headers=_tus())
    async with response:
        if response.status != 200:
            raise RequestRefused(response.status, None)
        return _offset(response)


async def content_digest_of(source: ByteSource, start: int, end: int) -> str:
    """Return the Content-Digest value of bytes ``[start, end)`` of ``source`` (reads it)."""
    hasher = hashlib.sha256()
    async for piece in source(start, end):
        hasher.update(piece)
    return content_digest_from_sha256(hasher.digest())


@dataclass(frozen=True, slots=True)
class PrefixDigest:
    """A PATCH's ``Exchange-Prefix-Digest`` value: the SHA-256 of the upload's bytes
    ``[0, end)`` (sent instead of a Content-Digest, so nobody hashes the body twice)."""

    value: str


#: The problem type of a server process that cannot check a prefix digest (it did not
#: hash the upload's earlier bytes): that PATCH goes again with a Content-Digest.
PREFIX_DIGEST_UNAVAILABLE = "prefix-digest-unavailable"


async def append_chunk(
    session: SignedSession, upload_path: str, offset: int, end: int, source: ByteSource, *,
    expect_continue: bool = True, digest: str | PrefixDigest | None = None,
) -> int:
    """PATCH the bytes ``[offset, end)`` of ``source``; return the server's new offset.

    ``digest``: the body's Content-Digest value, a :class:`PrefixDigest`, or None
    (the Content-Digest is then hashed from ``source`` first, reading it twice).
    """
    headers = _tus(**{"Upload-Offset": str(offset), "Content-Type": PATCH_CONTENT_TYPE,
                      "Content-Length": str(end - offset)})
    if isinstance(digest, PrefixDigest):
        headers[PREFIX_DIGEST_FIELD] = digest.value
        digest = None
    elif digest is None:
        digest = await content_digest_of(source, offset, end)
    response = await session.request("PATCH", upload_path, data=source(offset, end),
                                     headers=headers, digest=digest,
                                     expect_continue=expect_continue)
    if response.status != 204:
        raise await _refused(response)
    async with response:
        return _offset(response)


async def commit_upload(
    session: SignedSession, upload_path: str, *, sealed_manifest: bytes,
    ciphertext_sha256: str, epoch: int, case_head: str,
) -> dict[str, Any]:
    """Commit a complete upload as evidence; return the evidence record.

    ``case_head`` is the hash of the case chain's newest statement the
    uploader verified: it goes into the commit's audit entry, so an upload
    built on a stale view of the case is named by the verifier.
    """
    response = await session.request("POST", upload_path + "/commit", json={
        "sealed_manifest": base64.b64encode(sealed_manifest).decode("ascii"),
        "ciphertext_sha256": ciphertext_sha256, "epoch": epoch, "case_head": case_head,
    })
    if response.status != 201:
        raise await _refused(response)
    async with response:
        record = await read_json_answer(response, what="the commit")
    if not isinstance(record, dict) or not isinstance(record.get("evidence_id"), str):
        raise MalformedAnswer("the commit answered without an evidence record")
    return record


async def open_download(
    session: SignedSession, evidence_id: str, *, start: int | None = None,
    end: int | None = None,
) -> aiohttp.ClientResponse:
    """Request the ciphertext (bytes ``[start, end)`` when given); the caller streams it.

    Raises :class:`RequestRefused` unless the answer is 200 or 206.
    """
    headers: dict[str, str] = {}
    if start is not None or end is not None:
        first = str(start or 0)
        last = "" if end is None else str(end - 1)
        headers["Range"] = f"bytes={first}-{last}"
    response = await session.request("GET", f"/v1/evidence/{evidence_id}/content",
                                     headers=headers)
    if response.status not in (200, 206):
        raise await _refused(response)
    return response
