"""The resumable age recipe (exchange.crypto.resumable): standard age out, same rules in."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from exchange.crypto.age import (
    AgeError,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    decrypt,
    encrypt,
)
from exchange.crypto.resumable import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    HeadedDecryptor,
    ResumableAge,
)
from tests.support import age_cli

ALICE = X25519Identity.generate()


def test_resumed_stream_is_a_standard_age_file_and_reproducible() -> None:
    plain = bytes(range(256)) * 300
    recipe = ResumableAge.new([ALICE.recipient()])
    stream = recipe.stream()
    body = stream.update(plain) + stream.finalize()
    again = ResumableAge.open(recipe.header, recipe.seal_key(ALICE.recipient()), [ALICE])
    second = again.stream()
    assert second.update(plain) + second.finalize() == body
    assert decrypt(recipe.header + body, [ALICE]) == plain
    assert recipe.size(len(plain)) == len(recipe.header) + len(body)


def test_a_passphrase_recipient_must_stand_alone() -> None:
    with pytest.raises(ValueError, match="scrypt"):
        ResumableAge.new([ScryptRecipient("pw", 2), ALICE.recipient()])
    with pytest.raises(ValueError, match="at least one"):
        ResumableAge.new([])
    alone = ResumableAge.new([ScryptRecipient("pw", 2)])
    stream = alone.stream()
    assert decrypt(alone.header + stream.update(b"x") + stream.finalize(),
                   [ScryptIdentity("pw")]) == b"x"


def _age_cli_file(tmp_path: Path, plain: bytes) -> bytes:
    """``plain`` encrypted to ALICE by the reference ``age`` CLI (not our encoder)."""
    age = age_cli()
    source = tmp_path / "plain"
    source.write_bytes(plain)
    return subprocess.run([age, "-r", ALICE.recipient().to_string(), str(source)],
                          capture_output=True, check=True).stdout


@pytest.mark.parametrize("chunks_kept", [0, 1, 3])
def test_a_headed_decryption_resumes_at_a_chunk_from_the_kept_header(
    tmp_path: Path, chunks_kept: int,
) -> None:
    """What a pull does: keep the header and plaintext, reopen them, continue with a Range."""
    plain = os.urandom(4 * CHUNK_SIZE + 123)
    ciphertext = _age_cli_file(tmp_path, plain)
    first = HeadedDecryptor([ALICE])
    released = bytearray()
    first.feed(ciphertext[:1000], released.extend)  # the header, and no whole chunk yet
    assert first.age is not None and ciphertext.startswith(first.age.header)
    header = first.age.header

    reopened = ResumableAge.from_header(header, [ALICE])
    regenerated = bytearray(chunks_kept * ENCRYPTED_CHUNK_SIZE)
    reopened.stream().seal_into(memoryview(plain[: chunks_kept * CHUNK_SIZE]),
                                memoryview(regenerated), final=False)
    at = len(header) + len(regenerated)
    assert ciphertext[len(header):at] == regenerated  # the prefix's ciphertext, regenerated
    rest = HeadedDecryptor.resumed(reopened, chunks_kept)
    out = bytearray()
    rest.feed(ciphertext[at:], out.extend)
    out += rest.finalize()
    assert bytes(out) == plain[chunks_kept * CHUNK_SIZE:]


def test_a_kept_header_that_was_altered_or_cut_does_not_open(tmp_path: Path) -> None:
    ciphertext = _age_cli_file(tmp_path, b"evidence")
    decryptor = HeadedDecryptor([ALICE])
    decryptor.feed(ciphertext, bytearray().extend)
    assert decryptor.age is not None
    header = bytearray(decryptor.age.header)
    with pytest.raises(AgeError):
        ResumableAge.from_header(bytes(header[:-1]), [ALICE])
    with pytest.raises(AgeError):
        ResumableAge.from_header(bytes(header) + b"x", [ALICE])
    header[-20] ^= 1  # inside the MAC
    with pytest.raises(AgeError):
        ResumableAge.from_header(bytes(header), [ALICE])
    with pytest.raises(AgeError):
        ResumableAge.from_header(decryptor.age.header, [X25519Identity.generate()])


def test_a_headed_decryption_refuses_armor_and_a_cut_file(tmp_path: Path) -> None:
    armored = encrypt(b"evidence", [ALICE.recipient()], armor=True)
    with pytest.raises(AgeError):
        HeadedDecryptor([ALICE]).feed(armored, bytearray().extend)
    cut = HeadedDecryptor([ALICE])
    cut.feed(_age_cli_file(tmp_path, b"evidence")[:20], bytearray().extend)
    with pytest.raises(AgeError):
        cut.finalize()


def test_several_feeds_fill_one_scratch_in_turn(tmp_path: Path) -> None:
    """What a pull does with the network's buffers: each feed writes after the previous one."""
    plain = os.urandom(9 * CHUNK_SIZE + 77)
    ciphertext = _age_cli_file(tmp_path, plain)
    first = HeadedDecryptor([ALICE])
    first.feed(ciphertext[:1000], bytearray().extend)
    assert first.age is not None
    at = len(first.age.header)
    decryptor = HeadedDecryptor.resumed(ResumableAge.from_header(first.age.header, [ALICE]), 0)
    scratch = bytearray(len(ciphertext) + CHUNK_SIZE)
    views: list[memoryview] = []
    used = 0
    for size in (100_000, 5, 262_144, 70_000, 262_144):  # odd, unaligned buffers
        def collect(piece: bytes | bytearray | memoryview) -> None:
            nonlocal used
            view = memoryview(piece)
            assert view.obj is scratch  # written in place, never into a buffer of its own
            views.append(view)
            used += len(view)

        decryptor.feed(ciphertext[at : at + size], collect, scratch=memoryview(scratch)[used:])
        at += size
    decryptor.feed(ciphertext[at:], lambda piece: views.append(memoryview(bytes(piece))))
    last = decryptor.finalize()
    assert b"".join(views) + last == plain
    assert bytes(scratch[:used]) == plain[:used]  # one run, in order
