"""The data directory's filesystem fills up during an upload (a real size-limited tmpfs).

The whole data directory (SQLite database, blobs, upload sessions) lives on a
tmpfs of :data:`FS_BYTES`. A PATCH larger than the free space must be
refused with 507 ``insufficient-storage`` problem+json naming a denied entry;
none of its bytes may stay (the upload's offset is unchanged and the space is
given back), the server keeps serving, the upload can then be terminated, and
a smaller upload afterwards succeeds. The log verifies at the end.
"""

from __future__ import annotations

import os
import random
from collections.abc import AsyncIterator
from pathlib import Path

from exchange.client.upload import chunked, send_resumable
from tests.faults._tools import (
    TUS,
    case_head,
    check_acked_entries,
    deployment_with,
    new_case,
    patch,
    sha256_hex,
    tmpfs,
)
from tests.server_harness import FAST_RETRY, Deployment, expect_problem, run

MIB = 1024 * 1024
FS_BYTES = 24 * MIB


def _free_bytes(path: Path) -> int:
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


async def fill_the_disk(d: Deployment) -> None:
    big = random.Random(11).randbytes(32 * MIB)
    async with d.session("prosecutor") as pro, d.session("coordinator") as coord:
        case_id, _ = await new_case(d, pro, "coordinator")
        free_before = _free_bytes(d.data_dir)
        assert free_before < len(big), "the filesystem is not small enough for this test"
        handle = await pro.create_upload(case_id, len(big))
        # One byte acknowledged first, so "nothing partial" means the offset stays at 1.
        response = await patch(pro, handle.path, 0, big[:1])
        assert response.status == 204
        response.release()
        index = await expect_problem(await patch(pro, handle.path, 1, big[1:]), 507,
                                     "insufficient-storage")
        assert await pro.upload_offset(handle.path) == 1
        assert _free_bytes(d.data_dir) >= free_before - MIB, "the partial chunk kept its space"
        assert (d.data_dir / "uploads" / handle.upload_id).stat().st_size == 1
        listed = await coord.request("GET", f"/v1/cases/{case_id}/evidence")
        async with listed:
            assert (await listed.json())["evidence"] == []
        # The server is still up and answers; the upload can be terminated.
        response = await pro.request("DELETE", handle.path, headers=TUS)
        assert response.status == 204
        response.release()
        small = random.Random(12).randbytes(MIB)
        handle = await pro.create_upload(case_id, len(small))
        await send_resumable(pro, handle.path, len(small),
                             chunked(lambda s, e: _once(small[s:e]), len(small)), retry=FAST_RETRY)
        record = await pro.commit_upload(handle.path, sealed_manifest=b"m",
                                         ciphertext_sha256=sha256_hex(small), epoch=1,
                                         case_head=await case_head(d, pro, case_id))
        async with await coord.open_download(record["evidence_id"]) as download:
            assert await download.read() == small
    entries = await check_acked_entries(d, [])
    assert b'"reason":"insufficient-storage"' in entries[index]


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def test_disk_full_during_upload(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", FS_BYTES) as mount, \
            deployment_with(tmp_path, "sqlite", data_dir=mount / "data") as d:
        run(fill_the_disk(d))
        assert d.processes[0].proc.poll() is None
