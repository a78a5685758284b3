"""Bech32 key-string helpers shared by the age recipient types (C2SP age, "Bech32")."""

from __future__ import annotations

from exchange.crypto import bech32
from exchange.crypto._age_errors import KeyFormatError, truncate

__all__ = ["decode_key", "encode_identity", "encode_recipient"]


def decode_key(text: str, hrp: str, size: int, *, secret: bool) -> bytes:
    """Return the ``size``-byte payload of a Bech32 key string with human-readable part ``hrp``.

    Identities must be uppercase and recipients lowercase, as age prints them.
    When ``secret`` is true the string is never echoed in an error.
    """
    kind = "identity" if secret else "recipient"
    shown = "" if secret else f" {truncate(text)}"
    if not isinstance(text, str):
        raise TypeError(f"{kind} must be str")
    if text != (text.upper() if secret else text.lower()):
        case = "uppercase" if secret else "lowercase"
        raise KeyFormatError(f"malformed {kind}{shown}: want all {case}")
    try:
        found_hrp, data = bech32.decode(text)
    except bech32.Bech32Error as err:
        raise KeyFormatError(f"malformed {kind}{shown}: {err}") from None
    if found_hrp != hrp:
        raise KeyFormatError(f"malformed {kind}{shown}: want prefix {hrp!r}, found {found_hrp!r}")
    if len(data) != size:
        raise KeyFormatError(f"malformed {kind}{shown}: want {size} bytes, found {len(data)}")
    return data


def encode_identity(hrp: str, data: bytes) -> str:
    """Return the uppercase Bech32 string of a secret key."""
    return bech32.encode(hrp, data).upper()


def encode_recipient(hrp: str, data: bytes) -> str:
    """Return the lowercase Bech32 string of a public key."""
    return bech32.encode(hrp, data)
