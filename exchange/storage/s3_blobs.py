"""S3-compatible blob store: blobs at ``<prefix>blobs/<sha256>`` in one bucket (issue 18).

Theory of operation. A blob's key is its SHA-256, so a blob that exists
already holds the right bytes. Blobs are created, never overwritten:

- up to one part (8 MiB by default) the bytes are gathered in memory, hashed,
  and written by one ``PUT`` with ``If-None-Match: *`` (an existing blob
  answers 412 and is kept);
- larger blobs stream into a multipart upload under ``tmp/`` while they are
  hashed, then are copied server-side to their address if it is still free
  (``HEAD`` first, then ``CopyObject`` with ``If-None-Match: *``). Ceph RGW
  (16.x) ignores that header on ``CopyObject`` and on
  ``CompleteMultipartUpload`` (verified): two processes installing the same
  blob at the same moment may both write it, but both have verified the same
  SHA-256, so the object's bytes never change.

Sizes come from ``HEAD`` (RGW answers ``CompleteMultipartUpload`` with an
empty ETag). Downloads are ranged ``GET``\\s; :meth:`read` hashes as it goes
and holds the last chunk back until the hash matched, like the filesystem
store. Upload sessions live in :mod:`exchange.storage.s3_uploads`. Every
failure of the object store reaches the caller as ``BlobStoreUnavailable``
(503) or ``InsufficientStorage`` (507), never as a client-library exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from exchange.storage._s3io import (
    MAX_COPY_BYTES,
    Conflict,
    Missing,
    S3Bucket,
    S3Credentials,
    S3Location,
)
from exchange.storage.blobs import (
    BlobId,
    BlobInfo,
    Chunks,
    UploadId,
    UploadState,
    aiter_chunks,
    check_range,
    parse_blob_id,
)
from exchange.storage.errors import BlobCorrupt, BlobHashMismatch, BlobNotFound
from exchange.storage.s3_uploads import LOGGING_LEASE_S, PART_BYTES, Hasher, S3UploadSessions

#: Download granularity (a download holds about two of them).
IO_CHUNK_BYTES = 1024 * 1024
#: Staged objects older than this are leftovers of crashed writers (see :meth:`sweep`).
STALE_TEMP_S = 24 * 3600


class S3BlobStore:
    """A :class:`~exchange.storage.blobs.BlobStore` in an S3-compatible bucket."""

    def __init__(self, bucket: S3Bucket, *, part_bytes: int = PART_BYTES,
                 io_chunk_bytes: int = IO_CHUNK_BYTES, max_copy_bytes: int = MAX_COPY_BYTES,
                 clock: Callable[[], float] = time.time,
                 logging_lease_s: float = LOGGING_LEASE_S) -> None:
        self._bucket = bucket
        self._clock = clock
        self._part = part_bytes
        self._chunk = io_chunk_bytes
        self._max_copy = max_copy_bytes
        self._sessions = S3UploadSessions(
            bucket, install=self._install, io_chunk_bytes=io_chunk_bytes, part_bytes=part_bytes,
            clock=clock, logging_lease_s=logging_lease_s,
        )

    @classmethod
    async def open(cls, location: S3Location, credentials: S3Credentials | None = None,
                   **options: Any) -> S3BlobStore:
        """Open a client for ``location``; :meth:`close` it when done."""
        return cls(await S3Bucket.open(location, credentials), **options)

    async def close(self) -> None:
        """Close the client's connections."""
        await self._bucket.close()

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (``server init``)."""
        await self._bucket.ensure_bucket()

    @property
    def location(self) -> S3Location:
        """The bucket and prefix."""
        return self._bucket.location

    @staticmethod
    def _name(blob_id: BlobId) -> str:
        return f"blobs/{blob_id}"

    # -- blobs ---------------------------------------------------------------

    async def put(self, chunks: Chunks, *, expected_sha256: str | None = None) -> BlobInfo:
        """Store ``chunks`` as a blob (see ``BlobStore.put`` and the module notes)."""
        expected = parse_blob_id(expected_sha256) if expected_sha256 is not None else None
        digest = hashlib.sha256()
        hasher = Hasher(digest)
        buffer = bytearray()
        size = 0
        staging: _Staging | None = None
        try:
            async for chunk in aiter_chunks(chunks):
                buffer += chunk
                size += len(chunk)
                await hasher.add(chunk)
                while len(buffer) >= self._part + 1 or (staging and len(buffer) >= self._part):
                    if staging is None:
                        staging = await _Staging.begin(self._bucket)
                    await staging.part(bytes(buffer[:self._part]))
                    del buffer[:self._part]
            await hasher.finish()
            blob_id = BlobId(digest.hexdigest())
            if expected is not None and expected != blob_id:
                raise BlobHashMismatch(f"content hashes to {blob_id}, want {expected}")
            if staging is None:
                await self._sessions.install_bytes(bytes(buffer), blob_id)
                return BlobInfo(blob_id=blob_id, size=size)
            if buffer:
                await staging.part(bytes(buffer))
            await staging.complete()
            await self._install(staging.name, blob_id, size)
        finally:
            if staging is not None:
                await staging.discard()
        return BlobInfo(blob_id=blob_id, size=size)

    async def _install(self, source: str, blob_id: BlobId, size: int) -> None:
        """Copy ``source`` to the blob's address unless a blob is there already."""
        target = self._name(blob_id)
        try:
            await self._bucket.size(target, f"blob {blob_id}")
            return  # present: same address, same bytes
        except Missing:
            pass
        bucket = self._bucket.location.bucket
        copy_source: Any = {"Bucket": bucket, "Key": self._bucket.key(source)}
        if size <= self._max_copy:
            with contextlib.suppress(Conflict):
                await self._bucket.call(f"blob {blob_id}", self._bucket.client.copy_object(
                    Bucket=bucket, Key=self._bucket.key(target), CopySource=copy_source,
                    IfNoneMatch="*"))
            return
        # CopyObject stops at 5 GiB: copy part by part into a multipart upload.
        client = self._bucket.client
        created = await self._bucket.call(f"blob {blob_id}", client.create_multipart_upload(
            Bucket=bucket, Key=self._bucket.key(target)))
        mpu = created["UploadId"]
        try:
            parts: list[Any] = []
            for number, start in enumerate(range(0, size, self._max_copy), start=1):
                end = min(start + self._max_copy, size) - 1
                answer = await self._bucket.call(f"blob {blob_id}", client.upload_part_copy(
                    Bucket=bucket, Key=self._bucket.key(target), UploadId=mpu,
                    PartNumber=number, CopySource=copy_source,
                    CopySourceRange=f"bytes={start}-{end}"))
                parts.append({"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]})
            await self._bucket.call(f"blob {blob_id}", client.complete_multipart_upload(
                Bucket=bucket, Key=self._bucket.key(target), UploadId=mpu,
                MultipartUpload={"Parts": parts}))
        except BaseException:
            await _abort_quietly(self._bucket, self._bucket.key(target), mpu)
            raise

    async def stat(self, blob_id: str) -> BlobInfo:
        """Return the blob's address and size (see ``BlobStore.stat``)."""
        bid = parse_blob_id(blob_id)
        try:
            size = await self._bucket.size(self._name(bid), f"blob {bid}")
        except Missing:
            raise BlobNotFound(f"no blob {bid}") from None
        return BlobInfo(blob_id=bid, size=size)

    async def open_range(self, blob_id: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Return an iterator over ``[start, end)`` (see ``BlobStore.open_range``)."""
        info = await self.stat(blob_id)
        check_range(start, end, info.size)
        return self._ranged(info.blob_id, start, end)

    async def _ranged(self, blob_id: BlobId, start: int, end: int) -> AsyncIterator[bytes]:
        position = start
        try:
            async for data in self._bucket.stream(self._name(blob_id), start, end, self._chunk,
                                                  f"blob {blob_id}"):
                position += len(data)
                yield data
        except Missing:
            raise BlobNotFound(f"no blob {blob_id}") from None
        if position != end:
            raise BlobCorrupt(
                f"blob {blob_id} is corrupt: {position} bytes, want at least {end}",
                blob_id=blob_id, found_sha256="",
            )

    async def read(self, blob_id: str) -> AsyncIterator[bytes]:
        """Return a verifying iterator over the whole blob (see ``BlobStore.read``)."""
        info = await self.stat(blob_id)
        return self._verified(info)

    async def _verified(self, info: BlobInfo) -> AsyncIterator[bytes]:
        """Yield the blob, hashing it; the last chunk goes out only once the hash matched."""
        digest = hashlib.sha256()
        hasher = Hasher(digest)
        held: bytes | None = None
        async for data in self._ranged(info.blob_id, 0, info.size):
            await hasher.add(data)  # hashed in a thread while the next chunk is fetched
            if held is not None:
                yield held
            held = data
        await hasher.finish()
        found = digest.hexdigest()
        if found != info.blob_id:
            raise BlobCorrupt(f"blob {info.blob_id} is corrupt: content hashes to {found}",
                              blob_id=info.blob_id, found_sha256=found)
        if held is not None:
            yield held

    async def verify(self, blob_id: str) -> BlobInfo:
        """Hash the whole blob (see ``BlobStore.verify``)."""
        info = await self.stat(blob_id)
        async for _ in self._verified(info):
            pass
        return info

    async def delete(self, blob_id: str) -> None:
        """Remove a blob (see ``BlobStore.delete``)."""
        info = await self.stat(blob_id)
        await self._bucket.delete(self._name(info.blob_id), f"blob {info.blob_id}")

    async def list_blobs(self) -> AsyncIterator[BlobInfo]:
        """Yield every stored blob (for ``server check``); other keys are skipped."""
        async for name, size in self._bucket.names("blobs/"):
            try:
                bid = parse_blob_id(name.removeprefix("blobs/"))
            except ValueError:
                continue
            yield BlobInfo(blob_id=bid, size=size)

    async def sweep(self, *, older_than_s: float = STALE_TEMP_S) -> int:
        """Remove what crashed writers of large blobs left under ``tmp/``; return how many.

        Staged objects and multipart uploads older than ``older_than_s`` go
        (another process may be writing a younger one right now). Upload
        sessions are not touched: :meth:`expire_uploads` ends those.
        """
        limit = self._clock() - older_than_s
        bucket, client = self._bucket.location.bucket, self._bucket.client
        removed = 0
        uploads = await self._bucket.call("sweeping", client.list_multipart_uploads(
            Bucket=bucket, Prefix=self._bucket.key("tmp/")))
        for upload in uploads.get("Uploads", []):
            if upload["Initiated"].timestamp() < limit:
                await _abort_quietly(self._bucket, upload["Key"], upload["UploadId"])
                removed += 1
        listing = await self._bucket.call("sweeping", client.list_objects_v2(
            Bucket=bucket, Prefix=self._bucket.key("tmp/")))
        for item in listing.get("Contents", []):
            if item["LastModified"].timestamp() < limit:
                await self._bucket.delete(item["Key"][len(self._bucket.location.prefix):],
                                          "sweeping")
                removed += 1
        return removed

    # -- upload sessions (delegated to s3_uploads) ---------------------------

    async def create_upload(
        self, *, length: int, expires_at: int, upload_id: str | None = None
    ) -> UploadState:
        """Create an empty session (see ``BlobStore.create_upload``)."""
        return await self._sessions.create_upload(
            length=length, expires_at=expires_at, upload_id=upload_id)

    async def upload_state(self, upload_id: str) -> UploadState:
        """Return the durable state (see ``BlobStore.upload_state``)."""
        return await self._sessions.upload_state(upload_id)

    async def append(
        self, upload_id: str, offset: int, chunks: Chunks, *,
        on_durable: Callable[[int], Awaitable[None]] | None = None,
        prefix_sha256: bytes | None = None,
    ) -> int:
        """Append at ``offset`` durably (see ``BlobStore.append`` and ``S3UploadSessions``)."""
        return await self._sessions.append(upload_id, offset, chunks, on_durable=on_durable,
                                           prefix_sha256=prefix_sha256)

    async def trim_upload(
        self, upload_id: str, logged_offset: Callable[[], Awaitable[int]]
    ) -> UploadState:
        """Reconcile the session with the log (see ``BlobStore.trim_upload``)."""
        return await self._sessions.trim_upload(upload_id, logged_offset)

    async def promote(self, upload_id: str, expected_sha256: str, *,
                      keep_session: bool = False) -> BlobInfo:
        """Turn a complete, verified session into a blob (see ``BlobStore.promote``)."""
        return await self._sessions.promote(upload_id, expected_sha256,
                                            keep_session=keep_session)

    async def delete_upload(self, upload_id: str) -> None:
        """Remove a session (see ``BlobStore.delete_upload``)."""
        await self._sessions.delete_upload(upload_id)

    async def expire_uploads(self, now: int) -> list[UploadId]:
        """Delete expired sessions (see ``BlobStore.expire_uploads``)."""
        return await self._sessions.expire_uploads(now)


class _Staging:
    """A multipart upload under ``tmp/`` that a large :meth:`S3BlobStore.put` streams into."""

    def __init__(self, bucket: S3Bucket, name: str, mpu: str) -> None:
        self.bucket = bucket
        self.name = name
        self.mpu = mpu
        self.parts: list[Any] = []
        self.completed = False

    @classmethod
    async def begin(cls, bucket: S3Bucket) -> _Staging:
        name = f"tmp/{secrets.token_urlsafe(18)}"
        created = await bucket.call("staging a blob", bucket.client.create_multipart_upload(
            Bucket=bucket.location.bucket, Key=bucket.key(name)))
        return cls(bucket, name, created["UploadId"])

    async def part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        answer = await self.bucket.call("staging a blob", self.bucket.client.upload_part(
            Bucket=self.bucket.location.bucket, Key=self.bucket.key(self.name),
            UploadId=self.mpu, PartNumber=number, Body=data))
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"]})

    async def complete(self) -> None:
        await self.bucket.call("staging a blob", self.bucket.client.complete_multipart_upload(
            Bucket=self.bucket.location.bucket, Key=self.bucket.key(self.name),
            UploadId=self.mpu, MultipartUpload={"Parts": self.parts}))
        self.completed = True

    async def discard(self) -> None:
        """Remove the staged object or abort the multipart upload (best effort)."""
        try:
            if self.completed:
                await self.bucket.delete(self.name, "staging a blob")
            else:
                await _abort_quietly(self.bucket, self.bucket.key(self.name), self.mpu)
        except Exception:  # noqa: S110 (a leftover is swept later; the caller's error wins)
            pass


async def _abort_quietly(bucket: S3Bucket, key: str, mpu: str) -> None:
    with contextlib.suppress(Exception):  # a leftover is swept later; the caller's error wins
        await bucket.call("aborting an upload", bucket.client.abort_multipart_upload(
            Bucket=bucket.location.bucket, Key=key, UploadId=mpu))


__all__ = ["IO_CHUNK_BYTES", "S3BlobStore"]
