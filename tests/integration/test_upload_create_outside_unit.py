"""A new upload's files are made before its unit of work, so a slow disk holds no one else.

Units of work are group-committed: while one unit waits, every unit queued
behind it waits too. Creating an upload's blob-side half (an empty file and
its state, each fsynced; on S3 a multipart upload) waits for the disk or the
network, and under the 100-client load that wait inside the unit was the
longest part of the small requests' tail (issue 17). Here the server's app runs
in this process on the real file blob store, whose upload creation a gate holds
back, and a real client asks: a signed, logged listing answers while a creation
is held, and the creation, once let go, is refused (the administrator is no
case member) with its denied entry and leaves no file behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from exchange.config import ServerConfig
from exchange.crypto.keys import ParticipantIdentity
from exchange.service.core import Service
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.client import SignedSession
from exchange.transport.server import checkpoint_signer, load_log_signer
from exchange.wire.tus import TUS_VERSION, UploadState
from tests.inprocess import serving
from tests.server_harness import ORIGIN, init_server, run
from tests.unit.storage.helpers import LIMIT_S


class HeldCreation(FsBlobStore):
    """The file blob store, whose upload creation waits until the test opens the gate."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir)
        self.reached = asyncio.Event()
        self.gate = asyncio.Event()
        self.created: list[str] = []

    async def create_upload(self, *, length: int, expires_at: int,
                            upload_id: str | None = None) -> UploadState:
        self.reached.set()
        await self.gate.wait()
        state = await super().create_upload(length=length, expires_at=expires_at,
                                            upload_id=upload_id)
        self.created.append(state.upload_id)
        return state


async def _create_while_held(url: str, admin: ParticipantIdentity,
                             blobs: HeldCreation) -> int:
    """Ask for an upload, and while its creation is held, for a logged listing.

    Return the audit index of the creation's refusal.
    """
    async with SignedSession(url, admin) as signed:
        async def post_upload() -> tuple[int, str, str]:
            async with await signed.request(
                "POST", "/v1/cases/c-held/uploads",
                headers={"Tus-Resumable": TUS_VERSION, "Upload-Length": "5"},
            ) as response:
                body = await response.json(content_type=None)
                return (response.status, body.get("type", ""),
                        response.headers.get("Exchange-Audit-Index", ""))

        creation = asyncio.create_task(post_upload())
        async with asyncio.timeout(LIMIT_S):
            await blobs.reached.wait()
        # The creation waits at the blob store: a logged listing must not wait for it.
        async with asyncio.timeout(LIMIT_S):
            async with await signed.request("GET", "/v1/participants") as listing:
                await listing.read()
                assert listing.status == 200
        assert not creation.done()
        blobs.gate.set()
        async with asyncio.timeout(LIMIT_S):
            status, problem, index = await creation
    assert status == 403 and problem.endswith("/forbidden"), (status, problem)
    return int(index)


def test_a_held_upload_creation_holds_no_other_request(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin = ParticipantIdentity.generate("admin")
    init_server(data, admin)

    async def scenario() -> None:
        store = await SqliteStore.open(data, signer=checkpoint_signer(load_log_signer(data)))
        blobs = HeldCreation(data)
        service = Service(store=store, blobs=blobs,
                          config=ServerConfig(data_dir=data, origin=ORIGIN))
        try:
            async with serving(service) as url:
                try:
                    index = await _create_while_held(url, admin, blobs)
                finally:
                    blobs.gate.set()
            entries = await store.audit_entries(index, index + 1)
        finally:
            await store.close()
        assert b'"outcome":"denied"' in entries[0].entry
        assert b'"action":"upload.create"' in entries[0].entry
        # The half made before the unit was removed with the refusal.
        assert len(blobs.created) == 1
        assert [p.name for p in (data / "uploads").iterdir()
                if p.name.startswith(blobs.created[0])] == []

    run(scenario())
