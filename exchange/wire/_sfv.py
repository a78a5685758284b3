"""RFC 9651 Structured Field Values: the parser behind RFC 9421 and RFC 9530 fields.

Supported: Lists, Dictionaries (members Items or Inner Lists), Items,
Parameters, and the bare item types Integer, Decimal, String, Token, Byte
Sequence and Boolean. Dates and Display Strings are refused with a precise
error (nothing we read uses them). Parsing follows the algorithms of RFC 9651
§4.2, with two deliberate tightenings that remove ambiguity from
security-relevant fields (the structured-field corpus test lists every case
these change, ``tests/vectors/test_structured_fields.py``):

- a duplicate Dictionary key or Parameter key is an error (RFC 9651 lets the
  last one win, so a proxy and we could otherwise disagree on which ``sig1`` or
  ``sha-256`` member counts);
- Byte Sequences must be canonical padded base64 (RFC 9651 §4.2.7 only says
  parsers SHOULD NOT fail on missing padding or non-zero pad bits; accepting them
  would make signatures and digests malleable in their text form).
"""

from __future__ import annotations

import base64
import re
import string
from dataclasses import dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.wire._httpsig_errors import StructuredFieldError

__all__ = [
    "BareItem",
    "Dictionary",
    "InnerList",
    "Item",
    "Params",
    "Token",
    "check_key",
    "parse_dictionary",
    "parse_item",
    "parse_list",
    "serialize_bare_item",
    "serialize_dictionary",
    "serialize_inner_list",
    "serialize_item",
    "serialize_params",
]

# RFC 9651 §3.3.1: Integers have at most 15 decimal digits.
MAX_INTEGER = 999_999_999_999_999
_MAX_INTEGER_DIGITS = 15
# RFC 9651 §3.3.2: Decimals have at most 12 integer and 3 fractional digits.
_MAX_DECIMAL_INTEGER_DIGITS = 12
_MAX_DECIMAL_FRACTION_DIGITS = 3

_DIGITS = frozenset(string.digits)
_ALPHA = frozenset(string.ascii_letters)
_BASE64_RE = re.compile(r"[A-Za-z0-9+/=]*")
# RFC 9651 §3.1.2 key; §3.3.4 token = RFC 9110 tchar plus ":" and "/".
_KEY_RE = re.compile(r"[a-z*][a-z0-9_\-.*]*")
_TOKEN_RE = re.compile(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]*")
_DIGITS_RE = re.compile(r"[0-9]*")
# A run of string characters that need no escape: printable ASCII minus DQUOTE and "\".
_PLAIN_STRING_RE = re.compile(r'[ !#-\[\]-~]*')
# A whole string without escapes, closing quote included: the common case, in one match.
_SIMPLE_STRING_RE = re.compile(r'"([ !#-\[\]-~]*)"')
_MAX_SHOWN = 40


@dataclass(frozen=True, slots=True)
class Token:
    """An RFC 9651 Token (kept distinct from a String, which serializes quoted)."""

    value: str

    def __post_init__(self) -> None:
        _check_token(self.value)


BareItem = int | Decimal | bool | str | bytes | Token
Params = dict[str, BareItem]


@dataclass(frozen=True, slots=True)
class Item:
    """A bare item with its (ordered) parameters."""

    value: BareItem
    params: Params = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class InnerList:
    """An Inner List of items with its own (ordered) parameters."""

    items: tuple[Item, ...]
    params: Params = field(default_factory=dict)


Dictionary = dict[str, Item | InnerList]


def _show(text: str) -> str:
    """Render untrusted text for an error message: quoted and truncated."""
    if len(text) > _MAX_SHOWN:
        return repr(text[:_MAX_SHOWN]) + "..."
    return repr(text)


def _check_token(value: str) -> None:
    if not value or (value[0] not in _ALPHA and value[0] != "*"):
        raise StructuredFieldError(f"token must start with a letter or '*', found {_show(value)}")
    if _TOKEN_RE.fullmatch(value) is None:
        raise StructuredFieldError(f"token contains a character outside tchar: {_show(value)}")


def check_key(key: str) -> None:
    """Raise ``StructuredFieldError`` unless ``key`` is an RFC 9651 §3.1.2 key."""
    if _KEY_RE.fullmatch(key) is None:
        raise StructuredFieldError(
            f"key must be lowercase letters, digits, '_-.*', starting with a letter or '*', "
            f"found {_show(key)}"
        )


class _Parser:
    """A cursor over one field value; each ``parse_*`` method is an RFC 9651 §4.2 algorithm."""

    __slots__ = ("pos", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def _peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def _fail(self, expected: str) -> StructuredFieldError:
        if self.pos >= len(self.text):
            found = "end of input"
        else:
            found = _show(self.text[self.pos : self.pos + 10])
        return StructuredFieldError(f"expected {expected} at offset {self.pos}, found {found}")

    def _at(self, char: str) -> bool:
        """Whether ``char`` is next (``_peek() == char`` without building a string)."""
        return self.text.startswith(char, self.pos)

    def _skip_sp(self) -> None:
        while self.text.startswith(" ", self.pos):
            self.pos += 1

    def _skip_ows(self) -> None:
        while self.text.startswith((" ", "\t"), self.pos):
            self.pos += 1

    def finish(self) -> None:
        self._skip_sp()
        if self.pos != len(self.text):
            raise self._fail("end of field value")

    def parse_dictionary(self) -> Dictionary:
        members: Dictionary = {}
        while self.pos < len(self.text):
            key = self.parse_key()
            if key in members:
                raise StructuredFieldError(f"duplicate dictionary key {_show(key)}")
            member: Item | InnerList
            if self._at("="):
                self.pos += 1
                member = self.parse_item_or_inner_list()
            else:
                member = Item(True, self.parse_parameters())
            members[key] = member
            self._skip_ows()
            if self.pos >= len(self.text):
                return members
            if not self._at(","):
                raise self._fail("',' between dictionary members")
            self.pos += 1
            self._skip_ows()
            if self.pos >= len(self.text):
                raise StructuredFieldError("trailing ',' after the last dictionary member")
        return members

    def parse_list(self) -> list[Item | InnerList]:
        members: list[Item | InnerList] = []
        while self.pos < len(self.text):
            members.append(self.parse_item_or_inner_list())
            self._skip_ows()
            if self.pos >= len(self.text):
                return members
            if not self._at(","):
                raise self._fail("',' between list members")
            self.pos += 1
            self._skip_ows()
            if self.pos >= len(self.text):
                raise StructuredFieldError("trailing ',' after the last list member")
        return members

    def parse_item_or_inner_list(self) -> Item | InnerList:
        if self._at("("):
            return self.parse_inner_list()
        return self.parse_item()

    def parse_inner_list(self) -> InnerList:
        self.pos += 1  # the caller saw "("
        items: list[Item] = []
        while True:
            self._skip_sp()
            if self._at(")"):
                self.pos += 1
                return InnerList(tuple(items), self.parse_parameters())
            if self.pos >= len(self.text):
                raise self._fail("')' closing the inner list")
            items.append(self.parse_item())
            if not self.text.startswith((" ", ")"), self.pos):
                raise self._fail("' ' or ')' after an inner-list item")

    def parse_item(self) -> Item:
        value = self.parse_bare_item()
        return Item(value, self.parse_parameters())

    def parse_parameters(self) -> Params:
        params: Params = {}
        while self._at(";"):
            self.pos += 1
            self._skip_sp()
            key = self.parse_key()
            if key in params:
                raise StructuredFieldError(f"duplicate parameter key {_show(key)}")
            value: BareItem = True
            if self._at("="):
                self.pos += 1
                value = self.parse_bare_item()
            params[key] = value
        return params

    def parse_key(self) -> str:
        match = _KEY_RE.match(self.text, self.pos)
        if match is None:
            raise self._fail("a key (lowercase letter or '*')")
        self.pos = match.end()
        return match.group()

    def parse_bare_item(self) -> BareItem:
        ch = self._peek()
        if ch == "-" or ch in _DIGITS:
            return self.parse_integer()
        if ch == '"':
            return self.parse_string()
        if ch in _ALPHA or ch == "*":
            return self.parse_token()
        if ch == ":":
            return self.parse_byte_sequence()
        if ch == "?":
            return self.parse_boolean()
        if ch == "@":
            raise StructuredFieldError(f"dates are not supported (offset {self.pos})")
        if ch == "%":
            raise StructuredFieldError(f"display strings are not supported (offset {self.pos})")
        raise self._fail("a bare item")

    def parse_integer(self) -> int | Decimal:
        """RFC 9651 §4.2.4: an Integer, or a Decimal (at most 12 + 3 digits)."""
        sign = 1
        if self._at("-"):
            sign = -1
            self.pos += 1
        match = _DIGITS_RE.match(self.text, self.pos)
        assert match is not None  # the pattern matches the empty string
        digits = match.group()
        self.pos = match.end()
        if not digits:
            raise self._fail("a digit")
        if self._at("."):
            if len(digits) > _MAX_DECIMAL_INTEGER_DIGITS:
                raise StructuredFieldError(
                    f"decimal has {len(digits)} integer digits, at most "
                    f"{_MAX_DECIMAL_INTEGER_DIGITS} allowed")
            self.pos += 1
            fraction = _DIGITS_RE.match(self.text, self.pos)
            assert fraction is not None
            self.pos = fraction.end()
            if not 1 <= len(fraction.group()) <= _MAX_DECIMAL_FRACTION_DIGITS:
                raise StructuredFieldError(
                    f"decimal needs 1 to {_MAX_DECIMAL_FRACTION_DIGITS} fractional digits")
            return sign * Decimal(f"{digits}.{fraction.group()}")
        if len(digits) > _MAX_INTEGER_DIGITS:
            raise StructuredFieldError(
                f"integer has {len(digits)} digits, at most {_MAX_INTEGER_DIGITS} allowed"
            )
        return sign * int(digits)

    def parse_string(self) -> str:
        simple = _SIMPLE_STRING_RE.match(self.text, self.pos)
        if simple is not None:  # no escape: what the loop below would return
            self.pos = simple.end()
            return simple.group(1)
        self.pos += 1  # the opening DQUOTE
        out: list[str] = []
        while self.pos < len(self.text):
            run = _PLAIN_STRING_RE.match(self.text, self.pos)
            if run is not None and run.end() > self.pos:
                out.append(run.group())
                self.pos = run.end()
                continue
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\":
                nxt = self._peek()
                if nxt not in ('"', "\\"):
                    raise self._fail("'\"' or '\\\\' after a backslash in a string")
                out.append(nxt)
                self.pos += 1
            elif ch == '"':
                return "".join(out)
            elif not " " <= ch <= "~":
                self.pos -= 1
                raise self._fail("a printable ASCII character in a string")
            else:
                out.append(ch)
        raise StructuredFieldError("string is not terminated by '\"'")

    def parse_token(self) -> Token:
        match = _TOKEN_RE.match(self.text, self.pos)
        assert match is not None  # the caller saw a letter or "*"
        self.pos = match.end()
        return Token(match.group())

    def parse_byte_sequence(self) -> bytes:
        self.pos += 1  # the opening ":"
        end = self.text.find(":", self.pos)
        if end < 0:
            raise StructuredFieldError("byte sequence is not terminated by ':'")
        encoded = self.text[self.pos : end]
        if _BASE64_RE.fullmatch(encoded) is None:
            raise self._fail("base64 characters in a byte sequence")
        try:
            decoded = b64decode_canonical(encoded)
        except StrictDecodeError:
            raise StructuredFieldError(
                f"byte sequence is not canonical padded base64: {_show(encoded)}"
            ) from None
        self.pos = end + 1
        return decoded

    def parse_boolean(self) -> bool:
        self.pos += 1  # the "?"
        ch = self._peek()
        if ch == "1":
            self.pos += 1
            return True
        if ch == "0":
            self.pos += 1
            return False
        raise self._fail("'0' or '1' after '?'")


def _as_text(value: str | bytes) -> str:
    """Field values are ASCII (RFC 9651 §4.2); anything else is a parse failure."""
    if isinstance(value, bytes):
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            raise StructuredFieldError("field value is not ASCII") from None
    if not isinstance(value, str):
        raise TypeError("field value must be str or bytes")
    if not value.isascii():
        raise StructuredFieldError("field value is not ASCII")
    return value


def parse_dictionary(value: str | bytes) -> Dictionary:
    """Return the Dictionary in a field value (RFC 9651 §4.2.2), in member order.

    An empty value is an empty Dictionary. Raises ``StructuredFieldError``.
    """
    parser = _Parser(_as_text(value))
    parser._skip_sp()
    members = parser.parse_dictionary()
    parser.finish()
    return members


def parse_list(value: str | bytes) -> list[Item | InnerList]:
    """Return the List in a field value (RFC 9651 §4.2.1). Raises ``StructuredFieldError``.

    An empty value is an empty List. Nothing in RFC 9421 or 9530 is a List; it
    is here so the whole structured-field test corpus runs against one parser.
    """
    parser = _Parser(_as_text(value))
    parser._skip_sp()
    members = parser.parse_list()
    parser.finish()
    return members


def parse_item(value: str | bytes) -> Item:
    """Return the Item in a field value (RFC 9651 §4.2.3). Raises ``StructuredFieldError``."""
    parser = _Parser(_as_text(value))
    parser._skip_sp()
    item = parser.parse_item()
    parser.finish()
    return item


def serialize_bare_item(value: BareItem) -> str:
    """Return the RFC 9651 §4.1.3.1 serialization of a bare item."""
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "?1" if value else "?0"
    if isinstance(value, int):
        if not -MAX_INTEGER <= value <= MAX_INTEGER:
            raise StructuredFieldError(f"integer {value} is outside ±{MAX_INTEGER}")
        return str(value)
    if isinstance(value, Decimal):
        rounded = value.quantize(Decimal("0.001"), rounding=ROUND_HALF_EVEN)
        if abs(rounded) >= 10**_MAX_DECIMAL_INTEGER_DIGITS:
            raise StructuredFieldError(f"decimal {value} has more than 12 integer digits")
        text = f"{rounded:f}".rstrip("0")
        return text + "0" if text.endswith(".") else text
    if isinstance(value, str):
        if not (value.isascii() and value.isprintable()):
            raise StructuredFieldError(f"string must be printable ASCII, found {_show(value)}")
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, Token):
        return value.value
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    raise TypeError(f"cannot serialize {type(value).__name__} as a structured field bare item")


def serialize_params(params: Params) -> str:
    """Return the RFC 9651 §4.1.1.2 serialization of parameters (``;key=value`` ...)."""
    out: list[str] = []
    for key, value in params.items():
        check_key(key)
        out.append(";" + key if value is True else f";{key}={serialize_bare_item(value)}")
    return "".join(out)


def serialize_item(item: Item) -> str:
    """Return the RFC 9651 §4.1.3 serialization of an item with its parameters."""
    return serialize_bare_item(item.value) + serialize_params(item.params)


def serialize_inner_list(inner: InnerList) -> str:
    """Return the RFC 9651 §4.1.1.1 serialization of an inner list with its parameters."""
    body = " ".join(serialize_item(item) for item in inner.items)
    return f"({body}){serialize_params(inner.params)}"


def serialize_dictionary(members: Dictionary) -> str:
    """Return the RFC 9651 §4.1.2 serialization of a Dictionary (members joined by ", ")."""
    out: list[str] = []
    for key, member in members.items():
        check_key(key)
        if isinstance(member, InnerList):
            out.append(f"{key}={serialize_inner_list(member)}")
        elif member.value is True:
            out.append(key + serialize_params(member.params))
        else:
            out.append(f"{key}={serialize_item(member)}")
    return ", ".join(out)
