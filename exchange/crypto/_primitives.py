"""Key derivations and one-shot AEAD shared by the age recipient types and header.

C2SP age spec: HKDF-SHA-256 derivations ("header", "payload"), the header MAC
(HMAC-SHA-256) and the fixed-nonce ChaCha20-Poly1305 used to wrap file keys.
All primitives come from pyca/cryptography.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = [
    "FILE_KEY_SIZE",
    "aead_open",
    "aead_seal",
    "header_mac",
    "hkdf_sha256",
    "payload_key",
    "verify_header_mac",
]

FILE_KEY_SIZE = 16
# Every wrap key is derived fresh for one stanza and used exactly once, so a
# fixed all-zero nonce is safe (age spec, X25519 and scrypt sections).
_ZERO_NONCE = bytes(12)


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """Return HKDF-SHA-256(ikm, salt, info) of ``length`` bytes (empty salt = zeros)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def aead_seal(key: bytes, plaintext: bytes) -> bytes:
    """Return ChaCha20-Poly1305 of ``plaintext`` under a single-use key and the zero nonce."""
    return ChaCha20Poly1305(key).encrypt(_ZERO_NONCE, plaintext, None)


def aead_open(key: bytes, ciphertext: bytes, plaintext_size: int) -> bytes | None:
    """Return the opened plaintext, or ``None`` if it does not authenticate.

    The caller states the plaintext size and the size is checked *before*
    decrypting: a key-committing check against partitioning-oracle attacks,
    where one ciphertext is crafted to open under many keys.
    """
    if len(ciphertext) != plaintext_size + 16:
        return None
    try:
        return ChaCha20Poly1305(key).decrypt(_ZERO_NONCE, ciphertext, None)
    except InvalidTag:
        return None


def _mac(file_key: bytes) -> hmac.HMAC:
    return hmac.HMAC(hkdf_sha256(file_key, b"", b"header"), hashes.SHA256())


def header_mac(file_key: bytes, mac_input: bytes) -> bytes:
    """Return HMAC-SHA-256 over the header bytes with the key HKDF(file_key, "header")."""
    mac = _mac(file_key)
    mac.update(mac_input)
    return mac.finalize()


def verify_header_mac(file_key: bytes, mac_input: bytes, expected: bytes) -> bool:
    """Return whether the header MAC matches, compared in constant time by pyca."""
    mac = _mac(file_key)
    mac.update(mac_input)
    try:
        mac.verify(expected)
    except InvalidSignature:
        return False
    return True


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    """Return the STREAM key HKDF-SHA-256(ikm=file_key, salt=nonce, info="payload")."""
    return hkdf_sha256(file_key, nonce, b"payload")
