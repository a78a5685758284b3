"""Shared machinery of the hostile-input fuzz suite (issue 7): settings, mutations, checks.

Every fuzz test feeds a parser three kinds of input: random bytes or text,
structured-but-wrong values (the near misses a grammar invites: huge or
non-canonical numbers, control characters, lone surrogates, deep nesting) and
mutations of real valid inputs (bit flips, byte changes, truncations,
insertions, deletions, duplicated or foreign splices). :func:`only` runs the
parser and lets exactly the documented error through; anything else
(IndexError, KeyError, UnicodeDecodeError, RecursionError, a plain
ValueError ...) fails the test, and so does a call that burns more than
:data:`MAX_CPU_S` seconds of CPU (a hang or super-linear backtracking).
"""

from __future__ import annotations

import os
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

T = TypeVar("T")

#: Examples per fuzz test: bounded for CI (each module stays well under 20 s);
#: raise EXCHANGE_FUZZ_EXAMPLES for a longer local run.
EXAMPLES = int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "250"))
#: CPU seconds one parser call may take on inputs of at most a few MiB.
MAX_CPU_S = float(os.environ.get("EXCHANGE_FUZZ_MAX_CPU_S", "2.0"))

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)
#: For tests whose every example does real cryptography (decrypting files).
FUZZ_SLOW = settings(FUZZ, max_examples=max(20, EXAMPLES // 4))


def only(allowed: type[BaseException] | tuple[type[BaseException], ...],
         fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
    """Return ``fn(*args, **kwargs)``, or None if it raised one of ``allowed``.

    Any other exception propagates (the test fails with its traceback); a
    call that uses more than :data:`MAX_CPU_S` of this thread's CPU fails too.
    Messages of allowed errors must be one line of bounded length, so hostile
    input is truncated rather than echoed.
    """
    start = time.thread_time()
    try:
        return fn(*args, **kwargs)
    except allowed as err:
        message = str(err)
        assert len(message) <= 600, f"error message is {len(message)} characters: {message[:80]!r}"
        return None
    finally:
        spent = time.thread_time() - start
        assert spent <= MAX_CPU_S, f"{getattr(fn, '__name__', fn)} took {spent:.2f}s of CPU"


@contextmanager
def peak_python_memory(limit_bytes: int) -> Iterator[None]:
    """Fail if the block allocates more than ``limit_bytes`` of Python memory at its peak."""
    tracemalloc.start()
    try:
        yield
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak <= limit_bytes, f"peak allocation {peak} bytes, limit {limit_bytes}"


# -- mutations of valid inputs ------------------------------------------------------------

_OPS = ("flip", "set", "truncate", "drop_head", "delete", "insert", "duplicate", "splice",
        "swap")


@st.composite
def mutated(draw: st.DrawFn, valid: bytes, others: tuple[bytes, ...] = (),
            max_ops: int = 3) -> bytes:
    """A copy of ``valid`` with 1..max_ops mutations; ``others`` feed foreign splices."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_OPS))
        size = len(data)
        at = draw(st.integers(0, size))
        if op == "flip" and size:
            at = min(at, size - 1)
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and size:
            at = min(at, size - 1)
            data[at] = draw(st.sampled_from(INTERESTING_BYTES))
        elif op == "truncate":
            del data[at:]
        elif op == "drop_head":
            del data[:at]
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=16),
                                         st.sampled_from(INTERESTING_CHUNKS)))
        elif op == "duplicate" and size:
            start = draw(st.integers(0, size - 1))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
        elif op == "splice":
            donor = draw(st.sampled_from((valid, *others)))
            if donor:
                start = draw(st.integers(0, len(donor) - 1))
                data[at:] = donor[start:]
        elif op == "swap" and size > 1:
            at = min(at, size - 2)
            data[at], data[at + 1] = data[at + 1], data[at]
    return bytes(data)


def mutated_text(valid: str, others: tuple[str, ...] = (), max_ops: int = 3
                 ) -> st.SearchStrategy[str]:
    """Mutations of ``valid`` at the UTF-8 level, decoded back leniently to text."""
    encoded = tuple(o.encode("utf-8", "surrogatepass") for o in others)
    return mutated(valid.encode("utf-8", "surrogatepass"), encoded, max_ops).map(
        lambda raw: raw.decode("utf-8", "surrogateescape")
    )


# -- structured-but-wrong building blocks -------------------------------------------------

INTERESTING_BYTES = (0x00, 0x09, 0x0A, 0x0D, 0x20, 0x22, 0x2B, 0x2C, 0x2D, 0x2F, 0x30, 0x31,
                     0x39, 0x3A, 0x3B, 0x3D, 0x5C, 0x7E, 0x7F, 0x80, 0xC0, 0xE2, 0xFF)
INTERESTING_CHUNKS = (
    b"\n", b"\r\n", b"\n\n", b" ", b"\t", b"\x00", b"=", b"==", b"\xff\xfe", b"\xed\xa0\x80",
    b"\xe2\x80\x94 ", b"9" * 30, b"0", b"-1", b"1e400", b"\\", b'"', b",", b";", b":",
    b"(", b")", b"[", b"]", b"{", b"}", b"%", b"@", b"?1", b"\xc2\xb2", b"\xd9\xa3",
)
#: Numbers a strict decimal reader must refuse or bound (int() has a 4300-digit limit).
HOSTILE_NUMBERS = (
    "", "-0", "-1", "00", "01", "+1", " 1", "1 ", "1_000", "0x10", "1e3", "1.0", "NaN",
    "\u0663", "\u00b2", "\uff11", "\U0001d7ce", "18446744073709551616", "9" * 20,
    "1" * 4301, "1" * 5000, "9" * 100_000,
)
HOSTILE_CHARS = ("\x00", "\x1f", "\x7f", "\r", "\n", "\t", " ", "\u2014", "\u2028", "\ufeff",
                 "\ud800", "\udfff", "\U0010ffff", "\u0663", "\u00e9", "=", "+", "/", "\\", '"')

hostile_text = st.text(
    st.one_of(st.characters(codec="utf-8"), st.sampled_from(HOSTILE_CHARS)), max_size=200
)
