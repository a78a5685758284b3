"""Minimal strict reading of stored RFC 9421 Signature-Input / Signature members.

The audit verifier only needs the label, the covered component identifiers,
the ``@signature-params`` value and a few parameters (``keyid``, ``created``)
of one member that the server already accepted, so a regular grammar for the
RFC 9651 subset that RFC 9421 emits is enough here; the full Structured Field
parser lives with the HTTP signing code.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

_KEY = r"[a-z*][a-z0-9_.*-]*"
_BARE = (
    r"(?:\"(?:[^\"\\\x00-\x1f\x7f]+|\\[\"\\])*\"|-?[0-9]{1,15}"
    r"|[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]*|:[A-Za-z0-9+/=]*:|\?[01])"
)
_LABEL = re.compile(_KEY)
_PARAM = re.compile(r";(" + _KEY + r")(?:=(" + _BARE + r"))?")
_ITEM = re.compile(r'"[^"\\\x00-\x1f\x7f]*"')
_SIGNATURE = re.compile(r"(" + _KEY + r")=:([A-Za-z0-9+/=]*):")


class SignatureSyntaxError(ValueError):
    """A stored signature member does not follow the RFC 9421 / RFC 9651 syntax."""


@dataclass(frozen=True, slots=True)
class SignatureInput:
    """One parsed Signature-Input member."""

    label: str
    components: tuple[str, ...]
    signature_params: str
    params: dict[str, str]

    def string_param(self, name: str) -> str | None:
        """Return an sf-string parameter unquoted, or None when absent or not a string."""
        raw = self.params.get(name)
        if raw is None or not raw.startswith('"'):
            return None
        return raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")


def _params(text: str, position: int, stop: str) -> tuple[dict[str, str], int]:
    """Read ``;key[=value]`` parameters from ``position`` until a char in ``stop`` or the end."""
    params: dict[str, str] = {}
    while position < len(text) and text[position] not in stop:
        match = _PARAM.match(text, position)
        if match is None:
            raise SignatureSyntaxError(f"malformed parameter at {text[position:position + 30]!r}")
        key = match.group(1)
        if key in params:
            raise SignatureSyntaxError(f"duplicate parameter {key!r}")
        params[key] = match.group(2) or "?1"
        position = match.end()
    return params, position


def parse_signature_input(member: str) -> SignatureInput:
    """Return the label, component identifiers, params string and raw parameters of a member.

    Grammar (RFC 9421 §4.1 over RFC 9651): ``label=(item *(SP item))*(;param)``
    where an item is a quoted component name with its own parameters.
    """
    label, sep, signature_params = member.partition("=")
    if not sep or _LABEL.fullmatch(label) is None or not signature_params.startswith("("):
        raise SignatureSyntaxError(f"malformed signature input {member[:60]!r}")
    components: list[str] = []
    position = 1
    text = signature_params
    while True:
        if position >= len(text):
            raise SignatureSyntaxError("inner list is not closed")
        if text[position] == ")":
            break
        match = _ITEM.match(text, position)
        if match is None:
            raise SignatureSyntaxError(f"malformed component at {text[position:position + 30]!r}")
        _, end = _params(text, match.end(), " )")
        components.append(text[position:end])
        position = end
        if position < len(text) and text[position] == " ":
            position += 1
            if position < len(text) and text[position] == ")":
                raise SignatureSyntaxError("space before the end of the inner list")
    params, end = _params(text, position + 1, "")
    return SignatureInput(label, tuple(components), signature_params, params)


def parse_signature(member: str) -> tuple[str, bytes]:
    """Return (label, signature bytes) of a ``label=:base64:`` Signature member."""
    match = _SIGNATURE.fullmatch(member)
    if match is None:
        raise SignatureSyntaxError(f"malformed signature {member[:60]!r}")
    try:
        raw = base64.b64decode(match.group(2), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureSyntaxError("signature is not valid base64") from None
    return match.group(1), raw
