"""Open the blob store a server is configured with: the data directory, or an S3 bucket.

One place decides, so ``serve``, ``server init`` and the benchmarks agree.
"""

from __future__ import annotations

from pathlib import Path

from exchange.storage._s3io import S3Credentials, S3Location
from exchange.storage.blobs import BlobStore
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.s3_blobs import S3BlobStore


async def open_blob_store(
    data_dir: Path, blob_store: str | None = None, *, s3_endpoint: str | None = None,
    s3_region: str | None = None, s3_credentials_file: Path | None = None,
) -> BlobStore:
    """Return the filesystem store under ``data_dir``, or the S3 store at ``blob_store``.

    S3 credentials come from ``s3_credentials_file`` or the environment
    (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``), never from a flag.
    """
    if blob_store is None:
        return FsBlobStore(data_dir)
    location = S3Location.parse(blob_store, endpoint=s3_endpoint, region=s3_region)
    return await S3BlobStore.open(location, S3Credentials.load(s3_credentials_file))


async def close_blob_store(store: BlobStore) -> None:
    """Release the store's connections (the filesystem store holds none)."""
    if isinstance(store, S3BlobStore):
        await store.close()


__all__ = ["close_blob_store", "open_blob_store"]
