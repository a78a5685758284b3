"""Upload streaming: the age ciphertext is made twice from the plaintext, to hash and to send.

Theory of operation. Each tus PATCH is signed with the RFC 9530 Content-Digest
of its bytes, so a PATCH's digest must be known before its first byte leaves.
Buffering whole PATCHes would cost their size in memory, so the ciphertext is
regenerated instead (``_agestream.ResumableAge`` is deterministic):

* :class:`Hasher` (a thread) reads the plaintext, hashes it, encrypts it and
  hands the ciphertext to a stage thread that hashes all of it (the
  manifest's ``ciphertext_sha256``, the blob address). Each planned PATCH is
  signed with the SHA-256 of the ciphertext from 0 through its end (the
  ``Exchange-Prefix-Digest`` header), a copy of that one hash's state at the
  PATCH's end, so every ciphertext byte is hashed once (the server checks the
  same running hash; see docs/hashing.md). A server process that did not hash
  the earlier bytes asks for a Content-Digest instead, which
  ``exchange.client.upload`` computes for that PATCH by regenerating its bytes.
  hashlib and pyca release the GIL, so the two threads run on both cores.
  It stays at most ``lead_bytes`` ahead of what the server acknowledged, so
  memory and page cache stay bounded.
* :class:`Sender` (a thread) reads and encrypts the plaintext again from the
  start, skips what the server has, and queues the rest for the event loop in
  buffers reused only once no view of them is left (a transport may keep what
  it was handed; :class:`_SendBuffers`).

Encrypting twice costs a ChaCha20-Poly1305 pass (several GB/s); it buys PATCHes
of 128 MiB, so the per-PATCH costs (signature, fsync, audit entry, round trip)
are paid a few times per GiB instead of dozens. PATCH boundaries are planned
once from the starting offset (:func:`plan_patches`); a retry must resume at a
planned start, which is where a server's offset always is (a PATCH is
all-or-nothing).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exchange.crypto.resumable import ResumableAge, feed_scratch_size

__all__ = ["Hashed", "Hasher", "Sender", "Stopped", "plan_patches"]

_READ_BYTES = 2 * 1024 * 1024  # 32 age chunks per read: the crypto pool works in parallel
_HASH_POOL = 4  # ciphertext buffers between the hasher and its stages
_SEND_DEPTH = 4  # encrypted reads queued for the event loop (about 8 MiB)

Piece = bytes | memoryview
Buffer = bytes | bytearray | memoryview


class Stopped(Exception):
    """A producer thread was told to stop."""


@dataclass(frozen=True, slots=True)
class Hashed:
    """What the hashing pass found: both SHA-256 digests and both sizes."""

    plaintext_sha256: str
    ciphertext_sha256: str
    plaintext_size: int
    produced: int


def plan_patches(offset: int, length: int, *, first_bytes: int,
                 max_bytes: int) -> list[tuple[int, int]]:
    """Return the PATCH ranges ``[start, end)`` covering ``[offset, length)``.

    Sizes start at ``first_bytes`` and double up to ``max_bytes``, so the first
    byte leaves soon and later PATCHes are large.
    """
    if first_bytes < 1 or max_bytes < 1:
        raise ValueError("patch sizes must be positive")
    out: list[tuple[int, int]] = []
    size = min(first_bytes, max_bytes)
    while offset < length:
        end = min(length, offset + size)
        out.append((offset, end))
        offset = end
        size = min(max_bytes, size * 2)
    return out


def _read_into(fd: int, buffer: bytearray, position: int) -> int:
    return os.preadv(fd, [buffer], position)


class Hasher(threading.Thread):
    """Hashes plaintext and ciphertext; publishes each PATCH's prefix digest (module notes)."""

    def __init__(self, fd: int, age: ResumableAge, patches: list[tuple[int, int]],
                 *, lead_bytes: int | None) -> None:
        super().__init__(name="exchange-upload-hash", daemon=True)
        self._fd = fd
        self._age = age
        self._patches = patches
        self._lead = lead_bytes
        self._cond = threading.Condition()
        self._digests: dict[int, tuple[int, str]] = {}
        self._acked = patches[0][0] if patches else 0
        self._halted = False
        self._error: BaseException | None = None
        self.result: Hashed | None = None
        self._stages = [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
                        for name in ("upload-hash-cipher",)]
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_HASH_POOL):
            self._free.put(bytearray(feed_scratch_size(_READ_BYTES)))

    # -- called from the event loop (through threads) ---------------------------------

    def digest_for(self, start: int) -> tuple[int, str]:
        """Block until the PATCH starting at ``start`` is hashed; return (end, digest value).

        Raises ``KeyError`` if no planned PATCH starts there, or the hashing error.
        """
        if not any(s == start for s, _ in self._patches):
            raise KeyError(start)
        with self._cond:
            while start not in self._digests:
                if self._error is not None:
                    raise self._error
                if self._halted:
                    raise Stopped
                self._cond.wait()
            return self._digests[start]

    def acknowledge(self, offset: int) -> None:
        """The server holds ``offset`` bytes: the hasher may run further ahead."""
        with self._cond:
            self._acked = max(self._acked, offset)
            self._cond.notify_all()

    def finish(self) -> Hashed:
        """Block until the whole file is hashed; return the result (or raise its error)."""
        self.join()
        if self._error is not None:
            raise self._error
        assert self.result is not None
        return self.result

    def stop(self) -> None:
        """Stop at the next step and wait for the thread and its stages."""
        with self._cond:
            self._halted = True
            self._cond.notify_all()
        if self.is_alive():
            self.join()

    # -- the thread ---------------------------------------------------------------------

    def run(self) -> None:
        try:
            result = self._produce()
        except BaseException as err:  # handed to the waiters
            with self._cond:
                self._error = err if not isinstance(err, Stopped) else None
                self._halted = True
                self._cond.notify_all()
        else:
            with self._cond:
                self.result = result
                self._cond.notify_all()
        finally:
            for stage in self._stages:
                stage.shutdown(wait=True)

    def _wait_for_room(self, produced: int) -> None:
        with self._cond:
            while not self._halted and self._lead is not None and \
                    produced - self._acked > self._lead:
                self._cond.wait()
            if self._halted:
                raise Stopped

    def _produce(self) -> Hashed:
        plain = hashlib.sha256()
        cipher_hash = _CipherHasher(self._patches, self._publish)
        (stage,) = self._stages
        pending: list[concurrent.futures.Future[None]] = []

        def hand_on(buffer: bytearray | None, items: list[Piece]) -> None:
            def release(_: object) -> None:
                if buffer is not None:
                    self._free.put(buffer)

            future = stage.submit(cipher_hash.update_all, items)
            future.add_done_callback(release)
            pending.append(future)
            # Surface stage errors early, and keep the list short.
            while pending and pending[0].done():
                pending.pop(0).result()

        stream = self._age.stream()
        hand_on(None, [self._age.header])
        produced = len(self._age.header)
        read = bytearray(_READ_BYTES)
        size = 0
        while True:
            self._wait_for_room(produced)
            n = _read_into(self._fd, read, size)
            if not n:
                break
            view = memoryview(read)[:n]
            plain.update(view)
            scratch = self._take()
            items, collect = _collector(scratch)
            stream.feed(view, collect, scratch=scratch)
            produced += sum(len(i) for i in items)
            hand_on(scratch, items)
            size += n
        last = stream.finalize()
        hand_on(None, [last])
        produced += len(last)
        for future in pending:
            future.result()
        cipher_hash.check_complete()
        return Hashed(plain.hexdigest(), cipher_hash.whole.hexdigest(), size, produced)

    def _take(self) -> bytearray:
        while True:
            with contextlib.suppress(queue.Empty):
                return self._free.get(timeout=0.1)
            if self._halted:
                raise Stopped

    def _publish(self, start: int, end: int, digest: str) -> None:
        with self._cond:
            self._digests[start] = (end, digest)
            self._cond.notify_all()


def _collector(scratch: bytearray) -> tuple[list[Piece], Callable[[Buffer], None]]:
    """Return a list and a sink appending to it: views of ``scratch`` are kept (valid
    until it is reused), anything else is copied (valid only during the call)."""
    items: list[Piece] = []

    def collect(piece: Buffer) -> None:
        view = memoryview(piece)
        items.append(view if view.obj is scratch else bytes(piece))

    return items, collect


class _CipherHasher:
    """Hashes the whole ciphertext and publishes each planned PATCH's prefix digest.

    A PATCH is signed with the SHA-256 of the ciphertext from 0 through its
    end (``Exchange-Prefix-Digest``), which is a copy of the whole hash's state
    there: every byte is hashed once (one stage thread).
    """

    def __init__(self, patches: list[tuple[int, int]], publish: Any) -> None:
        self.whole = hashlib.sha256()
        self._patches = patches
        self._publish = publish
        self._index = 0
        self._position = 0

    def update_all(self, items: list[Piece]) -> None:
        for item in items:
            self._update(memoryview(item).cast("B"))

    def _update(self, view: memoryview) -> None:
        while len(view):
            if self._index == len(self._patches):  # past the planned PATCHes
                self.whole.update(view)
                self._position += len(view)
                return
            start, end = self._patches[self._index]
            take = min(len(view), end - self._position)
            self.whole.update(view[:take])
            view, self._position = view[take:], self._position + take
            if self._position == end:
                self._publish(start, end, _digest_value(self.whole.copy().digest()))
                self._index += 1

    def check_complete(self) -> None:
        if self._index != len(self._patches):
            raise RuntimeError(f"the file ended at {self._position} bytes of ciphertext, "
                               "before its planned upload length")


def _digest_value(sha256: bytes) -> str:
    return "sha-256=:" + base64.b64encode(sha256).decode("ascii") + ":"


class _SendBuffers:
    """Output buffers for the sender, each reused only once nothing still looks into it.

    What the sender hands out may be kept by the transport after it was
    written (a TLS transport, or a plain one from Python 3.12 on, queues the
    views it could not send at once), so a buffer must not be overwritten
    while any view of it lives. A ``bytearray`` refuses to change size while a
    ``memoryview`` of it exists (``BufferError``), which is the exact test: a
    buffer that can grow by one byte is free. A new buffer was allocated for
    every 2 MiB read before, and zeroing and faulting in that fresh memory cost
    about 4 % of an upload's client CPU on one core (``perf``, issue 17).
    """

    _KEPT = _SEND_DEPTH + 4  # the queue, the piece being sent, what the transport holds

    def __init__(self) -> None:
        self._pool: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        """Return a buffer of at least ``size`` bytes that no view looks into."""
        for buffer in self._pool:
            if len(buffer) >= size and _unviewed(buffer):
                return buffer
        buffer = bytearray(size)
        if len(self._pool) < self._KEPT:
            self._pool.append(buffer)
        return buffer


def _unviewed(buffer: bytearray) -> bool:
    """Whether no ``memoryview`` of ``buffer`` exists (it may then be resized, and reused)."""
    try:
        buffer.append(0)
    except BufferError:
        return False
    del buffer[-1]
    return True


class Sender(threading.Thread):
    """Regenerates the ciphertext from ``start`` on and queues it for the event loop.

    The thread queues lists of pieces, then None at the end (or the error it
    met); :meth:`next_piece` hands them out on the loop. At most
    ``_SEND_DEPTH`` lists wait in the queue.
    """

    def __init__(self, fd: int, age: ResumableAge, start: int,
                 loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(name="exchange-upload-send", daemon=True)
        self._fd = fd
        self._age = age
        self._start = start
        self._loop = loop
        self._queue: asyncio.Queue[list[Piece] | BaseException | None] = asyncio.Queue()
        self._room = threading.Semaphore(_SEND_DEPTH)
        self._stopping = threading.Event()
        self._current: list[Piece] = []
        self._ended = False
        self.position = start  # the ciphertext offset of the next byte handed out

    def run(self) -> None:
        try:
            self._produce()
            self._put(None)
        except Stopped:
            pass
        except BaseException as err:  # handed to the event loop
            with contextlib.suppress(Stopped, RuntimeError):
                self._put(err)

    def _put(self, item: list[Piece] | BaseException | None) -> None:
        while not self._room.acquire(timeout=0.1):
            if self._stopping.is_set():
                raise Stopped
        self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _produce(self) -> None:
        position = 0

        def queue_out(pieces: list[Piece]) -> None:
            nonlocal position
            out: list[Piece] = []
            for piece in pieces:
                n = len(piece)
                if position + n > self._start:
                    skip = max(0, self._start - position)
                    out.append(memoryview(piece)[skip:] if skip else piece)
                position += n
            if out:
                self._put(out)

        buffers = _SendBuffers()
        stream = self._age.stream()
        queue_out([self._age.header])
        read = bytearray(_READ_BYTES)
        size = 0
        while n := _read_into(self._fd, read, size):
            if self._stopping.is_set():
                raise Stopped
            scratch = buffers.take(feed_scratch_size(n))
            items, collect = _collector(scratch)
            stream.feed(memoryview(read)[:n], collect, scratch=scratch)
            queue_out(items)
            size += n
        queue_out([stream.finalize()])

    async def next_piece(self, limit: int) -> Piece:
        """Return the next ciphertext bytes, at most ``limit`` of them (b"" at the end)."""
        while not self._current:
            if self._ended:
                return b""
            item = await self._queue.get()
            self._room.release()
            if item is None:
                self._ended = True
                return b""
            if isinstance(item, BaseException):
                raise item
            self._current = list(reversed(item))
        piece = self._current.pop()
        if len(piece) > limit:
            self._current.append(memoryview(piece)[limit:])
            piece = memoryview(piece)[:limit]
        self.position += len(piece)
        return piece

    def stop(self) -> None:
        """Stop the thread and wait for it (its queue is dropped with it)."""
        self._stopping.set()
        if self.is_alive():
            self.join()
