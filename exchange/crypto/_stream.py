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

``feed`` may be given a caller-owned ``scratch`` buffer: everything sealed or
opened by that call lands in disjoint regions of it, so a pipeline can hand the
views to a writer thread without copying while the next batch goes into
another buffer (see ``_pipeline``). A decryptor's ``scratch`` may also be a
view of the rest of a caller's buffer, so several feeds fill one buffer in turn
(a pull decrypts the network's buffers without joining them).
"""

from __future__ import annotations

import os
import threading
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
    "feed_scratch_size",
    "open_chunk",
]

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
ENCRYPTED_CHUNK_SIZE = CHUNK_SIZE + TAG_SIZE
_COUNTER_LIMIT = 1 << 88  # the counter is 11 bytes; wrapping around would reuse nonces
_PARALLEL_MIN_CHUNKS = 16  # below 1 MiB a thread hand-off costs more than it saves


def _usable_cpus() -> int:
    """Return the CPUs this process may run on (its affinity, not the machine's count).

    A process pinned to one core (``taskset``, a container's cpuset) gains nothing from
    splitting a batch over threads and pays the hand-offs.
    """
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


_WORKERS = max(1, min(4, _usable_cpus()))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()  # pipelines and server threads may seal concurrently

Buffer = bytes | bytearray | memoryview
Sink = Callable[[Buffer], object]


def _nonce(counter: int, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def ciphertext_size(plaintext_size: int) -> int:
    """Return the payload size (without the 16-byte nonce) for a plaintext size."""
    chunks = max(1, -(-plaintext_size // CHUNK_SIZE))
    return plaintext_size + chunks * TAG_SIZE


def feed_scratch_size(size: int) -> int:
    """Return a ``scratch`` size that holds the output of one ``feed`` of ``size`` bytes.

    Covers both directions: a feed seals at most ``size // CHUNK_SIZE + 1``
    chunks (the pending one completes), ``(size // CHUNK_SIZE + 1) *
    ENCRYPTED_CHUNK_SIZE <= size + CHUNK_SIZE + (size // CHUNK_SIZE + 1) *
    TAG_SIZE`` bytes, or opens at most ``size // ENCRYPTED_CHUNK_SIZE + 1``,
    fewer than ``size + CHUNK_SIZE`` bytes.
    """
    return size + CHUNK_SIZE + (size // CHUNK_SIZE + 1) * TAG_SIZE


class _Scratch:
    """Output space for one call: the caller's buffer if large enough, else a reused own one."""

    def __init__(self) -> None:
        self._own = bytearray()

    def region(self, scratch: bytearray | memoryview | None, size: int) -> memoryview:
        if scratch is None or len(scratch) < size:
            if len(self._own) < size:
                self._own = bytearray(size)
            scratch = self._own
        return memoryview(scratch)[:size]


def _run_parts(count: int, work: Callable[[int, int], int]) -> list[int]:
    """Run ``work(start, stop)`` over ``range(count)`` split in parts; return each result.

    The calling thread does the last part itself, so a single-core machine or a
    small batch never waits on the pool.
    """
    global _pool  # noqa: PLW0603 - one lazily created pool per process
    if count < _PARALLEL_MIN_CHUNKS or _WORKERS == 1:
        return [work(0, count)]
    with _pool_lock:
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
        self._scratch = _Scratch()
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

    def feed(self, data: Buffer, sink: Sink, *, scratch: bytearray | None = None) -> None:
        """Pass to ``sink`` the ciphertext of every chunk now known not to be the last one.

        ``sink`` is called at most once per call, with a view of ``scratch``
        (or of an internal buffer if ``scratch`` is None or smaller than
        :func:`feed_scratch_size`); it is valid only until that buffer is
        reused, so the internal one must be consumed before ``sink`` returns.
        """
        view = memoryview(data).cast("B")
        if self._pending:
            take = min(len(view), CHUNK_SIZE - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if not len(view):
                return
            # From here a non-empty pending chunk is full and more plaintext
            # follows, so it is not final.
        ready = (len(view) - 1) // CHUNK_SIZE * CHUNK_SIZE if len(view) else 0
        chunks = (1 if self._pending else 0) + ready // CHUNK_SIZE
        if chunks:
            out = self._scratch.region(scratch, chunks * ENCRYPTED_CHUNK_SIZE)
            at = 0
            if self._pending:
                at = self.seal_into(memoryview(self._pending), out, final=False)
            if ready:
                at += self.seal_into(view[:ready], out[at:], final=False)
            sink(out[:at])
        self._pending = bytearray(view[ready:])

    def update(self, data: Buffer) -> bytes:
        """Return the ciphertext of every chunk now known not to be the last one."""
        out = bytearray()
        self.feed(data, out.extend)
        return bytes(out)

    def finalize(self) -> bytes:
        """Return the ciphertext of the final chunk (a bare tag only for an empty payload)."""
        out = bytearray(ciphertext_size(len(self._pending)))
        self.seal_into(memoryview(self._pending), memoryview(out), final=True)
        self._pending = bytearray()
        return bytes(out)


class StreamDecryptor:
    """Push decryptor of a STREAM payload that releases only authenticated chunks."""

    def __init__(self, key: bytes, *, first_chunk: int = 0) -> None:
        # ``first_chunk`` > 0 resumes a payload whose earlier chunks were opened before.
        self._key = key
        self._aead = ChaCha20Poly1305(key)
        self._counter = first_chunk
        self._pending = bytearray()
        self._final_seen = False
        self._deferred: PayloadError | None = None
        self._scratch = _Scratch()
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
            self._feed(memoryview(data).cast("B"), out.extend, None)
        except PayloadError as err:
            return self._fail(err, bytes(out))
        return bytes(out)

    def feed(self, data: Buffer, sink: Sink, *,
             scratch: bytearray | memoryview | None = None) -> None:
        """Pass authenticated plaintext to ``sink`` as soon as each batch verifies.

        Raises at once on failure: whatever authenticated before the bad chunk
        has already gone to ``sink``. Buffers given to ``sink`` are disjoint
        views of ``scratch`` (or of an internal buffer, valid only until
        ``sink`` returns, if ``scratch`` is None or smaller than
        :func:`feed_scratch_size`), or ``bytes`` for a final chunk.
        """
        self._check_usable()
        try:
            self._feed(memoryview(data).cast("B"), sink, scratch)
        except PayloadError:
            self._finalized = True
            raise

    def _feed(self, view: memoryview, sink: Sink, scratch: bytearray | memoryview | None) -> None:
        if not len(view):
            return
        if self._final_seen:
            raise PayloadError("trailing data after the final chunk")
        # Room for every chunk this call can open; each opening below gets its
        # own region, so earlier output is never overwritten before it is used.
        out = self._scratch.region(scratch, (len(view) // ENCRYPTED_CHUNK_SIZE + 1) * CHUNK_SIZE)
        if self._pending:
            take = min(len(view), ENCRYPTED_CHUNK_SIZE - len(self._pending))
            self._pending += view[:take]
            view = view[take:]
            if len(self._pending) < ENCRYPTED_CHUNK_SIZE:
                return
            chunk, self._pending = self._pending, bytearray()
            out = out[self._open_whole(memoryview(chunk), sink, out) :]
            if len(view) and self._final_seen:
                raise PayloadError("trailing data after the final chunk")
        whole = len(view) // ENCRYPTED_CHUNK_SIZE * ENCRYPTED_CHUNK_SIZE
        if whole:
            self._open_whole(view[:whole], sink, out)
            if self._final_seen and len(view) > whole:
                raise PayloadError("trailing data after the final chunk")
        self._pending = bytearray(view[whole:])

    def _open_whole(self, view: memoryview, sink: Sink, out: memoryview) -> int:
        """Open whole encrypted chunks into ``out``; return the bytes of ``out`` used.

        The first chunk that fails as non-final must be the final chunk.
        """
        count = len(view) // ENCRYPTED_CHUNK_SIZE
        done = self.open_into(view, out)
        if done:
            sink(out[: done * CHUNK_SIZE])
        if done == count:
            return done * CHUNK_SIZE
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
        return done * CHUNK_SIZE

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
