"""Bounded read → AEAD → write pipeline for whole age files (C2SP age, STREAM payload).

Theory of operation. Three stages overlap so that a large file costs about as
long as its slowest stage instead of the sum of all three:

- the calling thread reads the source into one of a few preallocated input
  buffers (``readinto1``, so a pipe yields what it has);
- a crypto thread feeds each batch to the push codec (``Encryptor`` or
  ``Decryptor``) with a preallocated output buffer as ``scratch``; the AEAD
  inside is split over the chunk thread pool of ``_stream`` (pyca releases the
  GIL), so it uses every core;
- a writer thread passes the output to the sink, in order.

Buffers circulate through free lists, ``depth`` of each kind, so at most
``depth`` batches are in flight per stage and memory is flat whatever the file
size. The codec is only ever touched by the crypto thread, so its rules hold
unchanged: a decryptor hands out only authenticated plaintext, and the output
is byte-for-byte the sequential ``feed``/``finalize`` output.

Failure handling. Whatever a stage raises is kept; the stage before it stops
feeding work and the stages after it finish what they already hold (so a
decryptor's authenticated prefix is still written, as with sequential code).
All threads are joined before :func:`pump` returns or raises, so nothing
touches the source or the sink afterwards. The error raised is the one
earliest in the stream: the sink's, then the codec's, then the source's (an
interrupt of the calling thread wins over all of them). This module does no
I/O of its own: it only calls the ``readinto`` and sink callables it is given.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Final, Protocol

from exchange.crypto._stream import Buffer, Sink, feed_scratch_size

__all__ = ["Codec", "ReadInto", "Sink", "pump"]

ReadInto = Callable[[memoryview], "int | None"]

# A batch is handed on once this much is read (or at end of input): pipes give
# 64 KiB per read and per-batch hand-offs cost tens of microseconds.
_MIN_BATCH = 1024 * 1024


class Codec(Protocol):
    """The push codec a pipeline drives (``_codec.Encryptor`` and ``_codec.Decryptor``)."""

    def feed(self, data: Buffer, sink: Sink, *, scratch: bytearray | None = None) -> None:
        """Pass output for ``data`` to ``sink``; views of ``scratch`` stay valid until reused."""

    def finalize(self) -> bytes:
        """Return the last output; raise if the input was incomplete."""


class _Signal:
    """A queue message that is not a batch."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<{self.name}>"


_EOF: Final = _Signal("eof")  # to the crypto stage: input complete, finalize
_ABORT: Final = _Signal("abort")  # to the crypto stage: stop without finalizing
_STOP: Final = _Signal("stop")  # to the writer: nothing more will come

_Batch = tuple[bytearray, int]
_Output = tuple[bytearray | None, list[Buffer]]


class _Pool:
    """Up to ``depth`` reusable buffers of one size, allocated on first need."""

    def __init__(self, size: int, depth: int) -> None:
        self._size = size
        self._left = depth
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()

    def take(self) -> bytearray:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        if self._left:
            self._left -= 1
            return bytearray(self._size)
        return self._free.get()

    def give(self, buffer: bytearray) -> None:
        self._free.put(buffer)


def _fill(readinto: ReadInto, buffer: bytearray) -> tuple[int, bool]:
    """Read into ``buffer`` until it holds a batch; return (bytes read, end of input seen)."""
    view = memoryview(buffer)
    want = min(len(buffer), _MIN_BATCH)
    n = 0
    while n < want:
        got = readinto(view[n:])
        if got is None:
            raise OSError("source would block: non-blocking sources are not supported")
        if not got:
            return n, True
        n += got
    return n, False


class _Pipeline:
    def __init__(self, codec: Codec, sink: Sink, read_size: int, depth: int) -> None:
        self._codec = codec
        self._sink = sink
        self._inputs = _Pool(read_size, depth)
        self._outputs = _Pool(feed_scratch_size(read_size), depth)
        self._to_crypto: queue.SimpleQueue[_Batch | _Signal] = queue.SimpleQueue()
        self._to_write: queue.SimpleQueue[_Output | _Signal] = queue.SimpleQueue()
        self._failed = threading.Event()
        self._crypto_error: BaseException | None = None
        self._write_error: BaseException | None = None
        self.written = 0

    def run(self, readinto: ReadInto) -> int:
        stages = [
            threading.Thread(target=self._crypto_loop, name="age-pipeline-crypto", daemon=True),
            threading.Thread(target=self._write_loop, name="age-pipeline-write", daemon=True),
        ]
        for stage in stages:
            stage.start()
        read_error: BaseException | None = None
        end: _Signal = _ABORT
        try:
            while not self._failed.is_set():
                buffer = self._inputs.take()
                n, eof = _fill(readinto, buffer)
                self._to_crypto.put((buffer, n))
                if eof:
                    end = _EOF
                    break
        except BaseException as err:  # re-raised below, once the stages stop
            read_error = err
        finally:
            self._to_crypto.put(end)
            for stage in stages:
                stage.join()
        if read_error is not None and not isinstance(read_error, Exception):
            raise read_error  # KeyboardInterrupt and the like
        for first in (self._write_error, self._crypto_error, read_error):
            if first is not None:
                raise first
        return self.written

    def _crypto_loop(self) -> None:
        try:
            while True:
                message = self._to_crypto.get()
                if isinstance(message, _Signal):
                    if message is _EOF and not self._failed.is_set():
                        self._guard(self._finalize)
                    return
                buffer, n = message
                if not self._failed.is_set():
                    self._guard(self._seal_or_open, memoryview(buffer)[:n])
                self._inputs.give(buffer)
        finally:
            self._to_write.put(_STOP)

    def _guard(self, work: Callable[..., None], *args: memoryview) -> None:
        try:
            work(*args)
        except BaseException as err:  # handed to the calling thread
            self._crypto_error = err
            self._failed.set()

    def _finalize(self) -> None:
        self._to_write.put((None, [self._codec.finalize()]))

    def _seal_or_open(self, data: memoryview) -> None:
        out = self._outputs.take()
        items: list[Buffer] = []

        def collect(piece: Buffer) -> None:
            # Views of ``out`` stay valid until the writer gives it back; any
            # other buffer is only valid during this call, so it is copied.
            if isinstance(piece, bytes) or memoryview(piece).obj is out:
                items.append(piece)
            else:
                items.append(bytes(piece))

        try:
            self._codec.feed(data, collect, scratch=out)
        finally:
            # Even on failure: a decryptor's authenticated prefix is released.
            self._to_write.put((out, items))

    def _write_loop(self) -> None:
        while True:
            message = self._to_write.get()
            if isinstance(message, _Signal):
                return
            out, items = message
            if self._write_error is None:
                try:
                    for item in items:
                        self._sink(item)
                        self.written += memoryview(item).nbytes
                except BaseException as err:  # handed to the calling thread
                    self._write_error = err
                    self._failed.set()
            items.clear()
            if out is not None:
                self._outputs.give(out)


def pump(codec: Codec, readinto: ReadInto, sink: Sink, *, read_size: int, depth: int = 3) -> int:
    """Feed everything ``readinto`` yields through ``codec``, finalize it; return bytes sunk.

    ``sink`` receives the output in order, from a worker thread, each buffer
    valid only until it returns. Reads happen on the calling thread, so an
    interrupt lands there; every thread is joined before this returns or
    raises. Peak memory is about ``2 * depth * read_size``. ``read_size``
    should be a multiple of the chunk size (plaintext or encrypted), so that
    full batches need no carry-over between calls.
    """
    if read_size < 1 or depth < 1:
        raise ValueError(f"read_size and depth must be positive, got {read_size} and {depth}")
    return _Pipeline(codec, sink, read_size, depth).run(readinto)
