"""Bech32 (BIP 173) without the length limit, as used by age keys."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto import bech32

# Valid and invalid strings from the BIP 173 test vectors.
BIP173_VALID = [
    "A12UEL5L",
    "a12uel5l",
    "an83characterlonghumanreadablepartthatcontainsthenumber1andtheexcludedcharactersbio1tt5tgs",
    "abcdef1qpzry9x8gf2tvdw0s3jn54khce6mua7lmqqqxw",
    "11" + "q" * 82 + "c8247j",
    "split1checkupstagehandshakeupstreamerranterredcaperred2y9e3w",
    "?1ezyfcl",
]
BIP173_INVALID = [
    "pzry9x0s0muk",  # no separator
    "1pzry9x0s0muk",  # empty human-readable part
    "x1b4n0q5v",  # invalid data character
    "li1dgmt3",  # checksum too short
    "de1lg7wt\xff",  # invalid character in checksum
    "A1G7SGD8",  # checksum computed over the uppercase form
    "10a06t8",  # empty human-readable part
    "1qzzfhee",  # empty human-readable part
    "a12UEL5L",  # mixed case
]


@pytest.mark.parametrize("text", BIP173_VALID)
def test_bip173_valid_strings_decode_and_reencode(text: str) -> None:
    hrp, _ = bech32.decode(text)
    # The 5-bit payloads of these vectors need not be whole bytes, so check
    # the checksum path only; byte payloads are covered by the round trip.
    assert hrp == text.lower()[: text.lower().rfind("1")]


@pytest.mark.parametrize("text", BIP173_INVALID)
def test_bip173_invalid_strings_are_rejected(text: str) -> None:
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text)


def test_known_age_recipient() -> None:
    # The CCTV test identity and its recipient as printed by age-keygen -y.
    hrp, data = bech32.decode(
        "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
    )
    assert hrp == "age-secret-key-"
    assert len(data) == 32
    assert bech32.encode(hrp, data).upper() == (
        "AGE-SECRET-KEY-1EGTZVFFV20835NWYV6270LXYVK2VKNX2MMDKWYKLMGR48UAWX40Q2P2LM0"
    )


@given(
    hrp=st.sampled_from(["age", "age-secret-key-", "age1pq", "x"]), data=st.binary(max_size=1300)
)
def test_round_trip_without_length_limit(hrp: str, data: bytes) -> None:
    text = bech32.encode(hrp, data)
    assert bech32.decode(text) == (hrp, data)
    assert bech32.decode(text.upper()) == (hrp, data)


@given(
    data=st.binary(min_size=1, max_size=64),
    index=st.integers(0, 200),
    char=st.sampled_from("qpzry9x8gf2tvdw0s3jn54khce6mua7l"),
)
def test_any_substitution_breaks_the_checksum(data: bytes, index: int, char: str) -> None:
    text = bech32.encode("age", data)
    position = 4 + index % (len(text) - 4)
    if text[position] == char:
        return
    with pytest.raises(bech32.Bech32Error):
        bech32.decode(text[:position] + char + text[position + 1 :])


def test_nonzero_padding_is_rejected() -> None:
    # One byte = 8 bits -> two 5-bit groups with 2 padding bits; set them.
    text = bech32.encode("age", b"\x00")
    values = [bech32._CHARSET_REV[c] for c in text[4:-6]]
    values[-1] |= 1
    forged_data = "".join(bech32._CHARSET[v] for v in values)
    polymod = bech32._polymod([*bech32._hrp_expand("age"), *values, 0, 0, 0, 0, 0, 0]) ^ 1
    checksum = "".join(bech32._CHARSET[(polymod >> 5 * (5 - i)) & 31] for i in range(6))
    with pytest.raises(bech32.Bech32Error, match="padding"):
        bech32.decode("age1" + forged_data + checksum)
