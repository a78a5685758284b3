"""Leaf errors of the storage layer (blob store and metadata stores).

Each class exists because a caller branches on it; ``http_status`` is the hint
the transport layer maps straight to a response. Messages never carry secrets
and show untrusted values truncated with ``!r``.
"""

from __future__ import annotations

from exchange.errors import StorageError


def shown(value: object, limit: int = 40) -> str:
    """Return ``repr(value)`` truncated to ``limit`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class NotFound(StorageError):
    """The named record, blob or upload does not exist."""

    http_status = 404
    problem_type = "not-found"


class AlreadyExists(StorageError):
    """A record with the same key exists already; nothing was written."""

    http_status = 409
    problem_type = "already-exists"


class InvalidValue(StorageError, ValueError):
    """A value breaks a storage rule (format, size limit, range)."""

    http_status = 400
    problem_type = "invalid-value"


class ValueTooLarge(InvalidValue):
    """A value exceeds the size limit of its column or file."""

    http_status = 413
    problem_type = "value-too-large"


class InvalidBlobId(InvalidValue):
    """A blob id is not 64 lowercase hex digits (path-like names land here)."""


class InvalidUploadId(InvalidValue):
    """An upload id is not a safe token of the expected shape."""


class BlobNotFound(NotFound):
    """No blob is stored under that id."""


class BlobCorrupt(StorageError):
    """A stored blob does not hash to its address; it must never be served."""

    http_status = 500
    problem_type = "blob-corrupt"

    def __init__(self, message: str, *, blob_id: str, found_sha256: str) -> None:
        super().__init__(message)
        self.blob_id = blob_id
        self.found_sha256 = found_sha256


class BlobHashMismatch(InvalidValue):
    """Uploaded content does not hash to the digest the caller declared."""

    http_status = 422
    problem_type = "hash-mismatch"


class PrefixDigestMismatch(InvalidValue):
    """An append's signed prefix digest is not the hash of the upload's bytes through it."""

    http_status = 400
    problem_type = "digest-mismatch"


class PrefixHashUnknown(StorageError):
    """This process cannot check a prefix digest: it did not hash the upload's earlier bytes.

    (It restarted, or another server process took the earlier appends.) Nothing
    was read or written; the client sends this PATCH with a Content-Digest.
    """

    http_status = 409
    problem_type = "prefix-digest-unavailable"


class UploadNotFound(NotFound):
    """No upload session with that id (never created, promoted, deleted or expired)."""


class UploadExpired(StorageError):
    """The upload session has passed its expiry time."""

    http_status = 410
    problem_type = "upload-expired"


class UploadOffsetMismatch(StorageError):
    """An append stated an offset other than the session's durable offset."""

    http_status = 409
    problem_type = "upload-offset-mismatch"

    def __init__(self, message: str, *, expected: int, found: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.found = found


class UploadIncomplete(StorageError):
    """Promotion was asked for before the declared length was reached."""

    http_status = 409
    problem_type = "upload-incomplete"


class UploadBusy(StorageError):
    """The upload session is locked by an append, promotion or delete under way."""

    http_status = 409
    problem_type = "upload-busy"


class UploadBytesLost(StorageError):
    """The log accounts for more bytes of an upload than the blob store holds.

    Appended bytes are fsynced before they are logged, so this means a disk
    or filesystem lost acknowledged writes; nothing can bring them back.
    """

    problem_type = "upload-bytes-lost"

    def __init__(self, message: str, *, upload_id: str, durable: int, logged: int) -> None:
        super().__init__(message)
        self.upload_id = upload_id
        self.durable = durable
        self.logged = logged


class UploadStateCorrupt(StorageError):
    """An upload session's ``.state`` file cannot be read (damaged or not ours)."""

    problem_type = "upload-state-corrupt"

    def __init__(self, message: str, *, upload_id: str) -> None:
        super().__init__(message)
        self.upload_id = upload_id


class InsufficientStorage(StorageError):
    """The blob store is full (disk, quota or bucket quota); nothing of the write was kept."""

    http_status = 507
    problem_type = "insufficient-storage"


class BlobStoreUnavailable(StorageError):
    """The blob store cannot be reached or failed (object store down, disk I/O error).

    Answered 503 with ``Retry-After``: the request may succeed later and no
    acknowledged byte was lost.
    """

    http_status = 503
    problem_type = "blob-store-unavailable"


class ReplayedNonce(AlreadyExists):
    """A request nonce was seen before (replay protection)."""

    problem_type = "replayed-nonce"


class SchemaTooNew(StorageError):
    """The database schema is newer than this version of exchange knows."""

    problem_type = "schema-too-new"

    def __init__(self, message: str, *, database_version: int, known_version: int) -> None:
        super().__init__(message)
        self.database_version = database_version
        self.known_version = known_version


class StoreClosed(StorageError):
    """The store was closed (or its writer failed) and accepts no more work."""

    problem_type = "store-closed"


__all__ = [
    "AlreadyExists",
    "BlobCorrupt",
    "BlobHashMismatch",
    "BlobNotFound",
    "BlobStoreUnavailable",
    "InsufficientStorage",
    "InvalidBlobId",
    "InvalidUploadId",
    "InvalidValue",
    "NotFound",
    "ReplayedNonce",
    "SchemaTooNew",
    "StoreClosed",
    "UploadBusy",
    "UploadBytesLost",
    "UploadExpired",
    "UploadIncomplete",
    "UploadNotFound",
    "UploadOffsetMismatch",
    "UploadStateCorrupt",
    "ValueTooLarge",
    "shown",
]
