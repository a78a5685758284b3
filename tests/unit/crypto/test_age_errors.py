"""Error classes, messages and API contracts of the age implementation."""

from __future__ import annotations

import re

import pytest

from exchange.crypto import age
from exchange.crypto.age import (
    AgeError,
    ArmorError,
    Decryptor,
    Encryptor,
    HeaderError,
    HeaderMacError,
    HybridIdentity,
    HybridRecipient,
    KeyFormatError,
    NoIdentityMatch,
    PayloadError,
    ScryptIdentity,
    ScryptRecipient,
    X25519Identity,
    X25519Recipient,
)
from exchange.errors import CryptoError, ExchangeError

IDENTITY = X25519Identity.generate()
SECRET = IDENTITY.to_string()
CIPHERTEXT = age.encrypt(b"hello", [IDENTITY.recipient()])


def message_style(err: BaseException) -> None:
    text = str(err)
    assert text and text == text.strip()
    assert not text.endswith(".")
    assert text[0] == text[0].lower()


@pytest.mark.parametrize(
    "cls", [ArmorError, HeaderError, HeaderMacError, NoIdentityMatch, PayloadError, KeyFormatError]
)
def test_error_tree(cls: type[Exception]) -> None:
    assert issubclass(cls, AgeError)
    assert issubclass(AgeError, CryptoError)
    assert issubclass(CryptoError, ExchangeError)


def test_no_identity_match_carries_stanza_types() -> None:
    ciphertext = age.encrypt(
        b"x", [X25519Identity.generate().recipient(), HybridIdentity.generate().recipient()]
    )
    with pytest.raises(NoIdentityMatch) as info:
        age.decrypt(ciphertext, [IDENTITY])
    assert info.value.stanza_types == ("X25519", "mlkem768x25519")
    message_style(info.value)


@pytest.mark.parametrize(
    ("data", "cls", "pattern"),
    [
        (b"", HeaderError, "empty file"),
        (b"age-encryption.org/v2\n", HeaderError, "unsupported age version"),
        (b"age-encryption.org/v1\r\n", HeaderError, "CR"),
        (b"age-encryption.org/v1\n--- " + b"A" * 43 + b"\n" + bytes(16), HeaderError, "no stanzas"),
        (b"age-encryption.org/v1\n->  x\n\n", HeaderError, "single spaces"),
        (b"age-encryption.org/v1\n-> x\n" + b"A" * 65 + b"\n", HeaderError, "65 characters"),
        (b"age-encryption.org/v1\n-> x\nAA==\n", HeaderError, "not unpadded base64"),
        (b"age-encryption.org/v1\n-> x\nAB\n", HeaderError, "not canonical"),
        (b"age-encryption.org/v1\n-> x\n\n---x\n", HeaderError, "expected a stanza"),
        (b"age-encryption.org/v1\n-> x\n\n--- AAAA\n", HeaderError, "want 43"),
        (
            b"age-encryption.org/v1\n-> x\n\n--- " + b"A" * 43 + b"\n" + bytes(15),
            HeaderError,
            "nonce truncated",
        ),
        (
            b"age-encryption.org/v1\n-> X25519 AAAA\n\n--- " + b"A" * 43 + b"\n" + bytes(16),
            HeaderError,
            "share is 3 bytes, want 32",
        ),
        (b"-----BEGIN AGE ENCRYPTED FILE-----\n", ArmorError, "END line missing"),
        (b"hello world", ArmorError, "expected '-----BEGIN"),
        (CIPHERTEXT[:-1], PayloadError, "authenticate"),
        (CIPHERTEXT + b"x", PayloadError, "authenticate"),
    ],
)
def test_failure_classes_and_messages(data: bytes, cls: type[AgeError], pattern: str) -> None:
    with pytest.raises(cls, match=re.escape(pattern)) as info:
        age.decrypt(data, [IDENTITY])
    assert type(info.value) is cls
    message_style(info.value)


def test_header_mac_mismatch() -> None:
    header_end = CIPHERTEXT.index(b"\n---") + 5
    tampered = bytearray(CIPHERTEXT)
    tampered[header_end] = ord("A") if tampered[header_end] != ord("A") else ord("B")
    with pytest.raises(HeaderMacError, match="header mac does not verify"):
        age.decrypt(bytes(tampered), [IDENTITY])


def test_payload_failure_is_opaque() -> None:
    tampered = bytearray(CIPHERTEXT)
    tampered[-3] ^= 0x40
    with pytest.raises(PayloadError) as info:
        age.decrypt(bytes(tampered), [IDENTITY])
    assert str(info.value) == "payload chunk failed to authenticate"


def test_rejects_trailing_data_but_releases_the_final_chunk_first() -> None:
    ciphertext = age.encrypt(bytes(65536), [IDENTITY.recipient()])  # one full final chunk
    decryptor = Decryptor([IDENTITY])
    assert decryptor.update(ciphertext + b"junk") == bytes(65536)
    with pytest.raises(PayloadError, match="trailing data"):
        decryptor.finalize()
    with pytest.raises(RuntimeError, match="unusable"):
        decryptor.update(b"")


def test_decryptor_is_single_use() -> None:
    decryptor = Decryptor([IDENTITY])
    assert decryptor.update(CIPHERTEXT) + decryptor.finalize() == b"hello"
    with pytest.raises(RuntimeError, match="finalized"):
        decryptor.update(b"")
    encryptor = Encryptor([IDENTITY.recipient()])
    encryptor.finalize()
    with pytest.raises(RuntimeError, match="finalized"):
        encryptor.update(b"x")


def test_scrypt_must_be_alone() -> None:
    with pytest.raises(ValueError, match="only recipient"):
        Encryptor([ScryptRecipient("pw", 2), IDENTITY.recipient()])
    with pytest.raises(ValueError, match="only recipient"):
        Encryptor([ScryptRecipient("pw", 2), ScryptRecipient("pw2", 2)])


def test_scrypt_work_factor_limits() -> None:
    ciphertext = age.encrypt(b"x", [ScryptRecipient("pw", 5)])
    with pytest.raises(HeaderError, match="exceeds the maximum 4"):
        age.decrypt(ciphertext, [ScryptIdentity("pw", max_work_factor=4)])
    assert age.decrypt(ciphertext, [ScryptIdentity("pw", max_work_factor=5)]) == b"x"
    with pytest.raises(NoIdentityMatch):
        age.decrypt(ciphertext, [ScryptIdentity("wrong")])
    with pytest.raises(ValueError, match="work_factor must be 1 to 22"):
        ScryptRecipient("pw", 23)
    with pytest.raises(TypeError, match="work_factor must be int"):
        ScryptRecipient("pw", "5")  # type: ignore[arg-type]


def test_argument_types() -> None:
    with pytest.raises(ValueError, match="at least one recipient"):
        Encryptor([])
    with pytest.raises(ValueError, match="at least one identity"):
        Decryptor([])
    with pytest.raises(TypeError, match="bytes-like"):
        Encryptor([IDENTITY.recipient()]).update("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be bytes"):
        X25519Identity.from_bytes("x" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="32 bytes"):
        X25519Recipient.from_bytes(bytes(31))


def test_secrets_never_appear_in_reprs_or_errors() -> None:
    assert SECRET not in repr(IDENTITY)
    assert "pw-secret" not in repr(ScryptRecipient("pw-secret", 2))
    assert "pw-secret" not in repr(ScryptIdentity("pw-secret"))
    pq = HybridIdentity.generate()
    assert pq.to_string() not in repr(pq)
    broken = SECRET[:-1] + ("Q" if SECRET[-1] != "Q" else "P")
    with pytest.raises(KeyFormatError) as info:
        age.parse_identity(broken)
    assert broken[16:] not in str(info.value)
    with pytest.raises(KeyFormatError, match="line 3") as file_info:
        age.parse_identity_file(f"# comment\n\n{broken}\n")
    assert broken[16:] not in str(file_info.value)


def test_key_strings_round_trip_and_parse() -> None:
    assert X25519Identity.parse(SECRET).to_bytes() == IDENTITY.to_bytes()
    recipient = IDENTITY.recipient().to_string()
    assert recipient.startswith("age1")
    assert age.parse_recipient(recipient) == IDENTITY.recipient()
    pq = HybridIdentity.generate()
    assert pq.to_string().startswith("AGE-SECRET-KEY-PQ-1")
    assert HybridIdentity.parse(pq.to_string()).to_bytes() == pq.to_bytes()
    pq_recipient = pq.recipient().to_string()
    assert pq_recipient.startswith("age1pq1") and len(pq_recipient) > 1900
    assert age.parse_recipient(pq_recipient) == HybridRecipient.from_bytes(
        pq.recipient().to_bytes()
    )
    parsed = age.parse_identity_file(f"# created: now\n{SECRET}\n\n{pq.to_string()}\n")
    assert [type(i) for i in parsed] == [X25519Identity, HybridIdentity]
    with pytest.raises(KeyFormatError, match="want all lowercase"):
        X25519Recipient.parse(recipient.upper())
    with pytest.raises(KeyFormatError, match="want all uppercase"):
        X25519Identity.parse(SECRET.lower())
    with pytest.raises(KeyFormatError, match="no identities"):
        age.parse_identity_file("# nothing here\n")
    with pytest.raises(KeyFormatError, match="unknown recipient type"):
        age.parse_recipient("ssh-ed25519 AAAA")
