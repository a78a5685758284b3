"""A service's app served over real HTTP on loopback, inside the test's own event loop.

For tests that hold a part of the server (a flush, a blob store's step) at a
gate of their own while a real client asks: the server must then run in the
test's process, on the store and blob store the test built.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from exchange.service.core import Service
from exchange.transport.app import build_app
from exchange.transport.routing import BASE_URL_KEY

__all__ = ["serving"]


@contextlib.asynccontextmanager
async def serving(service: Service) -> AsyncIterator[str]:
    """Serve ``service`` on 127.0.0.1 (a free port) until the block ends; yield its URL.

    The URL is also the public one signatures are made for.
    """
    app = build_app(service, base_url="http://127.0.0.1:1")
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        app[BASE_URL_KEY][0] = url
        yield url
    finally:
        await runner.cleanup()
