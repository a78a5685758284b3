"""A download's body, received from the socket straight into a few reused buffers.

Theory of operation. aiohttp parses a response body in ``data_received``:
every socket read (at most 256 KiB) becomes a fresh ``bytes`` object that goes
through its HTTP parser into a ``StreamReader``, and its read timeout is
re-armed for each one. For a pull that was about a second of event-loop CPU
per GiB on the test machine, on the same core that decrypts (issue 17).

Once a response's headers are in and its body is plain (a Content-Length, no
transfer or content coding), :meth:`BodyReceiver.take_over` hands the rest of
the body to a ``BufferedProtocol`` of its own (``transport.set_protocol``, the
asyncio API for this): the kernel copies the body into ``piece_bytes``
buffers, which the caller gives back (:meth:`BodyReceiver.recycle`) once its
stages are done with them. Reading pauses while no buffer is free, so memory
stays at ``buffers`` × ``piece_bytes`` whatever the file's size.

It never asks the socket for a byte past the Content-Length, and the
connection is closed afterwards (:meth:`BodyReceiver.close`), never reused:
aiohttp's parser did not see the body's end. A connection that ends early is
``aiohttp.ServerDisconnectedError``; a server silent for ``read_timeout_s`` while the
caller waits for it is a ``TimeoutError`` (aiohttp's ``sock_read``, which no
longer runs). Both are what the caller retries with a Range request.

:class:`AiohttpBody` reads a body that cannot be taken over (chunked, coded,
or already complete) through aiohttp as before.
"""

from __future__ import annotations

import asyncio
import collections

import aiohttp

__all__ = ["AiohttpBody", "BodyReceiver", "Piece"]

Piece = list[bytes | memoryview]


class BodyReceiver(asyncio.BufferedProtocol):
    """The rest of one response body, in pieces of ``piece_bytes`` (module notes)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, length: int, *, piece_bytes: int,
                 buffers: int, read_timeout_s: float) -> None:
        self._loop = loop
        self._left = length  # body bytes the socket still owes
        self._pool = [bytearray(piece_bytes) for _ in range(buffers)]
        self._free = list(self._pool)
        self._filling: bytearray | None = None
        self._filled = 0
        self._ready: collections.deque[Piece] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self._timeout_s = read_timeout_s
        self._heard = loop.time()  # when the server last sent something
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self.received = 0

    @classmethod
    def take_over(cls, response: aiohttp.ClientResponse, *, piece_bytes: int, buffers: int,
                  read_timeout_s: float) -> BodyReceiver | None:
        """Take the rest of ``response``'s body from aiohttp, or None if it cannot be.

        Bytes aiohttp already parsed come first, as one piece of their own.
        """
        length = response.content_length
        connection = response.connection
        if length is None or connection is None or "Transfer-Encoding" in response.headers \
                or response.headers.get("Content-Encoding", "identity") != "identity":
            return None
        transport, handler = connection.transport, connection.protocol
        if transport is None or handler is None or transport.is_closing():
            return None
        loop = asyncio.get_running_loop()
        # Everything below runs without an await: no byte reaches aiohttp meanwhile.
        already = response.content.read_nowait(-1)
        receiver = cls(loop, length - len(already), piece_bytes=piece_bytes, buffers=buffers,
                       read_timeout_s=read_timeout_s)
        if already:
            receiver._ready.append([already])
            receiver.received = len(already)
        handler.pause_reading()  # pauses the transport and stops aiohttp's read timeout
        assert isinstance(transport, asyncio.Transport)
        receiver._transport = transport
        transport.set_protocol(receiver)
        if receiver._left:
            transport.resume_reading()
        return receiver

    # -- asyncio.BufferedProtocol -------------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._filling is None:
            self._filling, self._filled = self._free.pop(), 0
        room = min(len(self._filling) - self._filled, self._left)
        return memoryview(self._filling)[self._filled:self._filled + room]

    def buffer_updated(self, nbytes: int) -> None:
        assert self._filling is not None
        self._filled += nbytes
        self._left -= nbytes
        self.received += nbytes
        self._heard = self._loop.time()
        if self._filled == len(self._filling) or not self._left:
            self._ready.append([memoryview(self._filling)[:self._filled]])
            self._filling = None
            if not self._left or not self._free:
                self._pause()
            self._wake()

    def eof_received(self) -> bool:
        return False  # the transport closes; connection_lost says how much was missing

    def connection_lost(self, exc: Exception | None) -> None:
        if self._left and self._error is None:
            self._error = aiohttp.ServerDisconnectedError(
                f"the server closed the connection with {self._left} bytes of the body "
                "still to come")
            if exc is not None:
                self._error.__cause__ = exc
        self._transport = None
        self._wake()

    # -- the caller's side --------------------------------------------------------------

    async def next_piece(self) -> Piece:
        """Return the next piece of the body ([] at its end); raise what ended it early."""
        while not self._ready:
            if self._error is not None:
                raise self._error
            if not self._left:
                return []
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout_at(self._heard + self._timeout_s):
                    await self._waiter
            except TimeoutError:
                if self._loop.time() - self._heard >= self._timeout_s and not self._ready:
                    raise TimeoutError(f"the server sent nothing for {self._timeout_s:g} s "
                                       "during the download") from None
            finally:
                self._waiter = None
        return self._ready.popleft()

    def recycle(self, piece: Piece) -> None:
        """``piece`` is no longer used: its buffer may receive again."""
        for part in piece:
            if isinstance(part, memoryview) and any(part.obj is b for b in self._pool):
                self._free.append(part.obj)  # type: ignore[arg-type]
        if self._paused and self._free and self._left:
            self._paused = False
            self._heard = self._loop.time()  # the pause was ours, not the server's
            if self._transport is not None:
                self._transport.resume_reading()

    def close(self) -> None:
        """Close the connection (it is never reused: aiohttp's parser is behind)."""
        if self._transport is not None:
            self._transport.close()

    def _pause(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class AiohttpBody:
    """A body read through aiohttp, in pieces of about ``piece_bytes`` (buffers as received).

    The buffers are not joined: joining (what ``iter_chunked`` does) copied every
    byte once more on the event-loop thread (issue 17).
    """

    def __init__(self, content: aiohttp.StreamReader, *, piece_bytes: int) -> None:
        self._content = content
        self._piece_bytes = piece_bytes

    async def next_piece(self) -> Piece:
        """Return the next ``piece_bytes`` or more of the body ([] at its end)."""
        piece: Piece = []
        size = 0
        while size < self._piece_bytes:
            data, _ = await self._content.readchunk()
            if data:
                piece.append(data)
                size += len(data)
            elif self._content.at_eof():
                break
        return piece

    def recycle(self, piece: Piece) -> None:
        """Nothing to give back: aiohttp made each buffer fresh."""

    def close(self) -> None:
        """aiohttp closes or reuses the connection when the response is released."""
