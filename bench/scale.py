"""Blob throughput on the filesystem and on S3 (Ceph RGW), against raw S3 with the same client.

Usage: .venv/bin/python bench/scale.py [--mib N] [--chunk-mib C] [--json]
       [--s3-endpoint URL --bucket NAME]   (credentials: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY)

What a server process does with evidence, at the blob-store interface (no
HTTP, no database, so the store is what is measured):

- upload: a resumable session of N MiB, appended in C MiB PATCH-sized chunks,
  then promoted to its content address (the SHA-256 check included);
- pull: the verifying full read a download streams.

The S3 figures are compared, in the same run and on the same bytes, with raw
``aiobotocore`` calls (the client library the store uses): one multipart
upload in parts of the store's part size, then one GET.
``s3_ratio_vs_boto3_raw`` is raw time / our time for upload plus pull (1.0:
no overhead). Without ``--s3-endpoint`` a throwaway single-node Ceph cluster
with RGW is started here (``exchange.storage.cephcluster``), which needs the
Debian packages ceph-mon, ceph-osd and radosgw.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exchange.storage._s3io import S3Bucket, S3Credentials, S3Location
from exchange.storage.blobs import BlobStore
from exchange.storage.cephcluster import CephCluster
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.s3_blobs import S3BlobStore
from exchange.storage.s3_uploads import PART_BYTES

MIB = 1024 * 1024


def _chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


async def _store_round(store: BlobStore, data: bytes, chunk: int) -> tuple[float, float]:
    """Return (upload seconds, pull seconds) of one upload session and one verified read."""
    began = time.perf_counter()
    state = await store.create_upload(length=len(data), expires_at=2**40)
    offset = 0
    for piece in _chunks(data, chunk):
        offset = await store.append(state.upload_id, offset, _pieces(piece))
    info = await store.promote(state.upload_id, hashlib.sha256(data).hexdigest())
    uploaded = time.perf_counter()
    got = 0
    async for part in await store.read(info.blob_id):
        got += len(part)
    pulled = time.perf_counter()
    assert got == len(data)
    await store.delete(info.blob_id)
    return uploaded - began, pulled - uploaded


async def _pieces(piece: bytes) -> AsyncIterator[bytes]:
    """A PATCH body as the server receives it: 64 KiB reads."""
    for i in range(0, len(piece), 64 * 1024):
        yield piece[i:i + 64 * 1024]


async def _raw_round(bucket: S3Bucket, data: bytes) -> tuple[float, float]:
    """Raw multipart PUT then GET of ``data`` with the same client; return the two times."""
    client, name = bucket.client, bucket.location.bucket
    key = bucket.key("bench-raw")
    began = time.perf_counter()
    mpu = (await client.create_multipart_upload(Bucket=name, Key=key))["UploadId"]
    parts: list[Any] = []
    for number, part in enumerate(_chunks(data, PART_BYTES), start=1):
        answer = await client.upload_part(Bucket=name, Key=key, UploadId=mpu,
                                          PartNumber=number, Body=part)
        parts.append({"PartNumber": number, "ETag": answer["ETag"]})
    await client.complete_multipart_upload(Bucket=name, Key=key, UploadId=mpu,
                                           MultipartUpload={"Parts": parts})
    uploaded = time.perf_counter()
    answer = await client.get_object(Bucket=name, Key=key)
    got = 0
    async with answer["Body"] as body:
        while chunk := await body.read(MIB):
            got += len(chunk)
    pulled = time.perf_counter()
    assert got == len(data)
    await client.delete_object(Bucket=name, Key=key)
    return uploaded - began, pulled - uploaded


async def measure(mib: int, chunk_mib: int, location: S3Location,
                  credentials: S3Credentials | None) -> dict[str, float]:
    """Run the three rounds (fs, S3 store, raw S3) once each; return the figures."""
    data = os.urandom(mib * MIB)
    chunk = chunk_mib * MIB
    with tempfile.TemporaryDirectory(prefix="exchange-bench-") as tmp:
        fs_up, fs_pull = await _store_round(FsBlobStore(Path(tmp)), data, chunk)
    bucket = await S3Bucket.open(location, credentials)
    try:
        await bucket.ensure_bucket()
        raw_up, raw_pull = await _raw_round(bucket, data)
        s3_up, s3_pull = await _store_round(S3BlobStore(bucket), data, chunk)
    finally:
        await bucket.close()
    return {
        "mib": mib, "chunk_mib": chunk_mib,
        "upload_mib_s_fs": round(mib / fs_up, 1), "pull_mib_s_fs": round(mib / fs_pull, 1),
        "upload_mib_s_s3": round(mib / s3_up, 1), "pull_mib_s_s3": round(mib / s3_pull, 1),
        "upload_mib_s_s3_raw": round(mib / raw_up, 1),
        "pull_mib_s_s3_raw": round(mib / raw_pull, 1),
        "s3_ratio_vs_boto3_raw": round((raw_up + raw_pull) / (s3_up + s3_pull), 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Blob upload/pull throughput: filesystem, S3 store, raw S3 (same client).",
        epilog="example: .venv/bin/python bench/scale.py --mib 256 --json",
    )
    parser.add_argument("--mib", type=int, default=256, help="blob size in MiB (default 256)")
    parser.add_argument("--chunk-mib", type=int, default=16,
                        help="bytes per append, like one PATCH (default 16)")
    parser.add_argument("--s3-endpoint", help="use this S3 endpoint instead of a throwaway Ceph")
    parser.add_argument("--bucket", default="exchange-bench", help="bucket (created if missing)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        if args.s3_endpoint:
            endpoint, credentials = args.s3_endpoint, S3Credentials.load()
        else:
            cluster = CephCluster()
            account = cluster.start()
            stack.callback(cluster.stop)
            endpoint = account.endpoint
            credentials = S3Credentials(account.access_key, account.secret_key)
        location = S3Location.parse(f"s3://{args.bucket}/bench", endpoint=endpoint,
                                    region="default")
        figures = asyncio.run(measure(args.mib, args.chunk_mib, location, credentials))
    if args.json:
        print(json.dumps(figures, sort_keys=True))
    else:
        for key, value in figures.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
