"""Strict ASCII armor of age files (age spec "ASCII armor", RFC 7468 strict)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto.age import ArmorError
from exchange.crypto.armor import ArmorDecoder, ArmorEncoder, armor, dearmor

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"


def feed_bytewise(text: bytes) -> bytes:
    decoder = ArmorDecoder()
    out = b"".join(decoder.update(text[i : i + 1]) for i in range(len(text)))
    return out + decoder.finalize()


@pytest.mark.parametrize("size", [0, 1, 47, 48, 49, 96, 1000])
def test_encoder_layout(size: int) -> None:
    data = bytes(range(256)) * 4
    text = armor(data[:size])
    lines = text.split(b"\n")
    assert lines[0] == BEGIN and lines[-2] == END and lines[-1] == b""
    body = lines[1:-2]
    assert all(len(line) == 64 for line in body[:-1])
    assert all(1 <= len(line) <= 64 for line in body)
    assert base64.b64decode(b"".join(body)) == data[:size]


@given(data=st.binary(max_size=2000), pieces=st.integers(1, 50))
def test_round_trip_in_pieces(data: bytes, pieces: int) -> None:
    encoder = ArmorEncoder()
    step = max(1, len(data) // pieces)
    text = b"".join(encoder.update(data[i : i + step]) for i in range(0, len(data), step))
    text += encoder.finalize()
    assert text == armor(data)
    assert dearmor(text) == data
    assert feed_bytewise(text) == data


def test_fast_path_matches_line_by_line() -> None:
    data = bytes(range(256)) * 200  # many full lines, decoded in blocks
    assert dearmor(armor(data)) == data
    assert feed_bytewise(armor(data)[:3000] + armor(data)[3000:]) == data


GOOD = armor(b"age-encryption.org/v1\n" + bytes(range(100)))


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace(b"\n", b"\r\n"),
        b" \t\r\n\n" + GOOD + b"\r\n \t",
        GOOD.rstrip(b"\n"),
        GOOD.rstrip(b"\n") + b"\r",
    ],
    ids=["crlf", "whitespace-outside", "no-final-newline", "final-cr"],
)
def test_accepted_variants(text: bytes) -> None:
    assert dearmor(text) == dearmor(GOOD)
    assert feed_bytewise(text) == dearmor(GOOD)


LINES = GOOD.split(b"\n")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"garbage\n" + GOOD, "expected '-----BEGIN"),
        (GOOD + b"garbage\n", "data after the armor END line"),
        (GOOD.replace(b"-----BEGIN", b"----- BEGIN"), "expected '-----BEGIN"),
        (GOOD.replace(b"AGE ENCRYPTED", b"age encrypted"), "expected '-----BEGIN"),
        (b"\n".join([LINES[0], b"Key: value", *LINES[1:]]), "not canonical padded base64"),
        (b"\n".join([LINES[0], b"", *LINES[1:]]), "armor line is 0 characters"),
        (b"\n".join([LINES[0], LINES[1][:-4], *LINES[2:]]), "expected the armor END line"),
        (b"\n".join([LINES[0], LINES[1] + b"AAAA", *LINES[2:]]), "armor line is 68"),
        (b"\n".join([LINES[0], b" " + LINES[1][1:], *LINES[2:]]), "not canonical"),
        (b"\n".join([LINES[0], LINES[1][:-1] + b" ", *LINES[2:]]), "not canonical"),
        (GOOD.replace(b"=\n", b"\n"), "missing padding"),
        (GOOD[: GOOD.index(END)], "armor END line missing"),
        (b"\n".join([*LINES[:-2], b"=ABC", *LINES[-2:]]), "expected the armor END line"),
        (b"", "armor BEGIN line missing"),
    ],
    ids=[
        "leading-garbage",
        "trailing-garbage",
        "space-in-marker",
        "lowercase-label",
        "pem-header",
        "empty-line",
        "short-middle-line",
        "long-line",
        "leading-space",
        "trailing-space",
        "no-padding",
        "no-end",
        "checksum-line",
        "empty-input",
    ],
)
def test_rejected_variants(text: bytes, message: str) -> None:
    with pytest.raises(ArmorError, match=message):
        dearmor(text)
    with pytest.raises(ArmorError):
        feed_bytewise(text)


def test_non_canonical_last_character_is_rejected() -> None:
    text = armor(b"\x00")  # "AA==": the second character's low bits are unused
    assert b"AA==" in text
    with pytest.raises(ArmorError, match="unused bits"):
        dearmor(text.replace(b"AA==", b"AB=="))


def test_empty_line_after_full_last_line_is_rejected() -> None:
    text = armor(bytes(48))
    with pytest.raises(ArmorError):
        dearmor(text.replace(END, b"\n" + END))
