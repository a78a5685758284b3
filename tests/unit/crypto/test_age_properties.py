"""Property tests of the age v1 implementation (round trips, tamper resistance, random access).

Hypothesis drives sizes around the 64 KiB chunk boundaries, recipient sets of
every type, arbitrary update() splits, single-byte changes and truncations.
scrypt uses a tiny work factor so the suite stays fast.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import random
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto import age
from exchange.crypto._format import Header, Stanza, parse_header
from exchange.crypto.age import (
    AgeError,
    Decryptor,
    Encryptor,
    HybridIdentity,
    Identity,
    RandomAccessDecryptor,
    Recipient,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
)

CHUNK = 64 * 1024
X1, X2 = X25519Identity.generate(), X25519Identity.generate()
PQ = HybridIdentity.generate()
BOUNDARY_SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK, 3 * CHUNK + 7]

sizes = st.one_of(st.sampled_from(BOUNDARY_SIZES), st.integers(0, 4 * CHUNK + 100))


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@st.composite
def key_sets(draw: st.DrawFn) -> tuple[list[Recipient], list[Identity]]:
    kind = draw(st.sampled_from(["x25519", "two-x25519", "hybrid", "mixed", "scrypt"]))
    if kind == "scrypt":
        passphrase = draw(st.text(min_size=1, max_size=20))
        work_factor = draw(st.integers(2, 4))
        return [ScryptRecipient(passphrase, work_factor)], [ScryptIdentity(passphrase)]
    recipients: list[Recipient] = {
        "x25519": [X1.recipient()],
        "two-x25519": [X2.recipient(), X1.recipient()],
        "hybrid": [PQ.recipient()],
        "mixed": [X1.recipient(), PQ.recipient()],
    }[kind]
    identity: Identity = draw(
        st.sampled_from([X1, PQ] if kind == "mixed" else [PQ] if kind == "hybrid" else [X1])
    )
    return recipients, [identity]


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(
    size=sizes,
    seed=st.integers(0, 2**32),
    keys=key_sets(),
    armor=st.booleans(),
    cuts=st.lists(st.integers(0, 2**20), max_size=6),
)
def test_round_trip_streaming(
    size: int, seed: int, keys: tuple[list[Recipient], list[Identity]], armor: bool, cuts: list[int]
) -> None:
    recipients, identities = keys
    plaintext = payload(size, seed)
    encryptor = Encryptor(recipients, armor=armor)
    ciphertext = b"".join(encryptor.update(p) for p in split(plaintext, cuts))
    ciphertext += encryptor.finalize()
    # The payload is exactly the spec's chunking: never a trailing empty chunk.
    if not armor:
        chunks = max(1, -(-size // CHUNK))
        header_size = parse_header(ciphertext).header_size
        assert len(ciphertext) == header_size + 16 + size + 16 * chunks
    decryptor = Decryptor(identities)
    released = b"".join(decryptor.update(p) for p in split(ciphertext, cuts))
    assert released + decryptor.finalize() == plaintext
    assert age.decrypt(ciphertext, identities) == plaintext


@given(size=sizes, seed=st.integers(0, 2**32), keys=key_sets(), armor=st.booleans())
def test_file_api_round_trip(
    size: int, seed: int, keys: tuple[list[Recipient], list[Identity]], armor: bool
) -> None:
    recipients, identities = keys
    plaintext = payload(size, seed)
    encrypted = io.BytesIO()
    written = age.encrypt_file(io.BytesIO(plaintext), encrypted, recipients, armor=armor)
    assert written == len(encrypted.getvalue())
    decrypted = io.BytesIO()
    assert age.decrypt_file(io.BytesIO(encrypted.getvalue()), decrypted, identities) == size
    assert decrypted.getvalue() == plaintext


SMALL = age.encrypt(payload(100, 1), [X1.recipient()])
MULTI = age.encrypt(payload(2 * CHUNK + 10, 2), [X1.recipient(), PQ.recipient()])


@pytest.mark.parametrize("ciphertext", [SMALL, MULTI], ids=["one-chunk", "three-chunks"])
@given(data=st.data())
def test_any_single_byte_change_is_rejected(ciphertext: bytes, data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(ciphertext) - 1))
    delta = data.draw(st.integers(1, 255))
    tampered = bytearray(ciphertext)
    tampered[index] ^= delta
    with pytest.raises(AgeError):
        age.decrypt(bytes(tampered), [X1])


@pytest.mark.parametrize("ciphertext", [SMALL, MULTI], ids=["one-chunk", "three-chunks"])
@given(data=st.data())
def test_truncation_or_extension_is_rejected(ciphertext: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(ciphertext) - 1))
    with pytest.raises(AgeError):
        age.decrypt(ciphertext[:cut], [X1])
    extra = data.draw(st.binary(min_size=1, max_size=64))
    with pytest.raises(AgeError):
        age.decrypt(ciphertext + extra, [X1])


@given(
    size=sizes,
    seed=st.integers(0, 2**32),
    ranges=st.lists(
        st.tuples(st.integers(0, 5 * CHUNK), st.integers(0, 3 * CHUNK)), min_size=1, max_size=5
    ),
)
def test_random_access_matches_full_decrypt(
    size: int, seed: int, ranges: list[tuple[int, int]]
) -> None:
    plaintext = payload(size, seed)
    reader = RandomAccessDecryptor(io.BytesIO(age.encrypt(plaintext, [X1.recipient()])), [X1])
    assert reader.plaintext_size == size
    for offset, length in ranges:
        assert reader.read_range(offset, length) == plaintext[offset : offset + length]


def test_random_access_rejects_truncated_file() -> None:
    ciphertext = age.encrypt(payload(3 * CHUNK, 3), [X1.recipient()])
    # Dropping whole final chunk leaves a valid-looking prefix: the last chunk
    # must be authenticated as final before any range is served.
    truncated = ciphertext[: len(ciphertext) - (CHUNK + 16)]
    with pytest.raises(age.PayloadError):
        RandomAccessDecryptor(io.BytesIO(truncated), [X1])


_VCHAR_TEXT = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30
)
stanzas = st.builds(
    Stanza, _VCHAR_TEXT, st.lists(_VCHAR_TEXT, max_size=4).map(tuple), st.binary(max_size=200)
)


@given(
    stanza_list=st.lists(stanzas, min_size=1, max_size=5),
    mac=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=16, max_size=16),
)
def test_header_round_trips_byte_for_byte(
    stanza_list: list[Stanza], mac: bytes, nonce: bytes
) -> None:
    header = Header(stanzas=tuple(stanza_list), mac=mac)
    encoded = header.encode()
    parsed = parse_header(encoded + nonce)
    assert parsed.header == header
    assert parsed.header_size == len(encoded)
    assert parsed.nonce == nonce
    assert parsed.mac_input == encoded[: encoded.rindex(b"---") + 3]


@given(stanza_list=st.lists(stanzas, min_size=1, max_size=3), data=st.data())
def test_mutated_header_that_parses_is_canonical(
    stanza_list: list[Stanza], data: st.DataObject
) -> None:
    """Malleability: any header that parses encodes back to the very same bytes."""
    encoded = bytearray(Header(stanzas=tuple(stanza_list), mac=bytes(32)).encode() + bytes(16))
    for _ in range(data.draw(st.integers(1, 3))):
        index = data.draw(st.integers(0, len(encoded) - 1))
        encoded[index] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_header(bytes(encoded))
    except age.HeaderError:
        return
    assert parsed.header.encode() == bytes(encoded[: parsed.header_size])


async def _chunks(data: bytes, step: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), step):
        yield data[at : at + step]


async def _collect(stream: AsyncIterator[bytes]) -> bytes:
    return b"".join([part async for part in stream])


@given(size=sizes, seed=st.integers(0, 2**32), step=st.integers(97, 3 * CHUNK), armor=st.booleans())
def test_async_wrappers_match_push_api(size: int, seed: int, step: int, armor: bool) -> None:
    plaintext = payload(size, seed)
    ciphertext = asyncio.run(
        _collect(age.encrypt_stream(_chunks(plaintext, step), [X1.recipient()], armor=armor))
    )
    assert age.decrypt(ciphertext, [X1]) == plaintext
    decrypted = asyncio.run(_collect(age.decrypt_stream(_chunks(ciphertext, step), [X1])))
    assert decrypted == plaintext


def test_async_decrypt_raises_on_tampering() -> None:
    ciphertext = bytearray(age.encrypt(payload(2 * CHUNK, 4), [X1.recipient()]))
    ciphertext[-1] ^= 1
    with pytest.raises(age.PayloadError):
        asyncio.run(_collect(age.decrypt_stream(_chunks(bytes(ciphertext), 1000), [X1])))
