"""Signed, sealed manifests (exchange.crypto.manifest)."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json

import nacl.signing
import pytest

from exchange.crypto.age import NoIdentityMatch, X25519Identity, decrypt, encrypt
from exchange.crypto.jcs import canonicalize
from exchange.crypto.manifest import (
    Manifest,
    ManifestError,
    ManifestMismatch,
    ManifestSignatureError,
    UnsafeFileName,
    format_timestamp,
    open_manifest,
    safe_file_name,
    safe_folder,
    seal_manifest,
    sign_manifest,
    verify_against,
)

PLAIN = b"evidence bytes"
CIPHER = b"ciphertext bytes"
SIGNER = nacl.signing.SigningKey(bytes(range(32)))
CASE = X25519Identity.generate()


def make(**changes: object) -> Manifest:
    fields: dict[str, object] = {
        "file_name": "interview 03 – Ø.mp4",
        "media_type": "video/mp4",
        "plaintext_size": len(PLAIN),
        "plaintext_sha256": hashlib.sha256(PLAIN).hexdigest(),
        "ciphertext_size": len(CIPHER),
        "ciphertext_sha256": hashlib.sha256(CIPHER).hexdigest(),
        "case_id": "case-2025-017",
        "epoch": 2,
        "uploader": "alice.fr",
        "uploaded_at": "2025-03-01T09:30:00Z",
    }
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def lookup(participant: str) -> nacl.signing.VerifyKey | None:
    return SIGNER.verify_key if participant == "alice.fr" else None


def test_sign_seal_open_round_trip() -> None:
    manifest = make()
    sealed = seal_manifest(manifest, SIGNER, CASE.recipient())
    assert sealed.startswith(b"age-encryption.org/v1\n")
    assert b"interview" not in sealed
    assert open_manifest(sealed, CASE, lookup, case_id="case-2025-017", epoch=2) == manifest


def test_lookup_may_return_raw_bytes() -> None:
    sealed = seal_manifest(make(), SIGNER, CASE.recipient())
    assert open_manifest(sealed, CASE, lambda _: bytes(SIGNER.verify_key)) == make()


@pytest.mark.parametrize("size", [0, 31, 33, 64])
def test_lookup_returning_a_key_of_the_wrong_size_is_a_signature_error(size: int) -> None:
    sealed = seal_manifest(make(), SIGNER, CASE.recipient())
    with pytest.raises(ManifestSignatureError, match=f"is {size} bytes, expected a 32-byte"):
        open_manifest(sealed, CASE, lambda _: bytes(SIGNER.verify_key).ljust(size, b"\0")[:size])


def test_lookup_returning_a_non_key_is_a_type_error() -> None:
    sealed = seal_manifest(make(), SIGNER, CASE.recipient())
    with pytest.raises(TypeError, match="found str"):
        open_manifest(sealed, CASE, lambda _: "key")  # type: ignore[arg-type,return-value]


def test_signature_covers_context_and_jcs_bytes() -> None:
    manifest = make()
    expected = b"exchange-manifest-signature/v1\x00" + canonicalize(manifest.to_json_obj())
    assert manifest.signed_bytes() == expected
    SIGNER.verify_key.verify(expected, sign_manifest(manifest, SIGNER))


def _reseal(manifest_obj: dict[str, object], signature: bytes) -> bytes:
    payload = canonicalize(
        {"format": "exchange-signed-manifest/v1", "manifest": manifest_obj,
         "signature": base64.b64encode(signature).decode()}
    )
    return encrypt(payload, [CASE.recipient()])


@pytest.mark.parametrize(
    ("field", "value"),
    [("file_name", "other.mp4"), ("plaintext_size", 999), ("epoch", 3),
     ("ciphertext_sha256", "0" * 64), ("uploaded_at", "2025-03-01T09:30:01Z")],
)
def test_tampered_field_rejected(field: str, value: object) -> None:
    manifest = make()
    signature = sign_manifest(manifest, SIGNER)
    obj = manifest.to_json_obj()
    obj[field] = value
    with pytest.raises(ManifestSignatureError, match="does not verify under the key of uploader"):
        open_manifest(_reseal(obj, signature), CASE, lookup)


def test_wrong_signer_rejected() -> None:
    sealed = seal_manifest(make(), nacl.signing.SigningKey.generate(), CASE.recipient())
    with pytest.raises(ManifestSignatureError):
        open_manifest(sealed, CASE, lookup)


def test_uploader_swapped_to_another_participant_rejected() -> None:
    mallory = nacl.signing.SigningKey.generate()
    sealed = seal_manifest(make(uploader="mallory"), mallory, CASE.recipient())
    with pytest.raises(ManifestSignatureError, match="'mallory' is not a known participant"):
        open_manifest(sealed, CASE, lookup)


def test_wrong_case_identity() -> None:
    sealed = seal_manifest(make(), SIGNER, CASE.recipient())
    with pytest.raises(NoIdentityMatch):
        open_manifest(sealed, X25519Identity.generate(), lookup)


def test_case_and_epoch_expectations() -> None:
    sealed = seal_manifest(make(), SIGNER, CASE.recipient())
    with pytest.raises(ManifestMismatch, match="case 'case-2025-017', expected 'other'"):
        open_manifest(sealed, CASE, lookup, case_id="other")
    with pytest.raises(ManifestMismatch, match="epoch 2, expected 5"):
        open_manifest(sealed, CASE, lookup, epoch=5)


def test_malformed_sealed_payloads() -> None:
    manifest = make()
    sig = sign_manifest(manifest, SIGNER)
    obj = manifest.to_json_obj()
    with pytest.raises(ManifestError, match="unknown field 'extra'"):
        open_manifest(_reseal({**obj, "extra": 1}, sig), CASE, lookup)
    del obj["uploader"]
    with pytest.raises(ManifestError, match="missing the field 'uploader'"):
        open_manifest(_reseal(obj, sig), CASE, lookup)
    with pytest.raises(ManifestError, match="signature is not 64 bytes"):
        open_manifest(_reseal(manifest.to_json_obj(), b"short"), CASE, lookup)
    with pytest.raises(ManifestError, match="not valid JSON"):
        open_manifest(encrypt(b"{", [CASE.recipient()]), CASE, lookup)
    bad_format = canonicalize({"format": "x", "manifest": {}, "signature": ""})
    with pytest.raises(ManifestError, match="format is 'x'"):
        open_manifest(encrypt(bad_format, [CASE.recipient()]), CASE, lookup)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"file_name": "a\x00b"}, "contains NUL"),
        ({"file_name": ""}, "file name is empty"),
        ({"file_name": "x" * 256}, "256 bytes"),
        ({"media_type": "video"}, "not a type/subtype"),
        ({"plaintext_size": -1}, "outside"),
        ({"ciphertext_size": 1.0}, "must be an integer"),
        ({"plaintext_size": True}, "must be an integer"),
        ({"plaintext_sha256": "AB" * 32}, "64 lowercase hex"),
        ({"ciphertext_sha256": "ab"}, "64 lowercase hex"),
        ({"epoch": -1}, "epoch -1"),
        ({"uploader": "Alice"}, "uploader 'Alice' is invalid"),
        ({"uploaded_at": "2025-03-01 09:30:00"}, "not an RFC 3339 UTC"),
        ({"uploaded_at": "2025-03-01T09:30:00+01:00"}, "not an RFC 3339 UTC"),
        ({"uploaded_at": "2025-02-30T09:30:00Z"}, "not a valid date"),
        ({"format": "exchange-manifest/v0"}, "format is"),
    ],
)
def test_manifest_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        make(**changes)


def test_manifest_json_round_trip() -> None:
    manifest = make()
    assert Manifest.from_json_obj(json.loads(json.dumps(manifest.to_json_obj()))) == manifest
    assert dataclasses.replace(manifest, epoch=9).epoch == 9


def test_verify_against_accepts_matching_measurements() -> None:
    manifest = make()
    verify_against(
        manifest,
        ciphertext_sha256=hashlib.sha256(CIPHER).digest(),
        plaintext_sha256=hashlib.sha256(PLAIN).hexdigest(),
        ciphertext_size=len(CIPHER),
        plaintext_size=len(PLAIN),
    )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"ciphertext_sha256": hashlib.sha256(b"x").digest()}, "ciphertext_sha256"),
        ({"plaintext_sha256": hashlib.sha256(b"x").hexdigest()}, "plaintext_sha256"),
        ({"ciphertext_size": 1}, "ciphertext_size"),
        ({"plaintext_size": 1}, "plaintext_size"),
    ],
)
def test_verify_against_names_the_mismatch(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ManifestMismatch, match=f"{field} mismatch: manifest says") as info:
        verify_against(make(), **kwargs)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.expected == getattr(make(), field)


def test_verify_against_needs_a_measurement() -> None:
    with pytest.raises(ValueError, match="at least one"):
        verify_against(make())


@pytest.mark.parametrize(
    "name",
    ["../etc/passwd", "a/b", "a\\b", ".", "..", "", "a\x00b", "evil\u202etxt.exe", "x\ny",
     "é" * 128],
)
def test_safe_file_name_rejects(name: str) -> None:
    with pytest.raises(UnsafeFileName):
        safe_file_name(name)


@pytest.mark.parametrize(
    "name", ["report.pdf", "interview 03 – Ø.mp4", ".hidden", "a..b", "日本.txt"]
)
def test_safe_file_name_accepts(name: str) -> None:
    assert safe_file_name(name) == name


def test_manifest_keeps_unsafe_but_printable_names() -> None:
    # The original name is evidence; safety is checked when it becomes a destination.
    manifest = make(file_name="../x")
    with pytest.raises(UnsafeFileName):
        safe_file_name(manifest.file_name)


def test_format_timestamp() -> None:
    moment = dt.datetime(2025, 3, 1, 10, 30, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert format_timestamp(moment) == "2025-03-01T09:30:00Z"
    assert make(uploaded_at=format_timestamp(moment)).uploaded_at == "2025-03-01T09:30:00Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_timestamp(dt.datetime(2025, 1, 1))


def test_decrypted_payload_is_canonical_json() -> None:
    payload = decrypt(seal_manifest(make(), SIGNER, CASE.recipient()), [CASE])
    assert canonicalize(json.loads(payload)) == payload


def test_manifest_without_folder_signs_the_same_bytes_as_before_the_field() -> None:
    manifest = make()
    assert "folder" not in manifest.to_json_obj()
    assert Manifest.from_json_obj(manifest.to_json_obj()) == manifest


def test_folder_is_sealed_signed_and_round_trips() -> None:
    manifest = make(folder="seizure-17/phone 2/DCIM")
    assert manifest.to_json_obj()["folder"] == "seizure-17/phone 2/DCIM"
    sealed = seal_manifest(manifest, SIGNER, CASE.recipient())
    assert b"seizure" not in sealed
    assert open_manifest(sealed, CASE, lookup).folder == "seizure-17/phone 2/DCIM"
    # The signature covers the folder: moving a file to another folder breaks it.
    moved = dict(manifest.to_json_obj(), folder="elsewhere")
    with pytest.raises(ManifestSignatureError):
        open_manifest(_reseal(moved, sign_manifest(manifest, SIGNER)), CASE, lookup)


@pytest.mark.parametrize("folder", [
    "/etc", "a/../b", "..", ".", "a/./b", "a//b", "a/", "/", "a\\b", "a/\x00", "a/\u202eb",
    "x/" * 40 + "x", "a" * 300,
])
def test_unsafe_folders_are_refused(folder: str) -> None:
    with pytest.raises(UnsafeFileName):
        safe_folder(folder)
    with pytest.raises(ManifestError, match="folder"):
        make(folder=folder)


def test_an_explicit_empty_folder_is_refused_on_parse() -> None:
    with pytest.raises(ManifestError, match="present but empty"):
        Manifest.from_json_obj(dict(make().to_json_obj(), folder=""))


@pytest.mark.parametrize("folder", ["", "a", "seizure-17/phone/DCIM", "Ø dossier/été 2025"])
def test_safe_folders_are_kept(folder: str) -> None:
    assert safe_folder(folder) == folder


def test_manifest_without_handling_signs_the_same_bytes_as_before_the_field() -> None:
    obj = make().to_json_obj()
    assert "handling" not in obj and "handling_note" not in obj


def test_handling_code_and_note_are_sealed_signed_and_round_trip() -> None:
    manifest = make(handling="H2", handling_note="ask NL-OM before sharing\nref 17")
    sealed = seal_manifest(manifest, SIGNER, CASE.recipient())
    assert b"NL-OM" not in sealed
    opened = open_manifest(sealed, CASE, lookup)
    assert (opened.handling, opened.handling_note) == ("H2", "ask NL-OM before sharing\nref 17")
    # The signature covers the code: lowering or dropping it breaks the signature.
    for changed in (dict(manifest.to_json_obj(), handling="H0"),
                    {k: v for k, v in manifest.to_json_obj().items() if k != "handling"}):
        with pytest.raises(ManifestSignatureError):
            open_manifest(_reseal(changed, sign_manifest(manifest, SIGNER)), CASE, lookup)


@pytest.mark.parametrize(("code", "note"), [
    ("H4", ""), ("h2", ""), ("H2 ", ""), ("", "a\x00b"), ("", "evil\u202e"), ("", "x" * 2001),
])
def test_bad_handling_is_refused(code: str, note: str) -> None:
    with pytest.raises(ManifestError, match="handling"):
        make(handling=code, handling_note=note)


def test_an_explicit_empty_handling_is_refused_on_parse() -> None:
    with pytest.raises(ManifestError, match="handling is present but empty"):
        Manifest.from_json_obj(dict(make().to_json_obj(), handling=""))
