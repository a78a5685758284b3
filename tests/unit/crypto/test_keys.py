"""Participant identities, public bundles and fingerprints (exchange.crypto.keys)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import nacl.signing
import pytest

from exchange.crypto.age import HybridIdentity, HybridRecipient, X25519Identity, X25519Recipient
from exchange.crypto.keys import (
    BundleError,
    ParticipantIdentity,
    PublicBundle,
    fingerprint,
    parse_bundle,
)
from exchange.errors import CryptoError

FINGERPRINT_RE = re.compile(r"([A-Z2-7]{4}-){7}[A-Z2-7]{4}")


def fixed_identity(*, pq: bool = False, seed: int = 1) -> ParticipantIdentity:
    return ParticipantIdentity(
        id="alice.fr",
        display_name="Alice Martin",
        signing_key=nacl.signing.SigningKey(bytes([seed]) * 32),
        age_identity=X25519Identity.from_bytes(bytes([seed + 1]) * 32),
        pq_identity=HybridIdentity.from_bytes(bytes([seed + 2]) * 32) if pq else None,
    )


def bundle_obj(**changes: Any) -> dict[str, Any]:
    obj = fixed_identity().public_bundle().to_json_obj()
    for key, value in changes.items():
        if value is _DELETE:
            del obj[key]
        else:
            obj[key] = value
    return obj


_DELETE = object()


def test_bundle_round_trip() -> None:
    bundle = ParticipantIdentity.generate("bob", "Bob").public_bundle()
    parsed = parse_bundle(bundle.encode())
    assert parsed == bundle
    assert parsed.fingerprints == bundle.fingerprints
    assert parse_bundle(bundle.encode().decode()) == bundle


def test_pq_bundle_round_trip_and_preferred_recipient() -> None:
    identity = ParticipantIdentity.generate("carol", pq=True)
    bundle = identity.public_bundle()
    assert bundle.pq_recipient is not None and bundle.pq_recipient.startswith("age1pq1")
    assert set(bundle.fingerprints) == {"bundle", "signing_key", "age_recipient", "pq_recipient"}
    assert parse_bundle(bundle.encode()) == bundle
    assert isinstance(bundle.recipient(), HybridRecipient)
    assert isinstance(identity.age_identities()[0], HybridIdentity)
    classic = ParticipantIdentity.generate("d").public_bundle()
    assert isinstance(classic.recipient(), X25519Recipient)


def test_default_display_name_is_the_id() -> None:
    assert ParticipantIdentity.generate("dave").display_name == "dave"


def test_fingerprint_follows_the_documented_layout() -> None:
    bundle = fixed_identity().public_bundle()
    body = {
        "age_recipient": bundle.age_recipient,
        "id": bundle.id,
        "pq_recipient": None,
        "signing_key": base64.b64encode(bundle.signing_key).decode(),
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    digest = hashlib.sha256(b"exchange-fingerprint/v1/bundle\n" + canonical).digest()
    text = base64.b32encode(digest[:20]).decode()
    assert bundle.fingerprint == "-".join(text[i : i + 4] for i in range(0, 32, 4))
    assert FINGERPRINT_RE.fullmatch(bundle.fingerprint)
    for value in bundle.fingerprints.values():
        assert FINGERPRINT_RE.fullmatch(value)


def test_fingerprint_is_stable() -> None:
    # Pinned: a change here breaks every fingerprint administrators have compared.
    assert fixed_identity().public_bundle().fingerprint == "7SKK-DNAQ-Y5TF-7XPA-UEIJ-JV2B-5JAH-44E3"
    assert fingerprint("age", "x") == fingerprint("age", "x")
    # The label separates kinds: the same value gives unrelated fingerprints.
    assert fingerprint("age", "x") != fingerprint("age-pq", "x")


def test_fingerprint_changes_when_any_key_or_the_id_changes() -> None:
    base = fixed_identity(pq=True)
    b = base.public_bundle()
    other_signing = PublicBundle(
        id=b.id, display_name=b.display_name, signing_key=bytes(32),
        age_recipient=b.age_recipient, pq_recipient=b.pq_recipient,
    )
    other_age = PublicBundle(
        id=b.id, display_name=b.display_name, signing_key=b.signing_key,
        age_recipient=X25519Identity.generate().recipient().to_string(),
        pq_recipient=b.pq_recipient,
    )
    other_pq = PublicBundle(
        id=b.id, display_name=b.display_name, signing_key=b.signing_key,
        age_recipient=b.age_recipient, pq_recipient=None,
    )
    other_id = PublicBundle(
        id="mallory", display_name=b.display_name, signing_key=b.signing_key,
        age_recipient=b.age_recipient, pq_recipient=b.pq_recipient,
    )
    prints = {x.fingerprint for x in (b, other_signing, other_age, other_pq, other_id)}
    assert len(prints) == 5
    assert other_signing.fingerprints["signing_key"] != b.fingerprints["signing_key"]
    assert other_age.fingerprints["age_recipient"] != b.fingerprints["age_recipient"]


def test_display_name_is_not_fingerprinted() -> None:
    b = fixed_identity().public_bundle()
    renamed = PublicBundle(
        id=b.id, display_name="Someone Else", signing_key=b.signing_key,
        age_recipient=b.age_recipient,
    )
    assert renamed.fingerprint == b.fingerprint


def test_identity_repr_has_no_secrets() -> None:
    identity = fixed_identity()
    text = repr(identity)
    assert "alice.fr" in text and identity.public_bundle().fingerprint in text
    assert "AGE-SECRET-KEY" not in text.upper()
    assert bytes(identity.signing_key).hex() not in text


_X25519 = X25519Identity.generate().recipient().to_string()

BAD_BUNDLES: list[tuple[str, object, str]] = [
    ("not_object", [], "must be a JSON object"),
    ("unknown_field", bundle_obj(extra=1), "unknown field 'extra'"),
    ("missing_id", bundle_obj(id=_DELETE), "missing the field 'id'"),
    ("missing_signing_key", bundle_obj(signing_key=_DELETE), "missing the field 'signing_key'"),
    ("missing_age", bundle_obj(age_recipient=_DELETE), "missing the field 'age_recipient'"),
    ("bad_format", bundle_obj(format="exchange-bundle/v2"), "format is 'exchange-bundle/v2'"),
    ("id_uppercase", bundle_obj(id="Alice"), "participant id 'Alice' is invalid"),
    ("id_empty", bundle_obj(id=""), "participant id '' is invalid"),
    ("id_too_long", bundle_obj(id="a" * 65), "is invalid"),
    ("id_not_string", bundle_obj(id=7), "participant id must be a string"),
    ("name_empty", bundle_obj(display_name="  "), "display_name must not be empty"),
    ("name_control", bundle_obj(display_name="a\x1bb"), "control character"),
    ("name_type", bundle_obj(display_name=None), "display_name must be a string"),
    ("name_long", bundle_obj(display_name="x" * 201), "at most 200"),
    ("key_not_b64", bundle_obj(signing_key="!!!"), "signing_key '!!!' is not valid base64"),
    ("key_short", bundle_obj(signing_key=base64.b64encode(bytes(31)).decode()),
     "31 bytes, expected 32"),
    ("key_type", bundle_obj(signing_key=123), "signing_key must be a base64 string"),
    ("key_noncanonical", bundle_obj(signing_key="A" * 42 + "B="), "not canonical"),
    ("age_invalid", bundle_obj(age_recipient="age1xyz"), "age_recipient 'age1xyz' is not a valid"),
    ("age_type", bundle_obj(age_recipient=None), "age_recipient must be a string"),
    ("pq_is_x25519", bundle_obj(pq_recipient=_X25519), "pq_recipient"),
    ("fingerprint_mismatch", bundle_obj(fingerprints={"bundle": "AAAA"}), "do not match its keys"),
    ("fingerprint_type", bundle_obj(fingerprints=[1]), "fingerprints must be an object"),
]


@pytest.mark.parametrize(("case", "obj", "message"), BAD_BUNDLES, ids=[c[0] for c in BAD_BUNDLES])
def test_rejects_bad_bundle_field(case: str, obj: object, message: str) -> None:
    with pytest.raises(BundleError) as info:
        parse_bundle(json.dumps(obj))
    assert message in str(info.value)


def test_rejects_uppercase_recipient() -> None:
    obj = bundle_obj()
    obj["age_recipient"] = obj["age_recipient"].upper()
    obj.pop("fingerprints")
    with pytest.raises(BundleError, match="age_recipient"):
        parse_bundle(json.dumps(obj))


def test_fingerprints_are_optional_in_input() -> None:
    obj = bundle_obj(fingerprints=_DELETE)
    assert parse_bundle(json.dumps(obj)) == fixed_identity().public_bundle()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b"{", "not valid JSON"),
        (b"\xff{}", "not valid UTF-8"),
        (b'{"id": "a", "id": "b"}', "duplicate JSON member 'id'"),
        (b'{"x": NaN}', "NaN"),
        (b" " * 70_000, "expected at most"),
    ],
)
def test_rejects_malformed_documents(text: bytes, message: str) -> None:
    with pytest.raises(BundleError, match=message):
        parse_bundle(text)


def test_bundle_error_is_value_error_and_crypto_error() -> None:
    assert issubclass(BundleError, ValueError) and issubclass(BundleError, CryptoError)


def test_constructor_type_checks() -> None:
    with pytest.raises(TypeError, match="signing_key"):
        ParticipantIdentity(
            id="a", display_name="a", signing_key=b"x" * 32,  # type: ignore[arg-type]
            age_identity=X25519Identity.generate(),
        )
    with pytest.raises(BundleError, match="signing_key is 3 bytes"):
        PublicBundle(id="a", display_name="a", signing_key=b"abc", age_recipient=_X25519)
