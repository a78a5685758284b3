"""The scrypt (passphrase) recipient type of the C2SP age spec ("scrypt recipient type").

A file key is wrapped under scrypt(passphrase, label || salt, N = 2**work_factor,
r = 8, p = 1). pyca's Scrypt is used because hashlib's cannot allocate the
4 GiB that work factor 22 needs. A passphrase stanza must be the only stanza in
a header: otherwise anyone holding another recipient's key could re-wrap the
file for the passphrase without knowing it, and the passphrase would not
authenticate the sender (age spec; age issue #109).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from exchange.crypto._age_errors import HeaderError
from exchange.crypto._format import Stanza, b64decode, b64encode
from exchange.crypto._primitives import FILE_KEY_SIZE, aead_open, aead_seal

__all__ = [
    "DEFAULT_WORK_FACTOR",
    "MAX_WORK_FACTOR",
    "STANZA_TYPE",
    "ScryptIdentity",
    "ScryptRecipient",
    "check_stanza",
]

STANZA_TYPE = "scrypt"
_SALT_LABEL = b"age-encryption.org/v1/scrypt"
SALT_SIZE = 16
WRAPPED_SIZE = FILE_KEY_SIZE + 16
DEFAULT_WORK_FACTOR = 18  # the Go age CLI default: about 1 s and 256 MiB
MAX_WORK_FACTOR = 22  # Go age's cap (4 GiB); CCTV requires 23 to be rejected
_WORK_FACTOR_RE = re.compile(r"[1-9][0-9]*")  # no sign, no leading zero, decimal only


def _passphrase_bytes(passphrase: str | bytes) -> bytes:
    if isinstance(passphrase, str):
        passphrase = passphrase.encode("utf-8")
    if not isinstance(passphrase, bytes):
        raise TypeError("passphrase must be str or bytes")
    if not passphrase:
        raise ValueError("passphrase must not be empty")
    return passphrase


def _wrap_key(passphrase: bytes, salt: bytes, work_factor: int) -> bytes:
    kdf = Scrypt(salt=_SALT_LABEL + salt, length=32, n=1 << work_factor, r=8, p=1)
    return kdf.derive(passphrase)


def check_stanza(stanza: Stanza) -> tuple[bytes, int]:
    """Return ``(salt, work_factor)`` of a valid scrypt stanza; raise :class:`HeaderError`."""
    if len(stanza.args) != 2:
        raise HeaderError(f"invalid scrypt stanza: has {len(stanza.args)} arguments, want 2")
    try:
        salt = b64decode(stanza.args[0])
    except ValueError as err:
        raise HeaderError(f"invalid scrypt stanza: salt: {err}") from None
    if len(salt) != SALT_SIZE:
        raise HeaderError(f"invalid scrypt stanza: salt is {len(salt)} bytes, want {SALT_SIZE}")
    text = stanza.args[1]
    if not _WORK_FACTOR_RE.fullmatch(text) or len(text) > 2:
        raise HeaderError(f"scrypt work factor {text[:20]!r} is not a decimal from 1 to 99")
    work_factor = int(text)
    if work_factor > MAX_WORK_FACTOR:
        raise HeaderError(f"scrypt work factor {work_factor} exceeds the maximum {MAX_WORK_FACTOR}")
    if len(stanza.body) != WRAPPED_SIZE:
        raise HeaderError(
            f"invalid scrypt stanza: body is {len(stanza.body)} bytes, want {WRAPPED_SIZE}"
        )
    return salt, work_factor


class ScryptRecipient:
    """A passphrase recipient; it must be the only recipient of a file."""

    __slots__ = ("_passphrase", "_work_factor")

    def __init__(self, passphrase: str | bytes, work_factor: int = DEFAULT_WORK_FACTOR) -> None:
        if not isinstance(work_factor, int) or isinstance(work_factor, bool):
            raise TypeError("work_factor must be int")
        if not 1 <= work_factor <= MAX_WORK_FACTOR:
            raise ValueError(f"work_factor must be 1 to {MAX_WORK_FACTOR}, found {work_factor}")
        self._passphrase = _passphrase_bytes(passphrase)
        self._work_factor = work_factor

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return one scrypt stanza wrapping ``file_key`` under a fresh salt."""
        salt = os.urandom(SALT_SIZE)
        body = aead_seal(_wrap_key(self._passphrase, salt, self._work_factor), file_key)
        return [Stanza(STANZA_TYPE, (b64encode(salt), str(self._work_factor)), body)]

    def __repr__(self) -> str:
        return f"ScryptRecipient(work_factor={self._work_factor})"


class ScryptIdentity:
    """A passphrase identity; refuses work factors above ``max_work_factor``."""

    __slots__ = ("_max_work_factor", "_passphrase")

    def __init__(self, passphrase: str | bytes, max_work_factor: int = MAX_WORK_FACTOR) -> None:
        if not isinstance(max_work_factor, int) or isinstance(max_work_factor, bool):
            raise TypeError("max_work_factor must be int")
        if not 1 <= max_work_factor <= MAX_WORK_FACTOR:
            raise ValueError(
                f"max_work_factor must be 1 to {MAX_WORK_FACTOR}, found {max_work_factor}"
            )
        self._passphrase = _passphrase_bytes(passphrase)
        self._max_work_factor = max_work_factor

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the file key if the header's scrypt stanza opens with this passphrase.

        Returns ``None`` when there is no scrypt stanza or the passphrase is
        wrong. Raises :class:`HeaderError` if the scrypt stanza is invalid, is
        not alone, or asks for more work than ``max_work_factor`` (a denial of
        service guard: each step doubles time and memory).
        """
        mine = [s for s in stanzas if s.type == STANZA_TYPE]
        if not mine:
            return None
        if len(stanzas) != 1:
            raise HeaderError("an scrypt stanza must be the only stanza in the header")
        salt, work_factor = check_stanza(mine[0])
        if work_factor > self._max_work_factor:
            raise HeaderError(
                f"scrypt work factor {work_factor} exceeds the maximum {self._max_work_factor}"
            )
        wrap_key = _wrap_key(self._passphrase, salt, work_factor)
        return aead_open(wrap_key, mine[0].body, FILE_KEY_SIZE)

    def __repr__(self) -> str:
        return f"ScryptIdentity(max_work_factor={self._max_work_factor})"
