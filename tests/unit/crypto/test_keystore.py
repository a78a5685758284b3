"""Keystore format: round trip, wrong passphrase, damage and hostile parameters."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pytest

from exchange.crypto.jcs import canonicalize
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.keystore import (
    DEFAULT_PARAMS,
    Argon2Params,
    KeystoreCorrupt,
    KeystoreError,
    WrongPassphrase,
    is_keystore,
    open_keystore,
    read_public_bundle,
    seal_keystore,
)
from exchange.keyfiles import InsecureKeyFileWarning, read_secret_file, write_keystore

FAST = Argon2Params(time_cost=1, memory_kib=64, parallelism=1)
PASSPHRASE = "correct horse battery staple"


@pytest.fixture(scope="module")
def identity() -> ParticipantIdentity:
    return ParticipantIdentity.generate("alice.fr", "Alice", pq=True)


@pytest.fixture(scope="module")
def sealed(identity: ParticipantIdentity) -> bytes:
    return seal_keystore(identity, PASSPHRASE, params=FAST)


def doc_of(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    return doc


def reseal_checksum(doc: dict[str, Any]) -> bytes:
    """Recompute the unkeyed checksum, as a deliberate attacker would."""
    body = {k: v for k, v in doc.items() if k != "checksum"}
    doc["checksum"] = hashlib.sha256(canonicalize(body)).hexdigest()
    return json.dumps(doc).encode()


def test_round_trip(identity: ParticipantIdentity, sealed: bytes) -> None:
    opened = open_keystore(sealed, PASSPHRASE)
    assert opened.public_bundle() == identity.public_bundle()
    assert bytes(opened.signing_key) == bytes(identity.signing_key)
    assert opened.age_identity.to_string() == identity.age_identity.to_string()
    assert opened.pq_identity is not None and identity.pq_identity is not None
    assert opened.pq_identity.to_string() == identity.pq_identity.to_string()


def test_bytes_passphrase_and_unicode_normalisation(identity: ParticipantIdentity) -> None:
    data = seal_keystore(identity, "caf\u00e9", params=FAST)
    assert open_keystore(data, "cafe\u0301").id == identity.id  # NFD input, NFC stored
    assert open_keystore(data, "caf\u00e9".encode()).id == identity.id


def test_public_bundle_readable_without_passphrase(
    identity: ParticipantIdentity, sealed: bytes
) -> None:
    assert read_public_bundle(sealed) == identity.public_bundle()
    assert is_keystore(sealed)
    assert not is_keystore(identity.public_bundle().encode())


def test_secrets_not_in_clear(identity: ParticipantIdentity, sealed: bytes) -> None:
    assert identity.age_identity.to_string().encode() not in sealed
    assert bytes(identity.signing_key).hex().encode() not in sealed


def test_wrong_passphrase(sealed: bytes) -> None:
    with pytest.raises(WrongPassphrase, match="wrong passphrase") as info:
        open_keystore(sealed, "not it")
    assert PASSPHRASE not in str(info.value)


def test_default_params_meet_rfc9106_second_option() -> None:
    assert DEFAULT_PARAMS.time_cost >= 3 and DEFAULT_PARAMS.parallelism == 4
    assert DEFAULT_PARAMS.memory_kib >= 64 * 1024


def test_params_are_stored_in_the_file(sealed: bytes) -> None:
    kdf = doc_of(sealed)["kdf"]
    assert (kdf["name"], kdf["time_cost"], kdf["memory_kib"], kdf["parallelism"]) == (
        "argon2id", 1, 64, 1,
    )


@pytest.mark.parametrize("cut", [0, 1, 10, 100, -100, -2])
def test_truncated_file(sealed: bytes, cut: int) -> None:
    with pytest.raises(KeystoreCorrupt, match="truncated or damaged"):
        open_keystore(sealed[:cut], PASSPHRASE)


def test_altered_params_detected_by_checksum(sealed: bytes) -> None:
    doc = doc_of(sealed)
    doc["kdf"]["time_cost"] = 2
    with pytest.raises(KeystoreCorrupt, match="checksum mismatch"):
        open_keystore(json.dumps(doc).encode(), PASSPHRASE)


def test_altered_params_with_recomputed_checksum_do_not_open(sealed: bytes) -> None:
    doc = doc_of(sealed)
    doc["kdf"]["time_cost"] = 2
    with pytest.raises(KeystoreError):
        open_keystore(reseal_checksum(doc), PASSPHRASE)


def test_altered_ciphertext(sealed: bytes) -> None:
    doc = doc_of(sealed)
    raw = bytearray(base64.b64decode(doc["ciphertext"]))
    raw[5] ^= 1
    doc["ciphertext"] = base64.b64encode(bytes(raw)).decode()
    with pytest.raises(KeystoreCorrupt, match="checksum mismatch"):
        open_keystore(json.dumps(doc).encode(), PASSPHRASE)
    with pytest.raises(KeystoreCorrupt, match="failed authentication although the passphrase"):
        open_keystore(reseal_checksum(doc), PASSPHRASE)


def test_altered_public_part(sealed: bytes) -> None:
    doc = doc_of(sealed)
    other = ParticipantIdentity.generate("alice.fr", "Alice").public_bundle().to_json_obj()
    doc["public"] = other
    with pytest.raises(KeystoreCorrupt, match="checksum mismatch"):
        open_keystore(json.dumps(doc).encode(), PASSPHRASE)
    # Even with the checksum fixed up, the AEAD's associated data catches the swap.
    with pytest.raises(KeystoreCorrupt, match="altered or damaged"):
        open_keystore(reseal_checksum(doc), PASSPHRASE)


def test_display_name_change_is_caught_too(sealed: bytes) -> None:
    doc = doc_of(sealed)
    doc["public"]["display_name"] = "Mallory"
    with pytest.raises(KeystoreCorrupt, match="altered or damaged"):
        open_keystore(reseal_checksum(doc), PASSPHRASE)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("memory_kib", 100 * 1024 * 1024 * 1024, "memory 107374182400 KiB exceeds the limit"),
        ("time_cost", 1000, "time_cost 1000 exceeds the limit"),
        ("parallelism", 255, "parallelism 255 exceeds the limit"),
        ("memory_kib", 4, "below 8"),
        ("time_cost", 0, "at least 1"),
        ("time_cost", "3", "must be an int"),
        ("time_cost", True, "must be an int"),
    ],
)
def test_hostile_params_refused_before_argon2(
    sealed: bytes, field: str, value: object, message: str
) -> None:
    doc = doc_of(sealed)
    doc["kdf"][field] = value
    if field == "parallelism":
        doc["kdf"]["memory_kib"] = 8 * 255  # valid for Argon2: only our bound refuses it
    start = time.perf_counter()
    with pytest.raises(KeystoreCorrupt, match=message):
        open_keystore(reseal_checksum(doc), PASSPHRASE)
    assert time.perf_counter() - start < 1.0  # Argon2 never ran with these


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.__setitem__("format", "exchange-keystore/v9"),
         "format is 'exchange-keystore/v9'"),
        (lambda d: d.pop("check"), "missing 'check'"),
        (lambda d: d.__setitem__("extra", 1), "unknown field 'extra'"),
        (lambda d: d["kdf"].__setitem__("name", "scrypt"), "expected 'argon2id'"),
        (lambda d: d["aead"].__setitem__("name", "aes"), "expected 'xchacha20poly1305'"),
        (lambda d: d["kdf"].__setitem__("salt", "AAAA"), "salt is 3 bytes, expected 16"),
        (lambda d: d["aead"].__setitem__("nonce", "%%%"), "nonce is not valid base64"),
        (lambda d: d["public"].__setitem__("id", "BAD"), "public bundle is invalid"),
    ],
)
def test_malformed_structure(sealed: bytes, mutate: Any, message: str) -> None:
    doc = doc_of(sealed)
    mutate(doc)
    with pytest.raises(KeystoreCorrupt, match=message):
        open_keystore(reseal_checksum(doc), PASSPHRASE)


def test_float_values_are_corrupt_not_a_crash(sealed: bytes) -> None:
    doc = doc_of(sealed)
    doc["kdf"]["time_cost"] = 1.5
    with pytest.raises(KeystoreCorrupt, match="canonical JSON"):
        open_keystore(json.dumps(doc).encode(), PASSPHRASE)


def test_empty_passphrase_refused(identity: ParticipantIdentity) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        seal_keystore(identity, "", params=FAST)


def test_fresh_salt_and_nonce_each_time(identity: ParticipantIdentity) -> None:
    a, b = (doc_of(seal_keystore(identity, PASSPHRASE, params=FAST)) for _ in range(2))
    assert a["kdf"]["salt"] != b["kdf"]["salt"] and a["aead"]["nonce"] != b["aead"]["nonce"]


def test_write_keystore_mode_0600_and_exclusive(tmp_path: Path, sealed: bytes) -> None:
    path = tmp_path / "alice.keystore"
    write_keystore(path, sealed)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes() == sealed
    with pytest.raises(FileExistsError):
        write_keystore(path, b"other")
    assert path.read_bytes() == sealed
    assert [p.name for p in tmp_path.iterdir()] == ["alice.keystore"]  # no temp left


def test_read_secret_file_warns_when_readable_by_others(tmp_path: Path, sealed: bytes) -> None:
    path = tmp_path / "k"
    write_keystore(path, sealed)
    seen: list[str] = []
    assert read_secret_file(path, warn=seen.append) == sealed
    assert seen == []
    os.chmod(path, 0o644)
    assert read_secret_file(path, warn=seen.append) == sealed
    assert len(seen) == 1 and "world-readable" in seen[0]
    with pytest.warns(InsecureKeyFileWarning):
        read_secret_file(path)
    with pytest.raises(ValueError, match="larger than"):
        read_secret_file(path, max_bytes=10, warn=seen.append)
