"""tus 1.0 resumable uploads: header parsing and the upload state machine (sans-I/O).

Implements the core protocol plus the creation, termination and expiration
extensions (tus.io protocol 1.0.0). The checksum extension is deliberately not
offered: it mandates SHA-1; every PATCH instead carries a signed RFC 9530
``Content-Digest`` (sha-256), checked by the HTTP adapter while streaming.

This module knows nothing of aiohttp or storage: the adapter parses headers
with the functions here, asks :class:`UploadState` whether a request is
allowed, does the I/O, and records the result with the returned new state.
Every transition lives in this file.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

from exchange.errors import TransportError

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = ("creation", "termination", "expiration")
PATCH_CONTENT_TYPE = "application/offset+octet-stream"
#: Our own OPTIONS header for the largest PATCH body (tus 1.0 has no standard one).
MAX_CHUNK_HEADER = "Exchange-Max-Chunk-Size"

# Upload-Metadata is small, structured client data; 4 KiB is plenty and bounds abuse.
MAX_METADATA_BYTES = 4096
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}")
_METADATA_KEY = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")


class TusError(TransportError):
    """A tus protocol violation; ``http_status`` is the status tus prescribes."""

    problem_type = "upload-invalid"


class TusVersionMismatch(TusError):
    http_status = 412
    problem_type = "tus-version"


class UploadOffsetMismatch(TusError):
    """The client's Upload-Offset is not the server's offset (409)."""

    http_status = 409
    problem_type = "upload-offset-mismatch"

    def __init__(self, *, expected: int, found: int) -> None:
        super().__init__(f"upload offset is {expected}, request says {found}")
        self.expected = expected
        self.found = found


class UploadTooLarge(TusError):
    http_status = 413
    problem_type = "upload-too-large"


class UploadGone(TusError):
    """The upload expired or was terminated (410)."""

    http_status = 410
    problem_type = "upload-gone"


class UploadNotWritable(TusError):
    """The upload is complete or committed and takes no more bytes (409)."""

    http_status = 409
    problem_type = "upload-not-writable"


class UnsupportedMediaType(TusError):
    http_status = 415
    problem_type = "unsupported-media-type"


class UploadStatus(enum.Enum):
    """Where an upload is in its life. Transitions: see :class:`UploadState`."""

    RECEIVING = "receiving"   # offset < length
    COMPLETE = "complete"     # offset == length, waiting for the commit
    COMMITTED = "committed"   # promoted to a blob and recorded as evidence
    TERMINATED = "terminated"  # DELETE by the client


def response_headers(status: int) -> dict[str, str]:
    """Return the tus headers a response of ``status`` must carry, errors included.

    tus 1.0 "Headers": every response except to OPTIONS carries ``Tus-Resumable``
    (we send it on OPTIONS too, which the protocol allows); a 412 (version
    mismatch) also lists the versions we speak in ``Tus-Version``.
    """
    headers = {"Tus-Resumable": TUS_VERSION}
    if status == TusVersionMismatch.http_status:
        headers["Tus-Version"] = TUS_VERSION
    return headers


def discovery_headers(*, max_size: int, max_chunk: int) -> dict[str, str]:
    """Return the answer to an (unsigned) ``OPTIONS``: what any tus client may learn.

    ``Tus-Max-Size`` is the largest upload; the largest PATCH body is sent in
    :data:`MAX_CHUNK_HEADER` and, in the IETF resumable-upload draft's
    ``Upload-Limit`` Structured Field Dictionary (``max-size``,
    ``max-append-size``), the only standard spelling of a per-request limit.
    Nothing here depends on who asks.
    """
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(TUS_EXTENSIONS),
        "Tus-Max-Size": str(max_size),
        MAX_CHUNK_HEADER: str(max_chunk),
        "Upload-Limit": f"max-size={max_size}, max-append-size={max_chunk}",
    }


def require_tus_version(value: str | None) -> None:
    """Check the ``Tus-Resumable`` request header (required on all but OPTIONS)."""
    if value != TUS_VERSION:
        raise TusVersionMismatch(f"Tus-Resumable must be {TUS_VERSION!r}, got {value!r:.40}")


def parse_decimal(name: str, value: str | None, *, maximum: int) -> int:
    """Parse a non-negative decimal header such as Upload-Length or Upload-Offset."""
    if value is None:
        raise TusError(f"missing {name} header")
    if not _DECIMAL.fullmatch(value):
        raise TusError(f"{name} must be a non-negative decimal integer, got {value!r:.40}")
    number = int(value)
    if number > maximum:
        raise UploadTooLarge(f"{name} {number} exceeds the maximum of {maximum}")
    return number


def parse_metadata(value: str | None) -> dict[str, bytes]:
    """Parse ``Upload-Metadata``: comma-separated ``key [base64 value]`` pairs.

    Keys are unique ASCII tokens; values are strict base64 (padding required,
    no whitespace inside). Raises :class:`TusError` for anything else.
    """
    if value is None or value.strip() == "":
        return {}
    if len(value) > MAX_METADATA_BYTES:
        raise UploadTooLarge(f"Upload-Metadata is longer than {MAX_METADATA_BYTES} bytes")
    result: dict[str, bytes] = {}
    for raw_pair in value.split(","):
        parts = raw_pair.strip().split(" ")
        if len(parts) not in (1, 2) or not _METADATA_KEY.fullmatch(parts[0]):
            raise TusError(f"malformed Upload-Metadata pair {raw_pair.strip()!r:.60}")
        key = parts[0]
        if key in result:
            raise TusError(f"duplicate Upload-Metadata key {key!r}")
        try:
            result[key] = base64.b64decode(parts[1], validate=True) if len(parts) == 2 else b""
        except (binascii.Error, ValueError):
            raise TusError(f"Upload-Metadata value for {key!r} is not base64") from None
    return result


def format_expires(moment: datetime) -> str:
    """Format an ``Upload-Expires`` value (an RFC 9110 HTTP-date)."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def parse_expires(value: str) -> datetime:
    """Parse an HTTP-date as sent in ``Upload-Expires``."""
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        raise TusError(f"Upload-Expires is not an HTTP-date: {value!r:.40}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadState:
    """The durable state of one upload; every method returns a new state or raises."""

    upload_id: str
    length: int
    offset: int
    expires_at: datetime
    status: UploadStatus = UploadStatus.RECEIVING

    def __post_init__(self) -> None:
        if not 0 <= self.offset <= self.length:
            raise ValueError(f"offset {self.offset} outside 0..{self.length}")
        if (self.offset == self.length) != (self.status is not UploadStatus.RECEIVING) and (
            self.status is not UploadStatus.TERMINATED
        ):
            raise ValueError(f"status {self.status.value} does not fit offset {self.offset}")

    @classmethod
    def create(cls, *, upload_id: str, length: int, expires_at: datetime) -> UploadState:
        """A new upload; a zero-length upload is complete at once."""
        status = UploadStatus.COMPLETE if length == 0 else UploadStatus.RECEIVING
        return cls(upload_id=upload_id, length=length, offset=0, expires_at=expires_at,
                   status=status)

    def check_live(self, now: datetime) -> None:
        """Raise :class:`UploadGone` if the upload was terminated or has expired."""
        if self.status is UploadStatus.TERMINATED:
            raise UploadGone("the upload was terminated")
        if self.status is not UploadStatus.COMMITTED and now >= self.expires_at:
            raise UploadGone("the upload expired; start a new one")

    def check_append(self, *, offset: int, content_length: int | None, now: datetime) -> int:
        """Validate a PATCH before any byte is read; return the most bytes it may append.

        Raises :class:`UploadOffsetMismatch` (409) when ``offset`` is not ours,
        :class:`UploadNotWritable` when the upload takes no more bytes and
        :class:`UploadTooLarge` when the body would pass the declared length.
        """
        self.check_live(now)
        if self.status is not UploadStatus.RECEIVING:
            raise UploadNotWritable(f"the upload is {self.status.value} and takes no more bytes")
        if offset != self.offset:
            raise UploadOffsetMismatch(expected=self.offset, found=offset)
        room = self.length - self.offset
        if content_length is not None and content_length > room:
            raise UploadTooLarge(
                f"body of {content_length} bytes passes the declared length ({room} bytes left)"
            )
        return room

    def appended(self, count: int) -> UploadState:
        """The state after ``count`` more bytes were made durable."""
        if count < 0 or self.offset + count > self.length:
            raise ValueError(f"cannot append {count} bytes at {self.offset}/{self.length}")
        offset = self.offset + count
        status = UploadStatus.COMPLETE if offset == self.length else UploadStatus.RECEIVING
        return replace(self, offset=offset, status=status)

    def committed(self) -> UploadState:
        """The state once the upload became a blob and an evidence record."""
        if self.status is not UploadStatus.COMPLETE:
            raise UploadNotWritable(
                f"only a complete upload can be committed ({self.offset} of {self.length} bytes)"
            )
        return replace(self, status=UploadStatus.COMMITTED)

    def terminated(self) -> UploadState:
        """The state after a DELETE; a committed upload cannot be terminated."""
        if self.status is UploadStatus.COMMITTED:
            raise UploadNotWritable("a committed upload cannot be terminated")
        return replace(self, status=UploadStatus.TERMINATED)
