"""Two ``exchange serve`` processes on one PostgreSQL and one Ceph RGW (issue 18).

Nothing of an upload lives in one process: an upload started on one process
is resumed and committed on the other, and both serve the evidence. A
process SIGKILLed in the middle of a PATCH body and an RGW SIGKILLed in the
middle of one (and an OSD SIGKILLed after a write) lose nothing that was
acknowledged: the other process (or the same one, once RGW is back) reports
a durable offset at least as far as the last acknowledged PATCH, the upload
completes there, and the download hashes right. While RGW is down, answers
that need it are 503 problem+json with ``Retry-After`` (never a 500, the
process stays up) and the server recovers without a restart when RGW returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path

from exchange.crypto.keys import ParticipantIdentity
from exchange.storage.s3_blobs import S3BlobStore
from exchange.transport.client import SignedSession
from tests import s3
from tests.faults._tools import (
    CONNECTION_ERRORS,
    PUBLIC_URL,
    TUS,
    case_head,
    new_case,
    patch,
    problem_slug,
    sha256_hex,
    slow_source,
)
from tests.server_harness import (
    CAST,
    Deployment,
    ServerProcess,
    drop_postgres,
    enrol,
    fresh_postgres,
    init_server,
    run,
)

MIB = 1024 * 1024
PREFIX = "osd-kill"


@contextlib.contextmanager
def on_s3(base: Path, processes: int) -> Iterator[Deployment]:
    """Serve processes sharing a PostgreSQL database and an S3 prefix (no data directory blobs)."""
    cluster = s3.cluster()
    account = s3.account()
    name, dsn = fresh_postgres()
    creds = base / "s3.credentials"
    creds.write_text(f"{account.access_key}\n{account.secret_key}\n")
    creds.chmod(0o600)
    location = s3.location()
    data_dir = base / "data"
    admin = ParticipantIdentity.generate("admin")
    log_vkey = init_server(data_dir, admin, database_url=dsn, extra_args=(
        "--blob-store", location.url, "--s3-endpoint", account.endpoint,
        "--s3-region", location.region, "--s3-credentials-file", str(creds)))
    assert cluster.account is not None
    procs: list[ServerProcess] = []
    deployment = Deployment(backend="postgres", data_dir=data_dir, database_url=dsn,
                            log_vkey=log_vkey, processes=procs, cast={"admin": admin},
                            public_url=PUBLIC_URL)
    try:
        for _ in range(processes):
            procs.append(start(deployment))
        run(_enrol(deployment))
        yield deployment
    finally:
        deployment.stop()
        drop_postgres(name)


def start(d: Deployment) -> ServerProcess:
    return ServerProcess(d.data_dir, database_url=d.database_url,
                         extra_args=("--public-url", PUBLIC_URL))


async def _enrol(d: Deployment) -> None:
    async with d.session("admin") as admin:
        for who, role in CAST.items():
            identity = ParticipantIdentity.generate(who)
            await enrol(admin, identity, role)
            d.cast[who] = identity


async def new_upload(pro: SignedSession, case_id: str, length: int) -> str:
    response = await pro.request("POST", f"/v1/cases/{case_id}/uploads",
                                 headers={**TUS, "Upload-Length": str(length)})
    async with response:
        assert response.status == 201, await response.text()
        return response.headers["Location"]


async def offset_of(session: SignedSession, path: str) -> int:
    response = await session.request("HEAD", path, headers=TUS)
    async with response:
        assert response.status == 200, response.status
        return int(response.headers["Upload-Offset"])


async def send(session: SignedSession, path: str, offset: int, data: bytes) -> int:
    response = await patch(session, path, offset, data)
    async with response:
        assert response.status == 204, await response.text()
        return int(response.headers["Upload-Offset"])


async def commit(d: Deployment, session: SignedSession, path: str, data: bytes,
                 case_id: str) -> str:
    record = await session.commit_upload(path, sealed_manifest=b"manifest",
                                         ciphertext_sha256=sha256_hex(data), epoch=1,
                                         case_head=await case_head(d, session, case_id))
    return str(record["evidence_id"])


async def downloads(d: Deployment, evidence_id: str) -> list[str]:
    """The SHA-256 of the evidence as each process serves it."""
    found = []
    for process in range(len(d.processes)):
        async with d.session("coordinator", process=process) as coord:
            download = await coord.open_download(evidence_id)
            async with download:
                assert download.status == 200
                found.append(sha256_hex(await download.read()))
    return found


async def killed_mid_patch(d: Deployment, pro: SignedSession, path: str, offset: int,
                           data: bytes, kill: object) -> None:
    """PATCH ``data`` slowly; call ``kill()`` halfway through the body; expect a failure."""
    assert callable(kill)
    fired = False

    def halfway(sent: int) -> None:
        nonlocal fired
        if sent >= len(data) // 2 and not fired:
            fired = True
            kill()

    with contextlib.suppress(*CONNECTION_ERRORS):
        response = await patch(pro, path, offset, data, source=slow_source(
            data, piece=256 * 1024, delay_s=0.01, on_piece=halfway))
        async with response:
            assert response.status in (204, 503), await response.text()
    assert fired


def test_upload_moves_between_processes_and_survives_kills(tmp_path: Path) -> None:
    data = os.urandom(14 * MIB + 4321)

    async def scenario(d: Deployment) -> None:
        async with d.session("prosecutor") as first, \
                d.session("prosecutor", process=1) as second:
            case_id, _ = await new_case(d, first, "coordinator")
            path = await new_upload(first, case_id, len(data))
            acked = await send(first, path, 0, data[:3 * MIB + 17])
            # Resumed on the other process: it knows the offset and takes the rest.
            assert await offset_of(second, path) == acked
            acked = await send(second, path, acked, data[acked:9 * MIB])
            # SIGKILL the first process in the middle of a PATCH body.
            victim = d.processes[0]
            await killed_mid_patch(d, first, path, acked, data[acked:12 * MIB],
                                   lambda: os.kill(victim.proc.pid, signal.SIGKILL))
            victim.proc.wait(30)
            victim.stop()
            durable = await offset_of(second, path)
            assert acked <= durable <= 12 * MIB
            # SIGKILL RGW in the middle of a PATCH body on the surviving process.
            cluster = s3.cluster()
            await killed_mid_patch(d, second, path, durable, data[durable:],
                                   lambda: cluster.stop_rgw(signal.SIGKILL))
            await asyncio.to_thread(cluster.start_rgw)
            durable2 = await offset_of(second, path)
            assert durable <= durable2 <= len(data)
            if durable2 < len(data):
                await send(second, path, durable2, data[durable2:])
            evidence_id = await commit(d, second, path, data, case_id)
        d.processes[0] = start(d)
        assert await downloads(d, evidence_id) == [sha256_hex(data)] * 2
        # Nothing of the evidence is on the machines: only in the bucket.
        assert not (d.data_dir / "blobs").exists() and not (d.data_dir / "uploads").exists()

    with on_s3(tmp_path, 2) as d:
        run(scenario(d))


def test_object_store_outage_answers_503_and_recovers(tmp_path: Path) -> None:
    data = os.urandom(300_000)

    async def scenario(d: Deployment) -> None:
        async with d.session("prosecutor") as pro, d.session("coordinator") as coord:
            case_id, _ = await new_case(d, pro, "coordinator")
            path = await new_upload(pro, case_id, len(data))
            await send(pro, path, 0, data[:1000])
            cluster = s3.cluster()
            await asyncio.to_thread(cluster.stop_rgw)
            try:
                response = await patch(pro, path, 1000, data[1000:2000])
                async with response:
                    assert response.status == 503, await response.text()
                    assert response.headers["Retry-After"].isdigit()
                    assert problem_slug(await response.json()) == "blob-store-unavailable"
            finally:
                await asyncio.to_thread(cluster.start_rgw)
            # The same process recovers by itself; nothing acknowledged was lost.
            assert await offset_of(pro, path) == 1000
            await send(pro, path, 1000, data[1000:])
            evidence_id = await commit(d, pro, path, data, case_id)
            async with await coord.open_download(evidence_id) as download:
                assert sha256_hex(await download.read()) == sha256_hex(data)
        assert d.processes[0].proc.poll() is None  # never crashed

    with on_s3(tmp_path, 1) as d:
        run(scenario(d))



def test_sigkilled_osd_keeps_every_acknowledged_blob() -> None:
    """BlueStore on a file keeps what RGW acknowledged when the OSD is SIGKILLed."""
    cluster = s3.cluster()
    data = os.urandom(3 * MIB + 7)

    async def put() -> str:
        store = await S3BlobStore.open(s3.location(PREFIX), s3.credentials())
        try:
            return (await store.put([data])).blob_id
        finally:
            await store.close()

    async def read(blob_id: str) -> bytes:
        store = await S3BlobStore.open(s3.location(PREFIX), s3.credentials())
        try:
            return b"".join([chunk async for chunk in await store.read(blob_id)])
        finally:
            await store.close()

    blob_id = run(put())
    cluster.kill_osd()
    cluster.start_osd()
    assert run(read(blob_id)) == data
