"""RFC 9421 §2 component identifiers and their values for a request (and ``@status``).

Derived components (§2.2) are computed from the method and the target URI the
caller supplies: the server builds that URI from its configured public origin,
never from the Host header, so a proxy cannot make us sign or check a different
authority. HTTP fields (§2.1) are looked up case-insensitively; repeated field
lines are stripped of outer whitespace and joined with ", " in message order.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, unquote_to_bytes, urlsplit

from exchange.wire._httpsig_errors import (
    ComponentMissing,
    SignatureBaseError,
    StructuredFieldError,
    UnsupportedComponent,
)
from exchange.wire._sfv import Item, Params, serialize_item

__all__ = [
    "DERIVED_COMPONENTS",
    "ComponentId",
    "Headers",
    "resolve_components",
]

#: Derived components we can compute (RFC 9421 §2.2); ``@status`` is response-only.
DERIVED_COMPONENTS = frozenset(
    {
        "@method",
        "@target-uri",
        "@authority",
        "@scheme",
        "@request-target",
        "@path",
        "@query",
        "@query-param",
        "@status",
    }
)
_QUERY_PARAM = "@query-param"
_DEFAULT_PORTS = {"http": "80", "https": "443"}
# RFC 9110 §5.6.2 token, lowercase only: §2.1 requires lowercased field names.
_FIELD_NAME_RE = re.compile(r"[a-z0-9!#$%&'*+\-.^_`|~]+")
# WHATWG URL application/x-www-form-urlencoded percent-encode set: everything but these.
_FORM_SAFE = frozenset((string.ascii_letters + string.digits + "*-._").encode("ascii"))

#: Header fields as a mapping (one value per name, or a multidict whose ``items()``
#: yields repeated names) or as ordered (name, value) pairs.
Headers = Mapping[str, str] | Iterable[tuple[str, str]]


@dataclass(frozen=True, slots=True, kw_only=True)
class ComponentId:
    """One covered component: a derived ``@name`` or a lowercase HTTP field name.

    ``query_param`` is the (already percent-encoded) ``name`` parameter, required
    for ``@query-param`` and refused everywhere else. Other component parameters
    (``sf``, ``key``, ``bs``, ``req``, ``tr``) are outside our profile.
    """

    name: str
    query_param: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError("component name must be str")
        if self.name.startswith("@"):
            if self.name not in DERIVED_COMPONENTS:
                raise UnsupportedComponent(f"unsupported derived component {self.name[:40]!r}")
        elif _FIELD_NAME_RE.fullmatch(self.name) is None:
            raise UnsupportedComponent(
                f"field name must be a lowercase token, found {self.name[:40]!r}"
            )
        if (self.name == _QUERY_PARAM) != (self.query_param is not None):
            raise UnsupportedComponent("the name parameter goes with @query-param and only there")
        if self.query_param is not None and not (
            self.query_param.isascii() and self.query_param.isprintable()
        ):
            raise UnsupportedComponent("@query-param name must be printable ASCII")

    @classmethod
    def from_item(cls, item: Item) -> ComponentId:
        """Return the identifier an inner-list item of Signature-Input names (§2)."""
        if not isinstance(item.value, str):
            raise StructuredFieldError(
                f"component identifier must be a string, found {type(item.value).__name__}"
            )
        query_param: str | None = None
        for key, value in item.params.items():
            if key != "name" or item.value != _QUERY_PARAM:
                raise UnsupportedComponent(
                    f"unsupported component parameter {key!r} on {item.value[:40]!r}"
                )
            if not isinstance(value, str):
                raise StructuredFieldError("@query-param name parameter must be a string")
            query_param = value
        return cls(name=item.value, query_param=query_param)

    def to_item(self) -> Item:
        """Return this identifier as a Structured Field item."""
        params: Params = {} if self.query_param is None else {"name": self.query_param}
        return Item(self.name, params)

    def serialize(self) -> str:
        """Return the serialized identifier, e.g. ``"@method"`` or ``"@query-param";name="a"``."""
        if self.query_param is None:
            # Validated names hold no DQUOTE or backslash, so quoting is the whole serialization.
            return f'"{self.name}"'
        return serialize_item(self.to_item())


def _form_encode(text: str) -> str:
    """Percent-encode with the application/x-www-form-urlencoded set (RFC 9421 §2.2.8)."""
    return "".join(
        chr(byte) if byte in _FORM_SAFE else f"%{byte:02X}" for byte in text.encode("utf-8")
    )


def _form_decode(text: str) -> str:
    """Decode one name or value the way application/x-www-form-urlencoded parsing does."""
    return unquote_to_bytes(text.replace("+", " ")).decode("utf-8", errors="replace")


class _Message:
    """The parts of one message that component values are computed from.

    The header fields are indexed on first use: a signature covering only
    derived components (a GET's ``@method`` and ``@target-uri``) never needs
    them, and ``only`` limits the index to the names a caller will ask for.
    """

    __slots__ = ("_fields", "_headers", "_only", "method", "status", "target_uri", "uri")

    def __init__(
        self, *, method: str | None, target_uri: str | None, headers: Headers,
        status: int | None, only: frozenset[str] | None = None,
    ) -> None:
        self.method = method
        self.target_uri = target_uri
        self.status = status
        self.uri = None if target_uri is None else _split_target_uri(target_uri)
        self._headers = headers
        self._only = only
        self._fields: dict[str, list[str]] | None = None

    def _index(self) -> dict[str, list[str]]:
        fields: dict[str, list[str]] = {}
        only = self._only
        headers = self._headers
        for name, value in headers.items() if isinstance(headers, Mapping) else headers:
            if not isinstance(name, str) or not isinstance(value, str):
                raise TypeError("header names and values must be str")
            lowered = name.lower()
            if only is None or lowered in only:
                fields.setdefault(lowered, []).append(value.strip(" \t"))
        self._fields = fields
        return fields

    def field(self, name: str) -> str | None:
        if self._only is not None and name not in self._only:
            raise AssertionError(f"internal error: field {name!r} was not indexed")
        values = (self._fields if self._fields is not None else self._index()).get(name)
        return None if values is None else ", ".join(values)

    def covered(self, components: Iterable[ComponentId]) -> tuple[tuple[str, str], ...]:
        """Return the (serialized identifier, value) pair of each component, in order."""
        return tuple((component.serialize(), self.value(component)) for component in components)

    def value(self, component: ComponentId) -> str:
        name = component.name
        if not name.startswith("@"):
            value = self.field(name)
            if value is None:
                raise ComponentMissing(f"covered field {name!r} is absent from the message")
            return value
        if name == "@method":
            if self.method is None:
                raise ComponentMissing("@method is covered but the message has no method")
            return self.method
        if name == "@status":
            if self.status is None:
                raise ComponentMissing("@status is covered but the message is not a response")
            return f"{self.status:03d}"
        if self.uri is None or self.target_uri is None:
            raise ComponentMissing(f"{name} is covered but the message has no target uri")
        uri = self.uri
        if name == "@target-uri":
            return self.target_uri
        if name == "@authority":
            return _authority(uri)
        if name == "@scheme":
            return uri.scheme
        if name == "@path":
            return uri.path or "/"
        if name == "@query":
            return "?" + uri.query
        if name == "@request-target":
            return (uri.path or "/") + ("?" + uri.query if uri.query else "")
        assert name == _QUERY_PARAM and component.query_param is not None
        return _query_param(uri.query, component.query_param)


def _split_target_uri(target_uri: str) -> SplitResult:
    if not isinstance(target_uri, str):
        raise TypeError("target_uri must be str")
    if not (target_uri.isascii() and target_uri.isprintable()):
        raise SignatureBaseError("target uri must be printable ASCII")
    try:
        uri = urlsplit(target_uri)
    except ValueError:  # e.g. an unbalanced "[" in the authority
        raise SignatureBaseError(f"target uri does not parse: {target_uri[:60]!r}") from None
    if uri.scheme not in _DEFAULT_PORTS or not uri.netloc:
        raise SignatureBaseError(
            f"target uri must be an absolute http(s) uri, found {target_uri[:60]!r}"
        )
    if "@" in uri.netloc or uri.fragment or "#" in target_uri:
        raise SignatureBaseError("target uri must not carry userinfo or a fragment")
    return uri


def _authority(uri: SplitResult) -> str:
    """Return host[:port] lowercased with the scheme's default port removed (§2.2.3)."""
    authority = uri.netloc.lower()
    host, sep, port = authority.rpartition(":")
    if sep and port in ("", _DEFAULT_PORTS[uri.scheme]):
        return host
    return authority


def _query_param(query: str, encoded_name: str) -> str:
    """Return the re-encoded value of the one query parameter called ``encoded_name`` (§2.2.8)."""
    found: list[str] = []
    for part in query.split("&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition("=")
        if _form_encode(_form_decode(raw_name)) == encoded_name:
            found.append(_form_encode(_form_decode(raw_value)))
    if not found:
        raise ComponentMissing(f"query parameter {encoded_name[:40]!r} is absent")
    if len(found) > 1:
        # §2.2.8: a repeated parameter MUST NOT be signed by name; cover @query instead.
        raise SignatureBaseError(f"query parameter {encoded_name[:40]!r} occurs {len(found)} times")
    return found[0]


def resolve_components(
    components: Sequence[ComponentId],
    *,
    method: str | None = None,
    target_uri: str | None = None,
    headers: Headers = (),
    status: int | None = None,
) -> tuple[tuple[str, str], ...]:
    """Return the ordered (serialized identifier, value) pairs for ``components``.

    Raises ``ComponentMissing`` when the message lacks a covered component and
    ``SignatureBaseError`` when the target URI is not an absolute http(s) URI.
    """
    message = _Message(method=method, target_uri=target_uri, headers=headers, status=status)
    return message.covered(components)
