"""Bech32 (BIP 173) without the 90-character limit, as the age spec requires.

age encodes keys with Bech32 (not Bech32m). Hybrid post-quantum recipients are
about 1,960 characters, so the length limit of BIP 173 is deliberately not
applied. Strings must be all-lowercase or all-uppercase; the checksum is over
the lowercase form. This is an encoding, not a cryptographic primitive.
"""

from __future__ import annotations

__all__ = ["Bech32Error", "decode", "encode"]

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_CHARSET_REV = {c: i for i, c in enumerate(_CHARSET)}
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)
_CHECKSUM_CONST = 1  # BIP 173 Bech32; Bech32m (BIP 350) would be 0x2BC830A3
_CHECKSUM_LEN = 6


class Bech32Error(ValueError):
    """A string is not valid Bech32 (case, characters, checksum or padding)."""


def _polymod(values: list[int]) -> int:
    chk = 1
    for value in values:
        top = chk >> 25
        chk = (chk & 0x1FFFFFF) << 5 ^ value
        for i, gen in enumerate(_GENERATOR):
            if (top >> i) & 1:
                chk ^= gen
    return chk


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, *, pad: bool) -> list[int]:
    acc = 0
    bits = 0
    out: list[int] = []
    max_value = (1 << to_bits) - 1
    max_acc = (1 << (from_bits + to_bits - 1)) - 1
    for value in data:
        acc = ((acc << from_bits) | value) & max_acc
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & max_value)
    if pad:
        if bits:
            out.append((acc << (to_bits - bits)) & max_value)
    elif bits >= from_bits or (acc << (to_bits - bits)) & max_value:
        # BIP 173: at most 4 bits of padding, and they must be zero; otherwise
        # two strings would decode to the same bytes (malleability).
        raise Bech32Error("invalid padding in bech32 data")
    return out


def encode(hrp: str, data: bytes) -> str:
    """Return the lowercase Bech32 encoding of ``data`` under human-readable part ``hrp``."""
    if not hrp or any(not 33 <= ord(c) <= 126 for c in hrp):
        raise Bech32Error(f"invalid human-readable part {hrp!r}")
    hrp = hrp.lower()
    values = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod([*_hrp_expand(hrp), *values, 0, 0, 0, 0, 0, 0]) ^ _CHECKSUM_CONST
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(_CHECKSUM_LEN)]
    return hrp + "1" + "".join(_CHARSET[v] for v in values + checksum)


def decode(s: str) -> tuple[str, bytes]:
    """Return ``(hrp, data)`` of a Bech32 string; the hrp is returned in lowercase.

    Raises :class:`Bech32Error` on mixed case, bad characters, a bad checksum or
    non-zero padding. Messages never include the string itself, which may be a
    secret key.
    """
    if s.lower() != s and s.upper() != s:
        raise Bech32Error("mixed case in bech32 string")
    s = s.lower()
    pos = s.rfind("1")
    if pos < 1 or pos + _CHECKSUM_LEN + 1 > len(s):
        raise Bech32Error("bech32 separator '1' missing or misplaced")
    hrp, rest = s[:pos], s[pos + 1 :]
    if any(not 33 <= ord(c) <= 126 for c in hrp):
        raise Bech32Error("invalid character in bech32 human-readable part")
    try:
        values = [_CHARSET_REV[c] for c in rest]
    except KeyError:
        raise Bech32Error("invalid character in bech32 data") from None
    if _polymod(_hrp_expand(hrp) + values) != _CHECKSUM_CONST:
        raise Bech32Error("invalid bech32 checksum")
    return hrp, bytes(_convert_bits(values[:-_CHECKSUM_LEN], 5, 8, pad=False))
