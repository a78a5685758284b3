"""Over real HTTP, no answer leaves the server before what it depends on is on disk.

The embedded SQLite store commits without waiting for the disk and flushes on
flusher threads (``exchange.storage.sqlite_store``), so between a batch's COMMIT
and its flush the server holds state a power cut could erase. Here the server's
app runs in this process on a store whose flushes a gate holds back, and a real
client asks: a signed, logged listing (the participants) gets no answer while its unit's flush is
held, and neither does an unsigned readiness check that read the database after
that commit (``exchange.storage.durability``). Both answer once the flush ends.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp

from exchange.config import ServerConfig
from exchange.crypto.keys import ParticipantIdentity
from exchange.service.core import Service
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.client import SignedSession
from exchange.transport.server import checkpoint_signer, load_log_signer
from tests.inprocess import serving
from tests.server_harness import ORIGIN, init_server, run
from tests.unit.storage.helpers import LIMIT_S, GatedFlush


async def _status(session: aiohttp.ClientSession, url: str,
                  signed: SignedSession | None = None) -> int:
    if signed is not None:
        async with await signed.request("GET", "/v1/participants") as response:
            await response.read()
            return response.status
    async with session.get(url) as response:
        await response.read()
        return response.status


async def _ask(url: str, admin: ParticipantIdentity, gate: GatedFlush) -> None:
    async with aiohttp.ClientSession() as http, SignedSession(url, admin) as signed:
        # Nothing unflushed yet: the readiness check answers at once.
        async with asyncio.timeout(LIMIT_S):
            assert await _status(http, url + "/v1/ready") == 200
        listing = asyncio.create_task(_status(http, url, signed))
        await gate.reached()  # the listing's work committed; its flush is held
        ready = asyncio.create_task(_status(http, url + "/v1/ready"))
        await asyncio.sleep(0.3)
        assert not listing.done(), "a logged answer left before its entry was flushed"
        assert not ready.done(), "an answer left before what it read was flushed"
        gate.open()
        async with asyncio.timeout(LIMIT_S):
            assert await asyncio.gather(listing, ready) == [200, 200]


def test_answers_wait_for_the_flush_of_what_they_depend_on(tmp_path: Path) -> None:
    data = tmp_path / "data"
    admin = ParticipantIdentity.generate("admin")
    init_server(data, admin)

    async def scenario() -> None:
        gate = GatedFlush()
        store = await SqliteStore.open(
            data, signer=checkpoint_signer(load_log_signer(data)), flush=gate)
        service = Service(store=store, blobs=FsBlobStore(data),
                          config=ServerConfig(data_dir=data, origin=ORIGIN))
        try:
            async with serving(service) as url:
                try:
                    await _ask(url, admin, gate)
                finally:
                    gate.open()  # before the server stops: it waits for the flush
        finally:
            await store.close()

    run(scenario())
