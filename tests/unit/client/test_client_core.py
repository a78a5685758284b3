"""Unit tests of the client library's pure parts: config precedence, resumable age
encryption, and the plain-language problem translation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exchange.client.config import load_client_config
from exchange.client.problems import refusal
from exchange.crypto.age import X25519Identity, decrypt
from exchange.crypto.resumable import ResumableAge


def test_config_precedence_flags_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"url": "https://file.example", "keystore": "k.keystore", '
                      '"log_key": "from-file"}')
    env = {"EXCHANGE_URL": "https://env.example", "HOME": str(tmp_path)}
    loaded = load_client_config({"log_key": "from-flag"}, env, config_file=config)
    assert loaded.url == "https://env.example"
    assert loaded.log_key == "from-flag"
    assert loaded.keystore == tmp_path / "k.keystore"  # relative to the config file
    assert loaded.state_root == tmp_path / ".local/state/exchange"
    env["XDG_STATE_HOME"] = str(tmp_path / "xdg")
    assert load_client_config({}, env, config_file=config).state_root == tmp_path / "xdg/exchange"


def test_config_file_with_an_unknown_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"passphrase": "secret"}')
    with pytest.raises(Exception, match="unknown key 'passphrase'"):
        load_client_config({}, {"HOME": str(tmp_path)}, config_file=config)


@pytest.mark.parametrize("size", [0, 1, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 300_000])
def test_resumable_age_regenerates_identical_standard_ciphertext(size: int) -> None:
    identity, me = X25519Identity.generate(), X25519Identity.generate()
    plaintext = os.urandom(size)
    age = ResumableAge.new([identity.recipient()])

    def encrypt(codec: ResumableAge) -> bytes:
        stream = codec.stream()
        return codec.header + stream.update(plaintext) + stream.finalize()

    first = encrypt(age)
    assert len(first) == age.size(size)
    assert decrypt(first, [identity]) == plaintext
    resumed = ResumableAge.open(age.header, age.seal_key(me.recipient()), [me])
    assert encrypt(resumed) == first
    assert "key" not in repr(resumed).lower().replace("header", "")


def test_problem_documents_become_plain_sentences_with_hints() -> None:
    err = refusal(403, {"type": "https://exchange.invalid/problems/not-a-member",
                        "detail": "participant is not an active member of case 'c1'"},
                  audit_index=42, doing="listing")
    assert str(err).startswith("listing: you are not an active member of this case")
    assert err.slug == "not-a-member" and err.status == 403
    assert any("audit index 42" in h for h in err.hints)
    unknown = refusal(418, {"type": "https://exchange.invalid/problems/teapot", "detail": "x"})
    assert "418 teapot" in str(unknown)
