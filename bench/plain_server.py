"""The reference the transfer benchmarks compare against: a bare, unauthenticated aiohttp server.

``PUT /blob`` streams the body to ``DIR/plain.bin`` while hashing it (SHA-256) and fsyncs it —
what any careful upload endpoint must do at least; ``GET /blob`` serves that file back.
``GET /v1/cases`` answers a fixed small JSON body at once (no signature check, no database,
no log): the floor of one small request through aiohttp on this machine.
Used by ``bench/server.py`` and ``bench/e2e.py`` as a child process:

    python bench/plain_server.py DIR      # prints "plain: PORT" once listening
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
from pathlib import Path

from aiohttp import web

PIECE = 256 * 1024  # the socket read size our own server uses, so both read alike


async def _put(request: web.Request) -> web.Response:
    hasher = hashlib.sha256()
    fd = os.open(Path(request.app["dir"]) / "plain.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                 0o600)
    try:
        async for piece in request.content.iter_chunked(PIECE):
            hasher.update(piece)
            os.write(fd, piece)
        os.fsync(fd)
    finally:
        os.close(fd)
    return web.Response(text=hasher.hexdigest())


async def _small(request: web.Request) -> web.Response:
    return web.json_response({"cases": []})


async def _get(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(Path(request.app["dir"]) / "plain.bin")


def serve(directory: str) -> None:
    """Serve ``directory`` on a free loopback port until killed; print the port first."""
    app = web.Application(client_max_size=2**40)
    app["dir"] = directory
    app.router.add_put("/blob", _put)
    app.router.add_get("/blob", _get)
    app.router.add_get("/v1/cases", _small)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        print(f"plain: {runner.addresses[0][1]}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__":
    serve(sys.argv[1])
