"""Strict JSON request bodies: one object, no duplicate members, no NaN, typed fields.

Parsing happens inside the operation, after the signature and the body's
digest were verified, so a malformed body is refused (and logged) for a known
participant. Binary values travel as padded standard base64 (RFC 4648 §4).

The decoding rules are the crypto formats' own (``exchange.crypto._strict``:
UTF-8, no duplicate members, no NaN/Infinity, bounded nesting, canonical
padded base64), so a request and a signed format can never disagree about
what a text means; this module only turns their errors into
``InvalidRequest`` and adds what a request body needs on top: the media type,
a cap on the number of containers (a flat body of 10,000 empty arrays parses
fast but is not a request of ours) and the typed member getters. The body's
size was capped by the transport before it got here.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical, loads_json
from exchange.service.errors import (
    InvalidRequest,
    RequestTooLarge,
    UnsupportedMediaType,
)

__all__ = [
    "check_members", "decode_b64", "get_b64", "get_int", "get_object", "get_str", "parse_object",
]

#: Most ``[`` plus ``{`` characters a request body may hold (containers, or text that looks so).
MAX_CONTAINERS = 10_000


def parse_object(body: bytes, *, content_type: str | None = None) -> dict[str, Any]:
    """Return the JSON object in ``body``; ``InvalidRequest`` for anything else."""
    if content_type is not None and content_type.split(";")[0].strip().lower() != (
        "application/json"
    ):
        raise UnsupportedMediaType(f"want application/json, found {content_type[:60]!r}")
    if body.count(b"[") + body.count(b"{") > MAX_CONTAINERS:
        raise InvalidRequest("request body is nested or repeated too much")
    try:
        value = loads_json(body, what="request body", max_bytes=len(body))
    except StrictDecodeError as err:
        raise InvalidRequest(str(err)) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"request body must be a JSON object, found {type(value).__name__}")
    return value


def check_members(
    obj: dict[str, Any], *, required: Collection[str], optional: Collection[str] = (),
    what: str = "request body",
) -> None:
    """Raise unless ``obj`` has every ``required`` member and nothing outside both sets."""
    missing = sorted(set(required) - set(obj))
    if missing:
        raise InvalidRequest(f"{what} is missing the member {missing[0]!r}")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise InvalidRequest(f"{what} has the unknown member {unknown[0][:40]!r}")


def get_str(obj: dict[str, Any], name: str, *, max_chars: int = 256,
            default: str | None = None) -> str:
    """Return the string member ``name`` (``default`` when absent and a default is given)."""
    value = obj.get(name, default)
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string, found {type(value).__name__}")
    if len(value) > max_chars:
        raise RequestTooLarge(f"{name} has {len(value)} characters, at most {max_chars}")
    if "\x00" in value:
        raise InvalidRequest(f"{name} contains a nul character")
    return value


def get_int(obj: dict[str, Any], name: str, *, minimum: int = 0, maximum: int = 2**31 - 1) -> int:
    """Return the integer member ``name`` within [minimum, maximum]."""
    value = obj.get(name)
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidRequest(f"{name} must be an integer, found {type(value).__name__}")
    if not minimum <= value <= maximum:
        raise InvalidRequest(f"{name} must be in [{minimum}, {maximum}], found {value}")
    return value


def get_object(obj: dict[str, Any], name: str) -> dict[str, Any]:
    """Return the object member ``name``."""
    value = obj.get(name)
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be a JSON object, found {type(value).__name__}")
    return value


def decode_b64(value: object, name: str, *, max_bytes: int) -> bytes:
    """Return the bytes of a canonical padded base64 string (at most ``max_bytes``)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a base64 string, found {type(value).__name__}")
    if len(value) > (max_bytes + 2) // 3 * 4:
        raise RequestTooLarge(f"{name} decodes to more than {max_bytes} bytes")
    try:
        return b64decode_canonical(value)
    except StrictDecodeError as err:
        raise InvalidRequest(f"{name} is {err}") from None


def get_b64(obj: dict[str, Any], name: str, *, max_bytes: int) -> bytes:
    """Return the bytes of the base64 member ``name``."""
    return decode_b64(obj.get(name), name, max_bytes=max_bytes)

