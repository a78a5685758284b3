"""STREAM payload encryption of the C2SP age spec ("Payload" section).

Theory of operation. The plaintext is cut into 64 KiB chunks, each sealed with
ChaCha20-Poly1305 under the payload key and the nonce ``counter (11 bytes, big
endian) || flag``, where the flag byte is 1 only on the final chunk. The
encryptor looks ahead: a chunk is sealed as non-final only once at least one
more plaintext byte is known, so it never emits a trailing empty chunk. The
decryptor releases a chunk's plaintext only after its tag verifies. A
full-length chunk is tried as non-final first, then as final; a short chunk can
only be final. Errors found after some plaintext of the same call was
authenticated are deferred to the next call, so every authenticated chunk is
released (the CCTV partial-payload rule) and no failure is ever lost.

Large batches are spread over a small thread pool: pyca releases the GIL inside
the AEAD, so chunks seal in parallel. Chunks are independent, so the output is
identical whatever the split.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from exchange.crypto._age_errors import PayloadError

__all__ = [
    "CHUNK_SIZE",
    "ENCRYPTED_CHUNK_SIZE",
    "TAG_SIZE",
    "StreamDecryptor",
    "StreamEncryptor",
    "ciphertext_size",
    "open_chunk",
]

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_COUNTER_LIMIT = 1 << 88  # the counter is 11 bytes; wrapping around would reuse nonces
_PARALLEL_MIN_CHUNKS = 16  # below 1 MiB a thread hand-off costs more than it saves
_WORKERS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None

Buffer = bytes | bytearray | memoryview
Sink = Callable[[Buffer], object]


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def ciphertext_size(plaintext_size: int) -> int:
    """Return the payload size (without the 16-byte nonce) for a plaintext size."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return plaintext_size + chunks * TAG_SIZE


def _run_parts(count: int, work: Callable[[int, int], int]) -> list[int]:
    """Run ``work(start, stop)`` over ``range(count)`` split in parts; return each result.

    The calling thread does the last part itself, so a single-core machine or a
    small batch never waits on the pool.
    """
    global _pool  # noqa: PLW0603 - one lazily created pool per process
    if count < _PARALLEL_MIN_CHUNKS or _WORKERS == 1:
        return [work(0, count)]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_WORKERS - 1, thread_name_prefix="age-stream")
    bounds = [count * i // _WORKERS for i in range(_WORKERS + 1)]
    futures = [_pool.submit(work, bounds[i], bounds[i + 1]) for i in range(_WORKERS - 1)]
    last = work(bounds[-2], bounds[-1])
    return [f.result() for f in futures] + [last]


def _check_counter(counter: int, chunks: int) -> None:
    if counter + chunks > _COUNTER_LIMIT:
        raise PayloadError("payload too long: the 88-bit chunk counter would overflow")


def open_chunk(aead: ChaCha20Poly1305, counter: int, chunk: Buffer, final: bool) -> bytes | None:
    """Return the plaintext of one encrypted chunk, or ``None`` if it does not authenticate."""
    try:
        return aead.decrypt(_nonce(counter, final), chunk, None)
    except InvalidTag:
        return None


class StreamEncryptor:
    """Push encryptor of a STREAM payload (without the nonce, which the header layer writes)."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._counter = 0
        self._pending = bytearray()
        self._scratch = bytearray()
        self._finalized = False

    def seal_into(self, src: memoryview, dst: memoryview, *, final: bool) -> int:
        """Seal ``src`` into ``dst`` as the next chunks; return the bytes written.

        ``src`` must be whole chunks unless ``final``; when ``final`` its last
        chunk gets the final flag (an empty ``src`` is only valid as the sole,
        empty, final chunk). ``dst`` must hold ``ciphertext_size(len(src))``.
        """
        if self._finalized:
            raise RuntimeError("internal error: stream encryptor already finalized")
        size = len(src)
        count = max(1, -(-size // CHUNK_SIZE)) if final else size // CHUNK_SIZE
        if not final and size % CHUNK_SIZE:
            raise RuntimeError("internal error: non-final batch is not whole chunks")
        if final and size == 0 and self._counter:
            raise RuntimeError("internal error: empty final chunk after data")
        _check_counter(self._counter, count)
        first, key = self._counter, self._key

        def work(start: int, stop: int) -> int:
            aead = ChaCha20Poly1305(key)
            for i in range(start, stop):
                chunk = src[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE]
                at = i * ENCRYPTED_CHUNK_SIZE
                out = dst[at : at + len(chunk) + TAG_SIZE]
                aead.encrypt_into(_nonce(first + i, final and i == count - 1), chunk, None, out)
            return 0

        _run_parts(count, work)
        self._counter += count
        self._finalized = final
        return size + count * TAG_SIZE

    def feed(self, data: Buffer, sink: Sink) -> None:
        """Pass to ``sink`` the ciphertext of every chunk now known not to be the last one.

        ``sink`` receives a buffer that is valid only until it returns (it is
        reused, which keeps memory flat and avoids page faults on fresh pages).
        """
        view = memoryview(data).cast("B")
        if self._pending:
            take = min(len(view), CHUNK_SIZE - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if not len(view):
                return
            # The pending chunk is full and more plaintext follows: not final.
            sink(self._seal(memoryview(self._pending), final=False))
            self._pending = bytearray()
        ready = (len(view) - 1) // CHUNK_SIZE * CHUNK_SIZE if len(view) else 0
        if ready:
            sink(self._seal(view[:ready], final=False))
        self._pending = bytearray(view[ready:])

    def _seal(self, src: memoryview, *, final: bool) -> memoryview:
        chunks = len(src) // CHUNK_SIZE
        size = ciphertext_size(len(src)) if final else chunks * ENCRYPTED_CHUNK_SIZE
        if len(self._scratch) < size:
            self._scratch = bytearray(size)
        out = memoryview(self._scratch)[:size]
        self.seal_into(src, out, final=final)
        return out

    def update(self, data: Buffer) -> bytes:
        """Return the ciphertext of every chunk now known not to be the last one."""
        out = bytearray()
        self.feed(data, out.extend)
        return bytes(out)

    def finalize(self) -> bytes:
        """Return the ciphertext of the final chunk (empty only for an empty payload)."""
        out = bytes(self._seal(memoryview(self._pending), final=True))
        self._pending = bytearray()
        return out


class StreamDecryptor:
    """Push decryptor of a STREAM payload that releases only authenticated chunks."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead = ChaCha20Poly1305(key)
        self._counter = 0
        self._pending = bytearray()
        self._final_seen = False
        self._deferred: PayloadError | None = None
        self._scratch = bytearray()
        self._finalized = False

    def _check_usable(self) -> None:
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            self._finalized = True
            raise err
        if self._finalized:
            raise RuntimeError("payload decryptor already finalized or failed")

    def _fail(self, err: PayloadError, released: bytes) -> bytes:
        """Raise ``err`` now, or after handing out ``released`` if there is any."""
        if released:
            self._deferred = err
            return released
        self._finalized = True
        raise err

    def open_into(self, src: memoryview, dst: memoryview) -> int:
        """Open whole non-final chunks from ``src`` into ``dst``; return how many verified.

        Stops at the first chunk that does not verify as non-final; the
        plaintext of later chunks that may have been written to ``dst`` is not
        authenticated and must be ignored.
        """
        count = len(src) // ENCRYPTED_CHUNK_SIZE
        _check_counter(self._counter, count)
        first, key = self._counter, self._key

        def work(start: int, stop: int) -> int:
            aead = ChaCha20Poly1305(key)
            for i in range(start, stop):
                at = i * ENCRYPTED_CHUNK_SIZE
                try:
                    aead.decrypt_into(
                        _nonce(first + i, False),
                        src[at : at + ENCRYPTED_CHUNK_SIZE],
                        None,
                        dst[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE],
                    )
                except InvalidTag:
                    return i - start
            return stop - start

        done = 0
        parts = _run_parts(count, work)
        bounds = [count * i // len(parts) for i in range(len(parts) + 1)]
        for i, verified in enumerate(parts):
            done += verified
            if verified < bounds[i + 1] - bounds[i]:
                break
        self._counter += done
        return done

    def update(self, data: Buffer) -> bytes:
        """Return the plaintext of every chunk that authenticated so far.

        If a later chunk of ``data`` fails, the plaintext authenticated before
        it is returned now and the error is raised by the next call.
        """
        self._check_usable()
        out = bytearray()
        try:
            self._feed(memoryview(data).cast("B"), out.extend)
        except PayloadError as err:
            return self._fail(err, bytes(out))
        return bytes(out)

    def feed(self, data: Buffer, sink: Sink) -> None:
        """Pass authenticated plaintext to ``sink`` as soon as each batch verifies.

        The buffer given to ``sink`` is valid only until it returns. Raises at
        once on failure: whatever authenticated before the bad chunk has
        already gone to ``sink``.
        """
        self._check_usable()
        try:
            self._feed(memoryview(data).cast("B"), sink)
        except PayloadError:
            self._finalized = True
            raise

    def _feed(self, view: memoryview, sink: Sink) -> None:
        if not len(view):
            return
        if self._final_seen:
            raise PayloadError("trailing data after the final chunk")
        if self._pending:
            take = min(len(view), ENCRYPTED_CHUNK_SIZE - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < ENCRYPTED_CHUNK_SIZE:
                return
            chunk, self._pending = self._pending, bytearray()
            self._open_whole(memoryview(chunk), sink)
            if len(view) and self._final_seen:
                raise PayloadError("trailing data after the final chunk")
        whole = len(view) // ENCRYPTED_CHUNK_SIZE * ENCRYPTED_CHUNK_SIZE
        if whole:
            self._open_whole(view[:whole], sink)
            if self._final_seen and len(view) > whole:
                raise PayloadError("trailing data after the final chunk")
        self._pending = bytearray(view[whole:])

    def _open_whole(self, view: memoryview, sink: Sink) -> None:
        """Open whole encrypted chunks; the first that fails as non-final must be final."""
        count = len(view) // ENCRYPTED_CHUNK_SIZE
        if len(self._scratch) < count * CHUNK_SIZE:
            self._scratch = bytearray(count * CHUNK_SIZE)
        out = memoryview(self._scratch)
        done = self.open_into(view, out)
        if done:
            sink(out[: done * CHUNK_SIZE])
        if done == count:
            return
        at = done * ENCRYPTED_CHUNK_SIZE
        chunk = view[at : at + ENCRYPTED_CHUNK_SIZE]
        plaintext = open_chunk(self._aead, self._counter, chunk, True)
        if plaintext is None:
            raise PayloadError("payload chunk failed to authenticate")
        self._counter += 1
        self._final_seen = True
        sink(plaintext)
        if done + 1 < count:
            raise PayloadError("trailing data after the final chunk")

    def finalize(self) -> bytes:
        """Return the plaintext of a short final chunk; raise if the payload is incomplete."""
        self._check_usable()
        self._finalized = True
        if self._final_seen:
            return b""
        rest = bytes(self._pending)
        self._pending = bytearray()
        if not rest:
            if self._counter == 0:
                raise PayloadError("payload has no chunks: want at least the final chunk")
            raise PayloadError("payload truncated: end of input before the final chunk")
        if len(rest) < TAG_SIZE:
            raise PayloadError(f"final chunk is {len(rest)} bytes, shorter than the 16-byte tag")
        plaintext = open_chunk(self._aead, self._counter, rest, True)
        if plaintext is None:
            raise PayloadError("payload chunk failed to authenticate")
        if not plaintext and self._counter:
            raise PayloadError("final chunk is empty after data (only an empty payload may be)")
        self._counter += 1
        return plaintext
