"""exchange.storage: content-addressed blob store and SQLite/PostgreSQL metadata stores.

DESIGN.md §8. Callers use the ``BlobStore`` and ``MetadataStore`` protocols;
``FsBlobStore``, ``SqliteStore`` and ``PostgresStore`` are the implementations.
"""

from exchange.storage.blobs import BlobId, BlobInfo, BlobStore, UploadId, UploadState
from exchange.storage.errors import (
    AlreadyExists,
    BlobCorrupt,
    BlobHashMismatch,
    BlobNotFound,
    InvalidBlobId,
    InvalidUploadId,
    InvalidValue,
    NotFound,
    ReplayedNonce,
    SchemaTooNew,
    StoreClosed,
    UploadExpired,
    UploadIncomplete,
    UploadNotFound,
    UploadOffsetMismatch,
    ValueTooLarge,
)
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.metadata import (
    AppendedEntry,
    Case,
    CheckpointSigner,
    EntryFactory,
    Envelope,
    EvidenceRecord,
    KeyEpoch,
    Membership,
    MetadataStore,
    Participant,
    ParticipantStatus,
    StoredCheckpoint,
    StoredEntry,
    Transaction,
    UploadSession,
)
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore

__all__ = [
    "AlreadyExists", "AppendedEntry", "BlobCorrupt", "BlobHashMismatch", "BlobId", "BlobInfo",
    "BlobNotFound", "BlobStore", "Case", "CheckpointSigner", "EntryFactory", "Envelope",
    "EvidenceRecord", "FsBlobStore", "InvalidBlobId", "InvalidUploadId", "InvalidValue",
    "KeyEpoch", "Membership", "MetadataStore", "NotFound", "Participant", "ParticipantStatus",
    "PostgresStore", "ReplayedNonce", "SchemaTooNew", "SqliteStore", "StoreClosed",
    "StoredCheckpoint", "StoredEntry", "Transaction", "UploadExpired", "UploadId",
    "UploadIncomplete", "UploadNotFound", "UploadOffsetMismatch", "UploadSession",
    "UploadState", "ValueTooLarge",
]
