"""Case key epochs and envelopes (exchange.crypto.envelope)."""

from __future__ import annotations

import pytest

from exchange.crypto.age import (
    HeaderMacError,
    HybridIdentity,
    Identity,
    NoIdentityMatch,
    PayloadError,
    X25519Identity,
    decrypt,
    encrypt,
)
from exchange.crypto.envelope import (
    CaseKey,
    EnvelopeError,
    EnvelopeMismatch,
    unwrap_envelope,
    wrap_envelope,
)
from exchange.crypto.jcs import canonicalize


@pytest.fixture(scope="module")
def member() -> X25519Identity:
    return X25519Identity.generate()


def test_round_trip(member: X25519Identity) -> None:
    key = CaseKey.generate("case-2025-017", 3)
    envelope = wrap_envelope(key, member.recipient())
    assert envelope.startswith(b"age-encryption.org/v1\n")
    opened = unwrap_envelope(envelope, member, case_id="case-2025-017", epoch=3)
    assert opened == key
    assert opened.recipient().to_string() == key.recipient().to_string()


def test_round_trip_with_pq_member_and_identity_list() -> None:
    member = HybridIdentity.generate()
    key = CaseKey.generate("c", 0)
    envelope = wrap_envelope(key, member.recipient())
    identities: list[Identity] = [X25519Identity.generate(), member]
    assert unwrap_envelope(envelope, identities, case_id="c", epoch=0) == key


def test_payload_is_a_plain_age_file_naming_case_and_epoch(member: X25519Identity) -> None:
    key = CaseKey.generate("c1", 7)
    payload = decrypt(wrap_envelope(key, member.recipient()), [member])
    assert payload == canonicalize(
        {"case_id": "c1", "epoch": 7, "format": "exchange-case-key/v1",
         "identity": key.identity.to_string()}
    )


def test_wrong_member(member: X25519Identity) -> None:
    envelope = wrap_envelope(CaseKey.generate("c", 1), member.recipient())
    with pytest.raises(NoIdentityMatch):
        unwrap_envelope(envelope, X25519Identity.generate(), case_id="c", epoch=1)


def test_swapped_case_detected(member: X25519Identity) -> None:
    envelope = wrap_envelope(CaseKey.generate("case-a", 1), member.recipient())
    message = "for case 'case-a' epoch 1, expected case 'case-b'"
    with pytest.raises(EnvelopeMismatch, match=message) as info:
        unwrap_envelope(envelope, member, case_id="case-b", epoch=1)
    assert info.value.expected == ("case-b", 1) and info.value.found == ("case-a", 1)


def test_swapped_epoch_detected(member: X25519Identity) -> None:
    envelope = wrap_envelope(CaseKey.generate("case-a", 1), member.recipient())
    with pytest.raises(EnvelopeMismatch, match="epoch 1, expected case 'case-a' epoch 2"):
        unwrap_envelope(envelope, member, case_id="case-a", epoch=2)


def test_tampered_envelope_rejected(member: X25519Identity) -> None:
    envelope = bytearray(wrap_envelope(CaseKey.generate("c", 1), member.recipient()))
    envelope[-5] ^= 1
    with pytest.raises(PayloadError):
        unwrap_envelope(bytes(envelope), member, case_id="c", epoch=1)
    envelope[-5] ^= 1
    mac_start = bytes(envelope).index(b"\n--- ") + 5
    envelope[mac_start] = ord("A") if envelope[mac_start] != ord("A") else ord("B")
    with pytest.raises(HeaderMacError):
        unwrap_envelope(bytes(envelope), member, case_id="c", epoch=1)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'{"format":"exchange-case-key/v1"}', "must be an object with fields"),
        (b'{"case_id":"c","epoch":1,"format":"other","identity":"x"}', "format is 'other'"),
        (b'{"epoch":1,"case_id":"c","format":"exchange-case-key/v1","identity":"x"}',
         "not canonical"),
        (b'{"case_id":"c","epoch":1,"format":"exchange-case-key/v1","identity":"x"}',
         "valid age X25519 identity"),
    ],
)
def test_malformed_payload(member: X25519Identity, payload: bytes, message: str) -> None:
    envelope = encrypt(payload, [member.recipient()])
    with pytest.raises(EnvelopeError, match=message):
        unwrap_envelope(envelope, member, case_id="c", epoch=1)


def test_boolean_epoch_is_not_epoch_one(member: X25519Identity) -> None:
    payload = canonicalize({"case_id": "c", "epoch": True, "format": "exchange-case-key/v1",
                            "identity": X25519Identity.generate().to_string()})
    with pytest.raises(EnvelopeMismatch):
        unwrap_envelope(encrypt(payload, [member.recipient()]), member, case_id="c", epoch=1)


def test_oversize_envelope_refused(member: X25519Identity) -> None:
    with pytest.raises(EnvelopeError, match="expected at most"):
        unwrap_envelope(b"x" * 70_000, member, case_id="c", epoch=1)


def test_case_key_validation_and_repr() -> None:
    with pytest.raises(ValueError, match="epoch -1"):
        CaseKey.generate("c", -1)
    with pytest.raises(TypeError):
        CaseKey.generate("c", True)
    with pytest.raises(ValueError, match="control character"):
        CaseKey.generate("c\n", 1)
    with pytest.raises(ValueError, match="1-128"):
        CaseKey.generate("", 1)
    key = CaseKey.generate("c", 1)
    assert "AGE-SECRET-KEY" not in repr(key).upper()
    assert key.recipient().to_string() in repr(key)
