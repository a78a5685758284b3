"""RFC 9421 §4.1 Signature-Input and §4.2 Signature fields: members and their parameters.

A Signature-Input member is kept as values (components, parameters and their
order on the wire) and re-serialized on demand; because RFC 9651 serialization
of a parsed value is deterministic, ``signature_params`` is exactly the
``@signature-params`` value the signer's base contained.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.wire._components import ComponentId
from exchange.wire._httpsig_errors import (
    HttpSigError,
    SignatureBaseError,
    SignatureParamsInvalid,
    StructuredFieldError,
)
from exchange.wire._sfv import (
    MAX_INTEGER,
    InnerList,
    Item,
    Params,
    check_key,
    parse_dictionary,
    serialize_params,
)

__all__ = [
    "SignatureInputMember",
    "SignatureParams",
    "parse_signature",
    "parse_signature_input",
]

#: Serialization order for parameters we emit (matches the RFC 9421 Appendix B examples).
_PARAM_ORDER = ("created", "expires", "keyid", "nonce", "alg", "tag")
_INT_PARAMS = frozenset({"created", "expires"})


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureParams:
    """The RFC 9421 §2.3 signature parameters we know, with their order on the wire.

    ``order`` is the order the parameters are serialized in (it is part of the
    signature base); left empty it becomes created, expires, keyid, nonce, alg, tag.
    """

    created: int | None = None
    expires: int | None = None
    keyid: str | None = None
    nonce: str | None = None
    alg: str | None = None
    tag: str | None = None
    order: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        present = [name for name in _PARAM_ORDER if getattr(self, name) is not None]
        for name in present:
            value = getattr(self, name)
            if name in _INT_PARAMS:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TypeError(f"{name} must be int")
                if not 0 <= value <= MAX_INTEGER:
                    raise SignatureParamsInvalid(f"{name} {value} is outside 0..{MAX_INTEGER}")
            elif not isinstance(value, str):
                raise TypeError(f"{name} must be str")
            elif not _printable(value):
                raise SignatureParamsInvalid(f"{name} must be printable ASCII")
        if not self.order:
            object.__setattr__(self, "order", tuple(present))
        elif sorted(self.order) != sorted(present):
            raise SignatureParamsInvalid(
                f"order {self.order!r} must list exactly the present parameters {present!r}"
            )

    @classmethod
    def from_params(cls, params: Params) -> SignatureParams:
        """Return the parameters of a parsed Signature-Input member, keeping their order.

        Raises ``SignatureParamsInvalid`` for an unknown parameter or a wrong type.
        """
        ints: dict[str, int] = {}
        strings: dict[str, str] = {}
        for name, value in params.items():
            if name not in _PARAM_ORDER:
                raise SignatureParamsInvalid(f"unsupported signature parameter {name!r}")
            if name in _INT_PARAMS and isinstance(value, int) and not isinstance(value, bool):
                ints[name] = value
            elif name not in _INT_PARAMS and isinstance(value, str):
                strings[name] = value
            else:
                kind = "an integer" if name in _INT_PARAMS else "a string"
                raise SignatureParamsInvalid(
                    f"signature parameter {name} must be {kind}, found {type(value).__name__}"
                )
        return cls(
            created=ints.get("created"),
            expires=ints.get("expires"),
            keyid=strings.get("keyid"),
            nonce=strings.get("nonce"),
            alg=strings.get("alg"),
            tag=strings.get("tag"),
            order=tuple(params),
        )

    def to_params(self) -> Params:
        """Return the parameters as an ordered Structured Field parameter map."""
        out: Params = {}
        for name in self.order:
            value = getattr(self, name)
            assert value is not None
            out[name] = value
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureInputMember:
    """One Signature-Input member: a label, the covered components and the parameters."""

    label: str
    components: tuple[ComponentId, ...]
    params: SignatureParams
    #: The exact ``@signature-params`` value (the member without ``label=``).
    signature_params: str = field(init=False)

    def __post_init__(self) -> None:
        components = tuple(self.components)
        if len(set(components)) != len(components):
            raise SignatureBaseError("a component identifier is covered twice")
        object.__setattr__(self, "components", components)
        # The RFC 9651 inner list, as serialize_inner_list writes it, from each
        # identifier's own serialization (the same text, without rebuilding items).
        covered = " ".join(c.serialize() for c in components)
        object.__setattr__(self, "signature_params",
                           f"({covered}){serialize_params(self.params.to_params())}")
        check_key(self.label)  # a label is a Dictionary key

    def serialize(self) -> str:
        """Return the member as it appears in Signature-Input, e.g. ``sig1=(...);created=...``."""
        return f"{self.label}={self.signature_params}"


# -- the canonical fast path -------------------------------------------------------
#
# Nearly every request carries one signature, serialized canonically by our own
# client: ``sig1=("@method" "@target-uri");created=…;…`` and ``sig1=:…:``. Such a
# value is recognised by one regular expression and built without the general
# RFC 9651 parser, which costs several times more in Python. "Canonical" means
# exactly what serialize_* writes back (single spaces, integers without leading
# zeros, strings without escapes), so the text after ``label=`` *is* the
# member's ``@signature-params`` and needs no re-serialization. Anything else
# (several members, parameters on a component, whitespace, a token, a duplicate
# or mistyped parameter) takes the general path, which also gives every error
# its message: the fast path never refuses, it only declines.

_LABEL = r"[a-z*][a-z0-9_\-.*]*"
_CANONICAL_INPUT_RE = re.compile(
    rf'({_LABEL})=(\((?:"[^"\\ ;]+"(?: "[^"\\ ;]+")*)?\))'
    r'((?:;(?:created|expires|keyid|nonce|alg|tag)=(?:0|[1-9][0-9]{0,14}|"[ !#-\[\]-~]*"))*)'
)
_CANONICAL_PARAM_RE = re.compile(r';([a-z]+)=(?:([0-9]+)|"([^"]*)")')
_CANONICAL_SIGNATURE_RE = re.compile(rf"({_LABEL})=:([A-Za-z0-9+/]*={{0,2}}):")
#: Inner-list text -> its identifiers; every request of one kind covers the same list.
_components_cache: dict[str, tuple[ComponentId, ...]] = {}
_COMPONENTS_CACHE_MAX = 256


def _canonical_components(text: str) -> tuple[ComponentId, ...]:
    components = _components_cache.get(text)
    if components is None:
        inner = text[1:-1]
        components = tuple(ComponentId(name=quoted[1:-1]) for quoted in inner.split(" ")) \
            if inner else ()
        if len(_components_cache) < _COMPONENTS_CACHE_MAX:
            _components_cache[text] = components
    return components


def _canonical_input(value: str) -> dict[str, SignatureInputMember] | None:
    """The one member of a canonical Signature-Input value, or None (take the general path)."""
    match = _CANONICAL_INPUT_RE.fullmatch(value)
    if match is None:
        return None
    label, inner, params_text = match.groups()
    ints: dict[str, int] = {}
    strings: dict[str, str] = {}
    order: list[str] = []
    for name, digits, text in _CANONICAL_PARAM_RE.findall(params_text):
        if name in ints or name in strings or (name in _INT_PARAMS) != bool(digits):
            return None  # a duplicate or a mistyped parameter: the general path says which
        if digits:
            ints[name] = int(digits)
        else:
            strings[name] = text
        order.append(name)
    try:
        components = _canonical_components(inner)
    except HttpSigError:
        return None
    # What SignatureParams.__post_init__ checks, the expression already guarantees:
    # integers of at most 15 digits (<= MAX_INTEGER), printable ASCII strings, and
    # ``order`` naming exactly the parameters present, each once.
    params = object.__new__(SignatureParams)
    for name in _PARAM_ORDER:
        object.__setattr__(params, name, ints.get(name) if name in _INT_PARAMS
                           else strings.get(name))
    object.__setattr__(params, "order", tuple(order))
    if len(set(components)) != len(components):
        return None
    member = object.__new__(SignatureInputMember)
    object.__setattr__(member, "label", label)
    object.__setattr__(member, "components", components)
    object.__setattr__(member, "params", params)
    object.__setattr__(member, "signature_params", value[len(label) + 1:])
    return {label: member}


def _canonical_signature(value: str) -> dict[str, bytes] | None:
    """The one member of a canonical Signature value, or None (take the general path)."""
    match = _CANONICAL_SIGNATURE_RE.fullmatch(value)
    if match is None:
        return None
    try:
        return {match.group(1): b64decode_canonical(match.group(2))}
    except StrictDecodeError:
        return None


def parse_signature_input(value: str | bytes) -> dict[str, SignatureInputMember]:
    """Return the Signature-Input members by label (RFC 9421 §4.1), in field order.

    Raises ``StructuredFieldError`` (malformed, duplicate label, not an inner list),
    ``UnsupportedComponent`` or ``SignatureParamsInvalid``.
    """
    if isinstance(value, str):
        canonical = _canonical_input(value)
        if canonical is not None:
            return canonical
    members: dict[str, SignatureInputMember] = {}
    for label, member in parse_dictionary(value).items():
        if not isinstance(member, InnerList):
            raise StructuredFieldError(f"signature-input member {label!r} must be an inner list")
        members[label] = SignatureInputMember(
            label=label,
            components=tuple(ComponentId.from_item(item) for item in member.items),
            params=SignatureParams.from_params(member.params),
        )
    return members


def parse_signature(value: str | bytes) -> dict[str, bytes]:
    """Return the Signature members by label (RFC 9421 §4.2): each a bare Byte Sequence."""
    if isinstance(value, str):
        canonical = _canonical_signature(value)
        if canonical is not None:
            return canonical
    signatures: dict[str, bytes] = {}
    for label, member in parse_dictionary(value).items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes) or member.params:
            raise StructuredFieldError(
                f"signature member {label!r} must be a byte sequence without parameters"
            )
        signatures[label] = member.value
    return signatures
