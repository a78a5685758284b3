"""Tests of the bounded read → AEAD → write pipeline (``exchange.crypto._pipeline.pump``).

The pipeline must give byte-for-byte the output of the sequential push codec,
for any read pattern, release only authenticated plaintext (the prefix before
a bad chunk), never lose an error, stop every thread before it returns, and
keep memory flat. Small ``read_size`` values make batch boundaries cheap to
cross.
"""

from __future__ import annotations

import copy
import hashlib
import io
import os
import threading
import tracemalloc
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto import _pipeline, age
from exchange.crypto._stream import StreamEncryptor
from exchange.crypto.age import (
    Decryptor,
    Encryptor,
    PayloadError,
    X25519Identity,
    decrypt,
    encrypt,
)

CHUNK = 64 * 1024
ENC_CHUNK = CHUNK + 16
IDENTITY = X25519Identity.generate()
RECIPIENT = IDENTITY.recipient()
SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 1, 5 * CHUNK + 3]


class ShortReader:
    """A source whose ``readinto`` returns at most the next of ``sizes`` bytes (cycled)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = memoryview(data)
        self._sizes = sizes
        self._at = 0
        self._call = 0
        self.calls_after_eof = 0

    def readinto(self, view: memoryview) -> int:
        if self._at >= len(self._data):
            self.calls_after_eof += 1
        n = min(len(view), self._sizes[self._call % len(self._sizes)], len(self._data) - self._at)
        self._call += 1
        view[:n] = self._data[self._at : self._at + n]
        self._at += n
        return n


class Collector:
    """A sink that keeps a copy of everything, and the number of calls."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.calls = 0

    def __call__(self, piece: bytes | bytearray | memoryview) -> None:
        self.calls += 1
        self.data += piece


def _sequential(codec: _pipeline.Codec, data: bytes, step: int) -> bytes:
    out = bytearray()
    for at in range(0, len(data), step):
        codec.feed(data[at : at + step], out.extend)
    out += codec.finalize()
    return bytes(out)


def _pipeline_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("age-pipeline")]


@pytest.fixture(autouse=True)
def _no_pipeline_thread_left() -> Iterator[None]:
    yield
    assert _pipeline_threads() == []


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("read_size", [CHUNK, 2 * CHUNK, 3 * CHUNK + 5])
def test_encrypt_output_equals_sequential(size: int, read_size: int) -> None:
    data = os.urandom(size)
    encryptor = Encryptor([RECIPIENT])
    twin = copy.deepcopy(encryptor)  # same file key and nonce
    sink = Collector()
    reader = ShortReader(data, [read_size])
    written = _pipeline.pump(encryptor, reader.readinto, sink, read_size=read_size)
    assert bytes(sink.data) == _sequential(twin, data, 7 * CHUNK)
    assert written == len(sink.data)
    assert decrypt(bytes(sink.data), [IDENTITY]) == data


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("read_size", [ENC_CHUNK, 2 * ENC_CHUNK, 3 * ENC_CHUNK - 1])
def test_decrypt_output_equals_sequential(size: int, read_size: int) -> None:
    data = os.urandom(size)
    ciphertext = encrypt(data, [RECIPIENT])
    sink = Collector()
    reader = ShortReader(ciphertext, [read_size])
    written = _pipeline.pump(Decryptor([IDENTITY]), reader.readinto, sink, read_size=read_size)
    assert bytes(sink.data) == data == _sequential(Decryptor([IDENTITY]), ciphertext, CHUNK)
    assert written == size
    assert reader.calls_after_eof <= 1  # end of input is not read twice


@given(
    size=st.integers(0, 6 * CHUNK),
    reads=st.lists(st.integers(1, 3 * CHUNK), min_size=1, max_size=8),
    read_chunks=st.integers(1, 3),
)
def test_short_reads_give_the_same_bytes(size: int, reads: list[int], read_chunks: int) -> None:
    data = os.urandom(size)
    key = b"k" * 32
    sink = Collector()
    reader = ShortReader(data, reads)
    _pipeline.pump(StreamEncryptor(key), reader.readinto, sink, read_size=read_chunks * CHUNK)
    sequential = StreamEncryptor(key)
    assert bytes(sink.data) == sequential.update(data) + sequential.finalize()
    ciphertext = encrypt(data, [RECIPIENT])
    plain = Collector()
    reader = ShortReader(ciphertext, reads)
    _pipeline.pump(
        Decryptor([IDENTITY]), reader.readinto, plain, read_size=read_chunks * ENC_CHUNK
    )
    assert bytes(plain.data) == data


def test_tiny_and_empty_inputs_through_files() -> None:
    for size in (0, 1, 15, 16, 17):
        data = os.urandom(size)
        ct = io.BytesIO()
        assert age.encrypt_file(io.BytesIO(data), ct, [RECIPIENT]) == len(ct.getvalue())
        out = io.BytesIO()
        assert age.decrypt_file(io.BytesIO(ct.getvalue()), out, [IDENTITY]) == size
        assert out.getvalue() == data


def test_armor_round_trip_across_batches() -> None:
    data = os.urandom(3 * CHUNK + 11)
    sink = Collector()
    encryptor = Encryptor([RECIPIENT], armor=True)
    twin = copy.deepcopy(encryptor)
    _pipeline.pump(encryptor, ShortReader(data, [5000]).readinto, sink, read_size=CHUNK)
    assert bytes(sink.data) == _sequential(twin, data, CHUNK)
    assert sink.data.startswith(b"-----BEGIN AGE ENCRYPTED FILE-----")
    plain = Collector()
    _pipeline.pump(
        Decryptor([IDENTITY]), ShortReader(bytes(sink.data), [777]).readinto, plain,
        read_size=ENC_CHUNK,
    )
    assert bytes(plain.data) == data


def test_source_without_readinto() -> None:
    class ReadOnly:
        def __init__(self, data: bytes) -> None:
            self._src = io.BytesIO(data)

        def read(self, n: int) -> bytes:
            return self._src.read(min(n, 1000))

    data = os.urandom(2 * CHUNK + 5)
    out = io.BytesIO()
    age.encrypt_file(ReadOnly(data), out, [RECIPIENT])  # type: ignore[arg-type]
    assert decrypt(out.getvalue(), [IDENTITY]) == data


def _tampered(size: int, bad_chunk: int) -> bytes:
    ciphertext = bytearray(encrypt(os.urandom(size), [RECIPIENT]))
    payload_start = len(ciphertext) - (size + -(-size // CHUNK) * 16)
    ciphertext[payload_start + bad_chunk * ENC_CHUNK + 100] ^= 0x01
    return bytes(ciphertext)


@pytest.mark.parametrize("bad_chunk", [0, 1, 9, 10, 17, 39])
def test_error_in_the_middle_releases_exactly_the_authenticated_prefix(bad_chunk: int) -> None:
    size = 40 * CHUNK
    ciphertext = _tampered(size, bad_chunk)
    sink = Collector()
    with pytest.raises(PayloadError, match="failed to authenticate"):
        _pipeline.pump(
            Decryptor([IDENTITY]), io.BytesIO(ciphertext).readinto, sink, read_size=4 * ENC_CHUNK
        )
    assert len(sink.data) == bad_chunk * CHUNK
    sequential = Collector()
    decryptor = Decryptor([IDENTITY])
    with pytest.raises(PayloadError):
        decryptor.feed(ciphertext, sequential)
        decryptor.finalize()
    assert sink.data == sequential.data


def test_error_in_the_middle_of_a_large_file_through_decrypt_file() -> None:
    size = 160 * CHUNK  # 10 MiB: five default-size batches
    data = os.urandom(size)
    ciphertext = bytearray(encrypt(data, [RECIPIENT]))
    bad = 100  # in the fourth 2 MiB batch
    ciphertext[len(ciphertext) - size - 160 * 16 + bad * ENC_CHUNK + 5] ^= 0x80
    out = io.BytesIO()
    with pytest.raises(PayloadError):
        age.decrypt_file(io.BytesIO(bytes(ciphertext)), out, [IDENTITY])
    assert out.getvalue() == data[: bad * CHUNK]


@pytest.mark.parametrize(
    ("cut", "message"),
    [(-1, "failed to authenticate"), (-ENC_CHUNK, "truncated"), (None, "trailing data")],
)
def test_truncation_and_trailing_data_are_never_lost(cut: int | None, message: str) -> None:
    data = os.urandom(6 * CHUNK)
    ciphertext = encrypt(data, [RECIPIENT])
    broken = ciphertext + b"x" if cut is None else ciphertext[:cut]
    sink = Collector()
    with pytest.raises(PayloadError, match=message):
        _pipeline.pump(
            Decryptor([IDENTITY]), io.BytesIO(broken).readinto, sink, read_size=2 * ENC_CHUNK
        )
    assert data.startswith(bytes(sink.data))


def test_sink_error_is_raised_and_stops_the_sink() -> None:
    calls = []

    def sink(piece: bytes | bytearray | memoryview) -> None:
        calls.append(len(piece))
        if len(calls) == 3:
            raise OSError(28, "No space left on device")

    data = os.urandom(20 * CHUNK)
    with pytest.raises(OSError, match="No space left"):
        _pipeline.pump(Encryptor([RECIPIENT]), io.BytesIO(data).readinto, sink, read_size=CHUNK)
    assert len(calls) == 3


def test_reader_error_is_raised_after_the_stages_stop() -> None:
    class Failing:
        def __init__(self) -> None:
            self.reads = 0

        def readinto(self, view: memoryview) -> int:
            self.reads += 1
            if self.reads == 4:
                raise OSError(5, "Input/output error")
            view[:CHUNK] = bytes(CHUNK)
            return CHUNK

    sink = Collector()
    with pytest.raises(OSError, match="Input/output"):
        _pipeline.pump(Encryptor([RECIPIENT]), Failing().readinto, sink, read_size=CHUNK)
    # Three chunks were read; the last one is held back as possibly final.
    assert len(sink.data) > 2 * ENC_CHUNK


def test_payload_error_wins_over_a_later_read_error() -> None:
    ciphertext = _tampered(8 * CHUNK, 1)

    class FailsAtEnd:
        def __init__(self) -> None:
            self._src = io.BytesIO(ciphertext)

        def readinto(self, view: memoryview) -> int:
            n = self._src.readinto(view)
            if not n:
                raise OSError(5, "Input/output error")
            return n

    with pytest.raises(PayloadError):
        _pipeline.pump(
            Decryptor([IDENTITY]), FailsAtEnd().readinto, Collector(), read_size=ENC_CHUNK
        )


def test_interrupt_in_the_reader_propagates_and_joins() -> None:
    class Interrupted:
        def readinto(self, view: memoryview) -> int:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _pipeline.pump(Encryptor([RECIPIENT]), Interrupted().readinto, Collector(), read_size=CHUNK)


def test_non_blocking_source_is_refused() -> None:
    with pytest.raises(OSError, match="would block"):
        _pipeline.pump(Encryptor([RECIPIENT]), lambda view: None, Collector(), read_size=CHUNK)


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="positive"):
        _pipeline.pump(Encryptor([RECIPIENT]), io.BytesIO().readinto, Collector(), read_size=0)


def test_memory_is_flat() -> None:
    """Peak traced allocations depend on read_size and depth, not on the file size."""
    read_size = 4 * CHUNK
    peaks = []
    for size in (16 * CHUNK, 128 * CHUNK):
        source = io.BytesIO(os.urandom(size))
        digest = hashlib.sha256()
        tracemalloc.start()
        try:
            _pipeline.pump(Encryptor([RECIPIENT]), source.readinto, digest.update,
                           read_size=read_size, depth=2)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    limit = 2 * 2 * (read_size + 2 * CHUNK) + 2 * CHUNK
    assert all(peak < limit for peak in peaks), (peaks, limit)


def test_codec_buffers_valid_only_during_the_call_are_copied() -> None:
    """A codec may reuse its own buffer once ``sink`` returns; the writer lags behind it."""

    class Reusing:
        def __init__(self) -> None:
            self._buffer = bytearray(CHUNK)

        def feed(self, data: bytes | bytearray | memoryview, sink: _pipeline.Sink,
                 *, scratch: bytearray | None = None) -> None:
            view = memoryview(data)
            self._buffer[: len(view)] = view
            sink(memoryview(self._buffer)[: len(view)])

        def finalize(self) -> bytes:
            return b""

    data = os.urandom(12 * CHUNK)
    received = Collector()

    def slow_sink(piece: bytes | bytearray | memoryview) -> None:
        threading.Event().wait(0.005)  # let the codec run ahead and reuse its buffer
        received(piece)

    _pipeline.pump(Reusing(), io.BytesIO(data).readinto, slow_sink, read_size=CHUNK)
    assert bytes(received.data) == data
