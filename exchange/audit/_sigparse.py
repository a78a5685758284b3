"""Minimal strict reading of stored RFC 9421 Signature-Input / Signature members.

The audit verifier only needs the label, the covered component identifiers,
the ``@signature-params`` value and a few parameters (``keyid``, ``created``)
of one member that the server already accepted, so a regular grammar for the
RFC 9651 subset that RFC 9421 emits is enough here; the full Structured Field
parser lives with the HTTP signing code.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass

_KEY = r"[a-z*][a-z0-9_.*-]*"
# An sf-string is printable ASCII with only \" and \\ escaped (RFC 9651 §3.3.3). Written as
# an unrolled loop, plain-run (escape plain-run)*, so no input can make the regex
# backtrack: the earlier (plain+|escape)* form took exponential time on an
# unterminated string, letting one hostile entry hang the offline verifier.
_PLAIN = r"[ !#-\[\]-~]"
_STRING = r"\"" + _PLAIN + r"*(?:\\[\"\\]" + _PLAIN + r"*)*\""
_BARE = (
    r"(?:" + _STRING + r"|-?[0-9]{1,15}"
    r"|[A-Za-z*][!#$%&'*+\-.^_`|~:/A-Za-z0-9]*|:[A-Za-z0-9+/=]*:|\?[01])"
)
_LABEL = re.compile(_KEY)
_PARAM_TEXT = r";" + _KEY + r"(?:=" + _BARE + r")?"
_PARAM = re.compile(r";(" + _KEY + r")(?:=(" + _BARE + r"))?")
_ITEM_TEXT = r'"' + _PLAIN + r'*"(?:' + _PARAM_TEXT + r")*"
_ITEM = re.compile(_ITEM_TEXT)
_INNER = re.compile(r"\((?:" + _ITEM_TEXT + r"(?: " + _ITEM_TEXT + r")*)?\)")
_PARAMS = re.compile(r"(?:" + _PARAM_TEXT + r")*")
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


def parse_signature_input(member: str) -> SignatureInput:
    """Return the label, component identifiers, params string and raw parameters of a member.

    Grammar (RFC 9421 §4.1 over RFC 9651): ``label=(item *(SP item))*(;param)``
    where an item is a quoted component name with its own parameters.
    """
    label, sep, signature_params = member.partition("=")
    if not sep or _LABEL.fullmatch(label) is None:
        raise SignatureSyntaxError(f"malformed signature input {member[:60]!r}")
    inner = _INNER.match(signature_params)
    if inner is None:
        raise SignatureSyntaxError(f"malformed signature input {member[:60]!r}")
    # The parameters must tile the rest exactly; one pass both checks that
    # (same language as _PARAMS: each parameter can end in only one place)
    # and collects them, where fullmatch-then-findall scanned twice.
    position = inner.end()
    params: dict[str, str] = {}
    duplicate = None
    for match in _PARAM.finditer(signature_params, position):
        if match.start() != position:
            break
        position = match.end()
        key, value = match.groups()
        if key in params:
            duplicate = duplicate or key
        params[key] = value or "?1"
    if position != len(signature_params):
        raise SignatureSyntaxError(f"malformed signature input {member[:60]!r}")
    if duplicate is not None:
        raise SignatureSyntaxError(f"duplicate signature parameter {duplicate!r}")
    components = tuple(_ITEM.findall(signature_params, 1, inner.end() - 1))
    return SignatureInput(label, components, signature_params, params)


def parse_signature(member: str) -> tuple[str, bytes]:
    """Return (label, signature bytes) of a ``label=:base64:`` Signature member."""
    match = _SIGNATURE.fullmatch(member)
    if match is None:
        raise SignatureSyntaxError(f"malformed signature {member[:60]!r}")
    try:
        raw = binascii.a2b_base64(match.group(2), strict_mode=True)  # = b64decode(validate=True)
    except (binascii.Error, ValueError):
        raise SignatureSyntaxError("signature is not valid base64") from None
    return match.group(1), raw
