"""Strict decoders shared by every format that reads untrusted text: base64 and JSON.

One place for the two rules each signed or sealed format needs (keys, keystore,
manifests, envelopes, signed notes, checkpoints, receipts, audit entries):

- base64 is RFC 4648 §4 standard *padded* base64 in its one canonical spelling:
  no characters outside the alphabet (so no whitespace or newlines), correct
  padding, and zero unused bits. A lax decoder maps several texts to the same
  bytes, which makes signed text malleable. (age headers use *unpadded*
  base64: :func:`exchange.crypto._format.b64decode`.)
- JSON is RFC 8259 UTF-8 with a size cap checked before parsing, no duplicate
  member names (RFC 8259 §4 leaves their meaning open, so two readers could
  disagree), no NaN/Infinity, optionally no floats, and bounded nesting.

Errors are :class:`StrictDecodeError` (a ``ValueError``) with lowercase
messages that never echo the input; callers re-raise their own leaf class.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

__all__ = ["MAX_INTEGER_DIGITS", "StrictDecodeError", "b64decode_canonical", "loads_json"]

#: Longest JSON integer we convert: far above anything our formats allow (JCS
#: stops at 2**53), far below int()'s 4300-digit limit (a plain ValueError) and
#: its quadratic conversion cost.
MAX_INTEGER_DIGITS = 64


class StrictDecodeError(ValueError):
    """Input is not in the one canonical encoding a strict reader accepts."""


def b64decode_canonical(text: str | bytes) -> bytes:
    """Return the bytes of canonical padded standard base64; raise :class:`StrictDecodeError`.

    The error message is a predicate ("not valid base64", "not canonical padded
    base64") so callers can write ``f"{what} is {err}"``.
    """
    if isinstance(text, str):
        if not text.isascii():
            raise StrictDecodeError("not valid base64 (non-ascii characters)")
        raw = text.encode("ascii")
    elif isinstance(text, bytes):
        raw = text
    else:
        raise TypeError(f"base64 text must be str or bytes, not {type(text).__name__}")
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise StrictDecodeError("not valid base64") from None
    if base64.b64encode(data) != raw:
        raise StrictDecodeError("not canonical padded base64")
    return data


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise StrictDecodeError(f"duplicate JSON member {key!r:.40}")
        out[key] = value
    return out


def loads_json(
    data: bytes | str, *, what: str, max_bytes: int, allow_floats: bool = True
) -> Any:
    """Return parsed JSON, refusing oversize input, bad UTF-8, duplicate members and NaN.

    With ``allow_floats`` false any number with a fraction or exponent is
    refused too. Raises :class:`StrictDecodeError` whose message starts with ``what``.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > max_bytes:
        raise StrictDecodeError(f"{what} is {len(data)} bytes, expected at most {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise StrictDecodeError(f"{what} is not valid UTF-8") from None

    def no_constant(name: str) -> Any:
        raise StrictDecodeError(f"{what} contains the non-standard JSON constant {name}")

    def no_float(number: str) -> Any:
        raise StrictDecodeError(f"{what} contains the floating-point number {number[:20]!r}")

    def bounded_int(number: str) -> int:
        if len(number) > MAX_INTEGER_DIGITS:
            raise StrictDecodeError(
                f"{what} contains an integer of {len(number)} characters, "
                f"expected at most {MAX_INTEGER_DIGITS}"
            )
        return int(number)

    try:
        return json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=no_constant,
            parse_float=None if allow_floats else no_float,
            parse_int=bounded_int,
        )
    except StrictDecodeError as err:
        if str(err).startswith(what):
            raise
        raise StrictDecodeError(f"{what}: {err}") from None
    except json.JSONDecodeError as err:
        raise StrictDecodeError(
            f"{what} is not valid JSON: {err.msg} at line {err.lineno}"
        ) from None
    except RecursionError:
        raise StrictDecodeError(f"{what} is nested too deeply") from None
