"""RFC 8785 JSON Canonicalization Scheme (JCS) for the subset we sign.

Supported values: objects with string keys, arrays, strings, booleans, null
and integers within ±(2**53 - 1) (the range where RFC 8785's ECMAScript
number serialisation is the plain decimal form). Floats are refused: nothing
we sign needs them, and refusing them removes a whole class of
canonicalisation ambiguity. Members are ordered by the UTF-16 code units of
their names (RFC 8785 §3.2.3); strings use the ECMAScript escaping rules
(§3.2.2.2): only ``"``, ``\\`` and control characters are escaped, everything
else is emitted as UTF-8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from exchange.errors import CryptoError

MAX_SAFE_INTEGER = 2**53 - 1

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


class CanonicalizationError(CryptoError, ValueError):
    """A value cannot be canonicalized (unsupported type, unsafe integer, lone surrogate)."""


def _utf16_key(name: str) -> bytes:
    return name.encode("utf-16-be", "surrogatepass")


def _string(value: str) -> str:
    out = ['"']
    for ch in value:
        escaped = _SHORT_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:
            raise CanonicalizationError("string contains a lone surrogate (not valid UTF-8)")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _serialize(value: object, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(f"integer {value} is outside ±(2**53 - 1)")
        out.append(str(value))
    elif isinstance(value, float):
        raise CanonicalizationError("floating-point numbers are not supported in signed JSON")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r:.40} is not a string")
        out.append("{")
        for position, key in enumerate(sorted(value, key=_utf16_key)):
            if position:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _serialize(value[key], out)
        out.append("}")
    elif isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        out.append("[")
        for position, item in enumerate(value):
            if position:
                out.append(",")
            _serialize(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"unsupported type {type(value).__name__} in signed JSON")


def canonicalize(value: object) -> bytes:
    """Return the RFC 8785 canonical UTF-8 encoding of ``value``.

    Raises :class:`CanonicalizationError` for floats, integers outside the
    safe range, non-string keys, lone surrogates, unsupported types and
    nesting too deep for the interpreter stack.
    """
    out: list[str] = []
    try:
        _serialize(value, out)
    except RecursionError:
        raise CanonicalizationError("value is nested too deeply") from None
    return "".join(out).encode("utf-8")
