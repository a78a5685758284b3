"""The download body receiver against a real loopback server (plain TCP and TLS).

The server is a raw asyncio server, so each test decides exactly which bytes
go on the wire and when: a body longer than its pieces, a server that stops
early, one that goes silent, one that sends more than its Content-Length,
codings the receiver must leave to aiohttp.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from exchange.client._body import AiohttpBody, BodyReceiver, Piece
from tests.support import self_signed_certificate

KIB = 1024
Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]


async def _read_head(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


@asynccontextmanager
async def _server(answer: Writer, context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Serve every request with ``answer``; yield the base URL."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await _read_head(reader)
            await answer(writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client hung up, or the test ended and the server with it

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"{'https' if context else 'http'}://127.0.0.1:{port}/"
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


def _head(length: int, extra: str = "") -> bytes:
    return (f"HTTP/1.1 200 OK\r\nContent-Length: {length}\r\n"
            f"Content-Type: application/octet-stream\r\n{extra}\r\n").encode()


def _sends(body: bytes, *, then: bytes = b"", close: bool = False) -> Writer:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(len(body)))
        for at in range(0, len(body), 300 * KIB):
            writer.write(body[at:at + 300 * KIB])
            await writer.drain()
        writer.write(then)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(30)
    return answer


async def _receive_all(receiver: BodyReceiver) -> tuple[bytes, list[int]]:
    out, sizes = bytearray(), []
    while piece := await receiver.next_piece():
        for part in piece:
            out += part
        sizes.append(sum(map(len, piece)))
        receiver.recycle(piece)
    return bytes(out), sizes


def _take(response: aiohttp.ClientResponse, **overrides: float) -> BodyReceiver | None:
    options = {"piece_bytes": 256 * KIB, "buffers": 3, "read_timeout_s": 5.0, **overrides}
    return BodyReceiver.take_over(response, piece_bytes=int(options["piece_bytes"]),
                                  buffers=int(options["buffers"]),
                                  read_timeout_s=options["read_timeout_s"])


async def _plain_body_arrives_whole(context: ssl.SSLContext | None,
                                    client_context: ssl.SSLContext | bool) -> None:
    body = os.urandom(3 * 1024 * KIB + 12345)
    async with _server(_sends(body), context) as url, aiohttp.ClientSession() as session, \
            session.get(url, ssl=client_context) as response:
        receiver = _take(response)
        assert receiver is not None
        try:
            got, sizes = await _receive_all(receiver)
        finally:
            receiver.close()
        assert got == body
        assert max(sizes) <= 256 * KIB  # pieces never exceed a buffer...
        assert len(sizes) >= len(body) // (256 * KIB)  # ...and are filled, not one per read
        assert response.connection is None or response.connection.transport is None or \
            response.connection.transport.is_closing()


def test_a_plain_body_arrives_whole_in_pieces_of_the_buffer_size() -> None:
    asyncio.run(_plain_body_arrives_whole(None, False))


def _tls_pair(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    cert_path, key_path = self_signed_certificate(tmp)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_a_body_over_tls_arrives_whole(tmp_path: Path) -> None:
    server, client = _tls_pair(tmp_path)
    asyncio.run(_plain_body_arrives_whole(server, client))


def test_reading_pauses_while_no_buffer_is_free_and_resumes_when_one_is() -> None:
    body = os.urandom(4 * 1024 * KIB)

    async def main() -> None:
        async with _server(_sends(body)) as url, aiohttp.ClientSession() as session, \
                session.get(url) as response:
            receiver = _take(response, buffers=2)
            assert receiver is not None
            try:
                held: list[Piece] = []
                for _ in range(3):  # what aiohttp had, then both buffers
                    held.append(await receiver.next_piece())
                await asyncio.sleep(0.3)
                stalled = receiver.received
                await asyncio.sleep(0.3)
                assert receiver.received == stalled  # nothing read with no buffer free
                assert stalled <= sum(map(len, held[0])) + 2 * 256 * KIB
                first = b"".join(bytes(p) for piece in held for p in piece)
                for piece in held:
                    receiver.recycle(piece)
                got, _ = await _receive_all(receiver)
                assert first + got == body
            finally:
                receiver.close()

    asyncio.run(main())


def test_a_server_that_closes_early_is_a_disconnection_naming_what_was_missing() -> None:
    body = os.urandom(1024 * KIB)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(len(body) + 1000) + body)
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _server(answer) as url, aiohttp.ClientSession() as session, \
                session.get(url) as response:
            receiver = _take(response)
            assert receiver is not None
            with pytest.raises(aiohttp.ServerDisconnectedError,
                               match="1000 bytes of the body still to come"):
                await _receive_all(receiver)
            receiver.close()

    asyncio.run(main())


def test_a_silent_server_is_a_timeout_after_the_read_timeout() -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(10 * 1024 * KIB) + b"x" * 1000)
        await writer.drain()
        await asyncio.sleep(30)

    async def main() -> None:
        async with _server(answer) as url, aiohttp.ClientSession() as session, \
                session.get(url) as response:
            receiver = _take(response, read_timeout_s=0.5)
            assert receiver is not None
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError, match=r"sent nothing for 0\.5 s"):
                await _receive_all(receiver)
            assert 0.4 <= loop.time() - started < 5
            receiver.close()

    asyncio.run(main())


def test_a_slow_server_that_keeps_sending_is_not_a_timeout() -> None:
    body = os.urandom(64 * KIB)

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(_head(len(body)))
        for at in range(0, len(body), 4 * KIB):  # 16 pieces, 0.1 s apart: 1.6 s in all
            writer.write(body[at:at + 4 * KIB])
            await writer.drain()
            await asyncio.sleep(0.1)
        await asyncio.sleep(30)

    async def main() -> None:
        async with _server(answer) as url, aiohttp.ClientSession() as session, \
                session.get(url) as response:
            # Shorter than the whole body, ten times a gap (a busy machine's stall is not
            # a silent server).
            receiver = _take(response, read_timeout_s=1.0)
            assert receiver is not None
            got, _ = await _receive_all(receiver)
            receiver.close()
            assert got == body

    asyncio.run(main())


def test_nothing_past_the_content_length_is_read() -> None:
    body = os.urandom(700 * KIB)

    async def main() -> None:
        async with _server(_sends(body, then=b"HTTP/1.1 200 OK\r\n" + b"!" * 5000)) as url, \
                aiohttp.ClientSession() as session, session.get(url) as response:
            receiver = _take(response)
            assert receiver is not None
            got, _ = await _receive_all(receiver)
            receiver.close()
            assert got == body

    asyncio.run(main())


@pytest.mark.parametrize("extra", ["Content-Encoding: gzip\r\n", "Transfer-Encoding: chunked\r\n"],
                         ids=["content-coding", "chunked"])
def test_a_coded_body_is_left_to_aiohttp(extra: str) -> None:
    async def answer(writer: asyncio.StreamWriter) -> None:
        if "chunked" in extra:
            writer.write(b"HTTP/1.1 200 OK\r\n" + extra.encode() + b"\r\n"
                         b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        else:
            import gzip  # noqa: PLC0415 - only here
            data = gzip.compress(b"hello world")
            writer.write(_head(len(data), extra) + data)
        await writer.drain()
        await asyncio.sleep(30)

    async def main() -> None:
        async with _server(answer) as url, aiohttp.ClientSession() as session, \
                session.get(url) as response:
            assert _take(response) is None
            body = AiohttpBody(response.content, piece_bytes=1024)
            got = b""
            while piece := await body.next_piece():
                got += b"".join(piece)
            assert got == b"hello world"

    asyncio.run(main())
