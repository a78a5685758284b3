"""Exception classes of the age v1 implementation (C2SP age, CCTV outcome classes).

Each class is one CCTV failure outcome, so a caller (and the vector tests) can
branch on what went wrong. Authentication failures carry no detail about which
check failed; syntax errors about public structure may be specific.
"""

from __future__ import annotations

from exchange.errors import CryptoError

__all__ = [
    "AgeError",
    "ArmorError",
    "HeaderError",
    "HeaderMacError",
    "KeyFormatError",
    "NoIdentityMatch",
    "PayloadError",
    "truncate",
]

_MAX_SHOWN = 40


def truncate(value: bytes | str) -> str:
    """Return ``repr`` of an untrusted value, cut to a short prefix for messages."""
    if len(value) > _MAX_SHOWN:
        return f"{value[:_MAX_SHOWN]!r}..."
    return repr(value)


class AgeError(CryptoError):
    """Base of every age format, key or authentication failure."""


class ArmorError(AgeError):
    """The ASCII armor (strict PEM, age spec "ASCII armor") is malformed."""


class HeaderError(AgeError):
    """The age header is malformed, or a known stanza type is invalid."""


class NoIdentityMatch(AgeError):
    """None of the identities unwrapped any stanza of the header.

    ``stanza_types`` lists the types of the stanzas that were seen, in order,
    so a caller can hint at the right key (age's NoIdentityMatchError).
    """

    http_status = 403

    def __init__(self, stanza_types: tuple[str, ...]) -> None:
        self.stanza_types = stanza_types
        shown = ", ".join(truncate(t) for t in stanza_types[:8])
        super().__init__(f"no identity matched any of the recipients (stanza types: {shown})")


class HeaderMacError(AgeError):
    """A file key was unwrapped but the header MAC did not verify."""


class PayloadError(AgeError):
    """The STREAM payload is truncated, has trailing data, or failed to authenticate."""


class KeyFormatError(AgeError, ValueError):
    """A recipient or identity string is malformed (never echoes secret key text)."""
