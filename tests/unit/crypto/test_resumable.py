"""The resumable age recipe (exchange.crypto.resumable): standard age out, same rules in."""

from __future__ import annotations

import pytest

from exchange.crypto.age import ScryptIdentity, ScryptRecipient, X25519Identity, decrypt
from exchange.crypto.resumable import ResumableAge

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
