"""The S3 side of the S3 blob store: where it lives, how to reach it, what its errors mean.

Kept apart from :mod:`exchange.storage.s3_blobs` and
:mod:`exchange.storage.s3_uploads` so both use one client, one key layout
and one error mapping. Every call to the object store goes through
:meth:`S3Bucket.call`, which turns the client library's exceptions into the
interface's storage errors (capacity, unavailable) or into the two private
signals the stores branch on (:class:`Missing`, :class:`Conflict`), so no
``botocore`` or ``aiohttp`` exception reaches the service layer.

Why ``aiobotocore``: resumable uploads must be resumed by *another* server
process, so the store needs the S3 multipart upload id, explicit part numbers
and conditional writes (``If-None-Match``/``If-Match``) in its own hands.
``obstore`` hides multipart uploads behind a streaming writer that lives and
dies with one process, so it cannot resume an upload started elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from exchange.errors import StorageError
from exchange.storage.errors import BlobStoreUnavailable, InsufficientStorage, InvalidValue

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

T = TypeVar("T")

#: S3's smallest part (every part of a multipart upload but the last).
MIN_PART_BYTES = 5 * 1024 * 1024
#: S3's largest object one ``CopyObject`` may copy; bigger ones are copied part by part.
MAX_COPY_BYTES = 5 * 1024 * 1024 * 1024
#: S3 numbers parts 1..10000.
MAX_PART_NUMBER = 10_000

#: Environment variables read for credentials (never a command-line flag).
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"  # noqa: S105 (a variable name, not a secret)

_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_S3_5XX_CODES = frozenset({"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout"})
_FULL_CODES = frozenset({"QuotaExceeded", "EntityTooLarge", "InsufficientCapacity"})
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchUpload", "404", "NotFound"})
_TRANSIENT = (BotoCoreError, aiohttp.ClientError, OSError, asyncio.TimeoutError)


class Missing(Exception):
    """The object, or multipart upload, is not there."""


class Conflict(Exception):
    """A conditional write lost: the object exists, or changed since it was read."""


@dataclass(frozen=True, slots=True)
class S3Location:
    """Where blobs live: ``s3://BUCKET/PREFIX`` at ``endpoint`` (None: AWS)."""

    bucket: str
    prefix: str
    endpoint: str | None = None
    region: str = "us-east-1"

    @classmethod
    def parse(cls, url: str, *, endpoint: str | None = None,
              region: str | None = None) -> S3Location:
        """Parse ``s3://BUCKET/PREFIX``; raise :class:`InvalidValue` with what is wrong."""
        parts = urlsplit(url)
        if parts.scheme != "s3" or parts.query or parts.fragment:
            raise InvalidValue(f"blob store url must look like s3://BUCKET/PREFIX, found {url!r}")
        if _BUCKET_RE.fullmatch(parts.netloc) is None:
            raise InvalidValue(
                f"invalid bucket name {parts.netloc!r}: 3-63 lowercase letters, digits, '.', '-'"
            )
        prefix = parts.path.strip("/")
        if any(piece in ("", ".", "..") for piece in prefix.split("/")) and prefix:
            raise InvalidValue(f"invalid prefix {parts.path!r} in {url!r}")
        if endpoint is not None:
            scheme = urlsplit(endpoint).scheme
            if scheme not in ("http", "https"):
                raise InvalidValue(f"s3 endpoint must be an http(s) url, found {endpoint!r}")
        return cls(bucket=parts.netloc, prefix=f"{prefix}/" if prefix else "",
                   endpoint=endpoint, region=region or "us-east-1")

    @property
    def url(self) -> str:
        """The ``s3://`` form, as written to ``server.json``."""
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")


@dataclass(frozen=True, slots=True, repr=False)
class S3Credentials:
    """An access key pair; ``repr`` never shows the secret."""

    access_key: str
    secret_key: str

    def __repr__(self) -> str:
        return f"S3Credentials(access_key={self.access_key!r}, secret_key=<hidden>)"

    @classmethod
    def load(cls, path: Path | None = None) -> S3Credentials | None:
        """Read credentials from ``path`` (two lines: key, secret), else the environment.

        None means "let the client library look" (its shared credentials file,
        instance metadata). A file must not be readable by others.
        """
        if path is not None:
            mode = path.stat().st_mode
            if mode & 0o077:
                raise InvalidValue(
                    f"s3 credentials file {str(path)!r} is readable by others "
                    f"(mode {oct(mode & 0o777)}); chmod 600 it"
                )
            lines = [line.strip() for line in path.read_text("utf-8").splitlines()
                     if line.strip() and not line.lstrip().startswith("#")]
            if len(lines) != 2:
                raise InvalidValue(
                    f"s3 credentials file {str(path)!r} must hold two lines: the access "
                    f"key, then the secret key (found {len(lines)} lines)"
                )
            return cls(lines[0], lines[1])
        access, secret = os.environ.get(ENV_ACCESS_KEY), os.environ.get(ENV_SECRET_KEY)
        if access and secret:
            return cls(access, secret)
        return None


def client_config(*, connections: int = 64) -> Config:
    """The client settings: path-style addressing, few fast retries, no extra checksums.

    Path-style addressing works with every S3-compatible server without DNS
    set-up. Retries are few so an outage surfaces as 503 within seconds.
    Checksums are only sent where S3 requires them: the store hashes every
    byte with SHA-256 itself, and older gateways reject the newer headers.
    """
    return Config(
        s3={"addressing_style": "path"},
        retries={"max_attempts": 3, "mode": "standard"},
        connect_timeout=5, read_timeout=60, max_pool_connections=connections,
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )


def if_match(etag: str) -> str:
    """The value for ``If-Match``: Ceph RGW (16.x) compares it to the unquoted ETag."""
    return etag.strip('"')


def _error_code(err: ClientError) -> tuple[str, int]:
    error = err.response.get("Error", {})
    status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status)


def translate(err: BaseException, what: str) -> BaseException:
    """Return the storage error (or signal) for an exception of the client library."""
    if isinstance(err, ClientError):
        code, status = _error_code(err)
        if code in _MISSING_CODES or status == 404:
            if code == "NoSuchBucket":
                return BlobStoreUnavailable(f"the object store has no such bucket ({what})")
            return Missing(what)
        if status == 412 or code == "PreconditionFailed":
            return Conflict(what)
        if code in _FULL_CODES:
            return InsufficientStorage(
                f"the object store refused to keep more data ({code}); nothing of this "
                "write was kept, retry later or free space"
            )
        if status >= 500 or code in _S3_5XX_CODES:
            return BlobStoreUnavailable(f"the object store failed ({code or status}) on {what}")
        if status in (401, 403):
            return BlobStoreUnavailable(
                f"the object store refused our credentials ({code or status}) on {what}"
            )
        return StorageError(f"the object store refused {what}: {code or status}")
    if isinstance(err, _TRANSIENT):
        return BlobStoreUnavailable(
            f"the object store cannot be reached on {what} ({type(err).__name__})"
        )
    return err


class S3Bucket:
    """One bucket (and key prefix) reached through one long-lived client."""

    def __init__(self, location: S3Location, client: S3Client,
                 stack: contextlib.AsyncExitStack) -> None:
        self.location = location
        self.client = client
        self._stack = stack

    @classmethod
    async def open(cls, location: S3Location, credentials: S3Credentials | None = None, *,
                   connections: int = 64) -> S3Bucket:
        """Create the client (no request is sent yet)."""
        stack = contextlib.AsyncExitStack()
        keys: dict[str, Any] = {}
        if credentials is not None:
            keys = {"aws_access_key_id": credentials.access_key,
                    "aws_secret_access_key": credentials.secret_key}
        client = await stack.enter_async_context(get_session().create_client(
            "s3", endpoint_url=location.endpoint, region_name=location.region,
            config=client_config(connections=connections), **keys,
        ))
        return cls(location, client, stack)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._stack.aclose()

    def key(self, name: str) -> str:
        """The object key of ``name`` under the store's prefix."""
        return self.location.prefix + name

    async def call(self, what: str, work: Awaitable[T]) -> T:
        """Await one request; translate the client library's errors (see :func:`translate`)."""
        try:
            return await work
        except (ClientError, *_TRANSIENT) as err:
            raise translate(err, what) from None

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (``server init``); errors name the problem."""
        bucket = self.location.bucket
        try:
            await self.call(f"bucket {bucket}", self.client.head_bucket(Bucket=bucket))
        except (Missing, BlobStoreUnavailable):
            # RGW and AWS answer a missing bucket's HEAD with a bare 404.
            with contextlib.suppress(Conflict):
                await self.call(f"creating bucket {bucket}",
                                self.client.create_bucket(Bucket=bucket))

    async def get_bytes(self, name: str, what: str) -> tuple[bytes, str]:
        """Return a small object's bytes and ETag (:class:`Missing` when absent)."""
        async def fetch() -> tuple[bytes, str]:
            answer = await self.client.get_object(Bucket=self.location.bucket, Key=self.key(name))
            async with answer["Body"] as body:
                return await body.read(), answer.get("ETag", "")
        return await self.call(what, fetch())

    async def put_bytes(self, name: str, data: bytes, what: str, *,
                        create_only: bool = False, match: str | None = None) -> str:
        """Write a small object; ``create_only`` or ``match`` make it conditional.

        A lost condition raises :class:`Conflict`. Returns the new ETag.
        """
        extra: dict[str, Any] = {}
        if create_only:
            extra["IfNoneMatch"] = "*"
        if match is not None:
            extra["IfMatch"] = if_match(match)
        answer = await self.call(what, self.client.put_object(
            Bucket=self.location.bucket, Key=self.key(name), Body=data, **extra))
        return answer.get("ETag", "")

    async def delete(self, name: str, what: str) -> None:
        """Delete an object; absent is fine (S3 deletes are idempotent)."""
        with contextlib.suppress(Missing):
            await self.call(what, self.client.delete_object(
                Bucket=self.location.bucket, Key=self.key(name)))

    async def size(self, name: str, what: str) -> int:
        """Return an object's size (``HEAD``); :class:`Missing` when absent."""
        answer = await self.call(what, self.client.head_object(
            Bucket=self.location.bucket, Key=self.key(name)))
        return int(answer["ContentLength"])

    async def stream(self, name: str, start: int, end: int, chunk: int,
                     what: str) -> AsyncIterator[bytes]:
        """Yield bytes ``[start, end)`` of an object in pieces of at most ``chunk`` bytes."""
        if start >= end:
            return
        answer = await self.call(what, self.client.get_object(
            Bucket=self.location.bucket, Key=self.key(name), Range=f"bytes={start}-{end - 1}"))
        async with answer["Body"] as body:
            while True:
                data = await self.call(what, body.read(chunk))
                if not data:
                    return
                yield data

    async def names(self, prefix: str, *, delimiter: str = "") -> AsyncIterator[tuple[str, int]]:
        """Yield ``(name, size)`` of every object under ``prefix`` (names without our prefix).

        With ``delimiter``, common prefixes are yielded too, with size -1.
        """
        token: str | None = None
        strip = len(self.location.prefix)
        while True:
            extra: dict[str, Any] = {"ContinuationToken": token} if token else {}
            if delimiter:
                extra["Delimiter"] = delimiter
            page = await self.call(f"listing {prefix}", self.client.list_objects_v2(
                Bucket=self.location.bucket, Prefix=self.key(prefix), **extra))
            for item in page.get("Contents", []):
                yield item["Key"][strip:], int(item["Size"])
            for common in page.get("CommonPrefixes", []):
                yield common["Prefix"][strip:], -1
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")


__all__ = [
    "ENV_ACCESS_KEY",
    "ENV_SECRET_KEY",
    "MAX_COPY_BYTES",
    "MAX_PART_NUMBER",
    "MIN_PART_BYTES",
    "Conflict",
    "Missing",
    "S3Bucket",
    "S3Credentials",
    "S3Location",
    "client_config",
    "if_match",
    "translate",
]
