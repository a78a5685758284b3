"""age recipient types and the plug-in contract they share (C2SP age, "Recipient stanza").

A recipient wraps a file key into stanzas; an identity unwraps stanzas back
into the file key. :func:`check_stanzas` applies the per-type validity rules
of every *known* stanza type to a whole header before any identity runs, so a
malformed known stanza is a header failure whichever keys the caller holds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from exchange.crypto._age_errors import HeaderError
from exchange.crypto._format import Stanza
from exchange.crypto.recipients import mlkem768x25519, scrypt, x25519

__all__ = ["Identity", "Recipient", "check_stanzas"]


class Recipient(Protocol):
    """Something a file key can be wrapped to."""

    def wrap(self, file_key: bytes) -> list[Stanza]:
        """Return the stanzas that wrap ``file_key`` for this recipient.

        MUST use fresh randomness on every call; MUST NOT return an empty list.
        """
        ...


class Identity(Protocol):
    """Something that can unwrap a file key from a header's stanzas."""

    def unwrap(self, stanzas: Sequence[Stanza]) -> bytes | None:
        """Return the 16-byte file key, or ``None`` if no stanza is for this identity.

        MUST ignore stanza types it does not know. MUST raise ``HeaderError``
        (not return ``None``) for a stanza of its own type that is malformed.
        """
        ...


_CHECKS: dict[str, Callable[[Stanza], object]] = {
    x25519.STANZA_TYPE: x25519.check_stanza,
    scrypt.STANZA_TYPE: scrypt.check_stanza,
    mlkem768x25519.STANZA_TYPE: mlkem768x25519.check_stanza,
}


def check_stanzas(stanzas: Sequence[Stanza]) -> None:
    """Raise :class:`HeaderError` if any known-type stanza is invalid or scrypt is not alone.

    Unknown types (including case variants such as ``x25519``) are ignored,
    as the spec requires.
    """
    for stanza in stanzas:
        check = _CHECKS.get(stanza.type)
        if check is not None:
            check(stanza)
    if len(stanzas) > 1 and any(s.type == scrypt.STANZA_TYPE for s in stanzas):
        raise HeaderError("an scrypt stanza must be the only stanza in the header")
