"""Unit tests of the client library's pure parts: key pins against log entries, config
precedence, resumable age encryption, and the plain-language problem translation."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from exchange.audit.entry import ZERO_PREV, AuditEntry
from exchange.client.config import load_client_config
from exchange.client.errors import KeySubstituted
from exchange.client.pins import Pin, bundle_from_view, check_entry, check_pin
from exchange.client.problems import refusal
from exchange.crypto.age import X25519Identity, decrypt
from exchange.crypto.keys import ParticipantIdentity, PublicBundle
from exchange.crypto.resumable import ResumableAge


def _entry(bundle: PublicBundle, *, action: str = "participant.enrol", index: int = 3,
           outcome: str = "ok") -> bytes:
    details = {
        "participant": bundle.id, "role": "coordinator", "organisation": "", "country": "",
        "display_name": bundle.display_name,
        "signing_key": base64.b64encode(bundle.signing_key).decode(),
        "age_recipient": bundle.age_recipient, "pq_recipient": bundle.pq_recipient,
        "fingerprint": bundle.fingerprint,
    }
    return AuditEntry(index=index, time="2025-01-01T00:00:00.000000Z", actor="admin",
                      actor_key="", action=action, case=None, object=bundle.id,
                      outcome=outcome, reason=None if outcome == "ok" else "forbidden",
                      request=None, details=details, prev=ZERO_PREV).encode()


def test_entry_with_the_served_keys_is_accepted() -> None:
    bundle = ParticipantIdentity.generate("carol").public_bundle()
    assert check_entry(bundle, _entry(bundle)).index == 3


def test_entry_of_other_keys_is_key_substitution() -> None:
    logged = ParticipantIdentity.generate("carol").public_bundle()
    served = ParticipantIdentity.generate("carol").public_bundle()
    with pytest.raises(KeySubstituted, match="signing_key differs"):
        check_entry(served, _entry(logged))


@pytest.mark.parametrize(("action", "outcome"), [("participant.show", "ok"),
                                                 ("participant.enrol", "denied")])
def test_entry_that_is_not_an_ok_enrolment_is_refused(action: str, outcome: str) -> None:
    bundle = ParticipantIdentity.generate("carol").public_bundle()
    with pytest.raises(KeySubstituted):
        check_entry(bundle, _entry(bundle, action=action, outcome=outcome))


def test_view_whose_fingerprint_is_not_of_its_keys_is_refused() -> None:
    bundle = ParticipantIdentity.generate("carol").public_bundle()
    view = {"id": "carol", "display_name": "carol", "age_recipient": bundle.age_recipient,
            "signing_key": base64.b64encode(bundle.signing_key).decode(), "pq_recipient": None,
            "fingerprint": ParticipantIdentity.generate("carol").public_bundle().fingerprint}
    with pytest.raises(KeySubstituted, match="stated fingerprint"):
        bundle_from_view(view)
    view["fingerprint"] = bundle.fingerprint
    assert bundle_from_view(view) == bundle


def test_pin_change_needs_a_newer_logged_key_entry() -> None:
    bundle = ParticipantIdentity.generate("carol").public_bundle()
    pinned = Pin(fingerprint="OLD-FINGERPRINT", key_index=3)
    assert check_pin(bundle, 3, Pin(fingerprint=bundle.fingerprint, key_index=3),
                     logged=True) is None
    assert check_pin(bundle, 3, None, logged=True) is None
    warning = check_pin(bundle, 9, pinned, logged=True)
    assert warning is not None and "audit index 9" in warning
    with pytest.raises(KeySubstituted, match="no key change"):
        check_pin(bundle, 3, pinned, logged=True)  # same entry, other keys
    with pytest.raises(KeySubstituted):
        check_pin(bundle, 9, pinned, logged=False)  # change not proven in the log


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
