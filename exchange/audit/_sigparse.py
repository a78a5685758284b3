"""Reading the RFC 9421 Signature-Input / Signature members stored in audit entries.

There is one Signature-Input parser, the RFC 9651 one the server verifies
requests with (``exchange.wire``); this module only adapts it to what the
offline verifier needs: one member per field, in its canonical spelling
(the server stores ``member.serialize()``, so any other spelling of the same
member is an altered entry), and every failure as :class:`SignatureSyntaxError`.
The parser is a single left-to-right pass (linear time): an earlier regular
expression here backtracked exponentially on a hostile entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.errors import CryptoError
from exchange.wire.httpsig import SignatureParams
from exchange.wire.httpsig import parse_signature as _parse_signature_field
from exchange.wire.httpsig import parse_signature_input as _parse_signature_input_field

__all__ = ["SignatureInput", "SignatureSyntaxError", "parse_signature", "parse_signature_input"]


class SignatureSyntaxError(ValueError):
    """A stored signature member does not follow the RFC 9421 / RFC 9651 syntax."""


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One parsed Signature-Input member."""

    label: str
    components: tuple[str, ...]
    signature_params: str
    params: SignatureParams

    def string_param(self, name: str) -> str | None:
        """Return a string parameter (keyid, nonce, alg, tag), or None when absent."""
        value = getattr(self.params, name, None) if name in ("keyid", "nonce", "alg",
                                                             "tag") else None
        return value if isinstance(value, str) else None


def _one(text: str, what: str) -> str:
    if not isinstance(text, str) or not text.isascii():
        raise SignatureSyntaxError(f"malformed {what} {str(text)[:60]!r}")
    return text


def parse_signature_input(member: str) -> SignatureInput:
    """Return the label, component identifiers, ``@signature-params`` and parameters.

    Raises :class:`SignatureSyntaxError` unless ``member`` is exactly one
    canonical ``label=(components);params`` member.
    """
    try:
        members = _parse_signature_input_field(_one(member, "signature input"))
    except CryptoError as err:
        raise SignatureSyntaxError(f"malformed signature input {member[:60]!r}: {err}") from None
    if len(members) != 1:
        raise SignatureSyntaxError(f"expected one signature input member, found {len(members)}")
    (parsed,) = members.values()
    if parsed.serialize() != member:
        raise SignatureSyntaxError(f"signature input is not in canonical form {member[:60]!r}")
    return SignatureInput(parsed.label, tuple(c.serialize() for c in parsed.components),
                          parsed.signature_params, parsed.params)


def parse_signature(member: str) -> tuple[str, bytes]:
    """Return (label, signature bytes) of a ``label=:base64:`` Signature member."""
    try:
        signatures = _parse_signature_field(_one(member, "signature"))
    except CryptoError as err:
        raise SignatureSyntaxError(f"malformed signature {member[:60]!r}: {err}") from None
    if len(signatures) != 1:
        raise SignatureSyntaxError(f"expected one signature member, found {len(signatures)}")
    ((label, raw),) = signatures.items()
    return label, raw
