"""Raw HTTP for the attack tests: bytes on a socket, and requests sent exactly as given."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

__all__ = ["raw_request", "send"]


async def raw_request(url: str, data: bytes, *, timeout_s: float = 10.0) -> bytes:
    """Write ``data`` to the server's socket; return everything it answers until it closes."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(data)
        await writer.drain()
        received = b""
        try:
            while chunk := await asyncio.wait_for(reader.read(65536), timeout_s):
                received += chunk
                if b"\r\n\r\n" in received and received[9:10] == b"4":
                    break
        except (ConnectionError, TimeoutError):
            pass
        return received
    finally:
        writer.close()


async def send(base_url: str, method: str, path: str, headers: dict[str, str],
               body: object = None) -> tuple[int, dict[str, str], bytes]:
    """Send exactly these headers and body to ``path`` (already encoded, never re-quoted).

    ``body`` is anything aiohttp accepts as ``data`` (bytes from ``SignedSession.prepare``).
    """
    async with aiohttp.ClientSession() as http, http.request(
        method, URL(base_url + path, encoded=True), headers=headers, data=body,
        skip_auto_headers=("Content-Type",), allow_redirects=False,
    ) as response:
        return response.status, dict(response.headers), await response.read()
