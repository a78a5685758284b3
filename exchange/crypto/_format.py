"""age v1 header: stanza and header values, strict parsing and canonical encoding.

Implements the header grammar of the C2SP age spec ("Header", "Recipient
stanza", "Header MAC" sections) byte for byte. The parser is incremental so a
streaming decryptor can feed it arbitrary slices, and strict: every stanza,
including unknown types, must follow the grammar, and base64 must be canonical
and unpadded. Strictness is what makes the MAC over the received bytes sound:
any header that parses encodes back to exactly the same bytes.
"""

from __future__ import annotations

import binascii
import enum
from dataclasses import dataclass

from exchange.crypto._age_errors import HeaderError, truncate

__all__ = [
    "COLUMNS",
    "MAX_HEADER_SIZE",
    "PAYLOAD_NONCE_SIZE",
    "VERSION_LINE",
    "Header",
    "HeaderParser",
    "ParsedHeader",
    "Stanza",
    "b64decode",
    "b64encode",
    "parse_header",
]

MAGIC_PREFIX = b"age-encryption.org/"  # any age version; only v1 is supported
VERSION_LINE = b"age-encryption.org/v1"
STANZA_PREFIX = b"-> "
MAC_PREFIX = b"--- "
MAC_MARK = b"---"  # the MAC input ends right after these three dashes
COLUMNS = 64  # stanza bodies are wrapped at 64 base64 characters
MAC_B64_SIZE = 43  # 32-byte HMAC-SHA-256 in unpadded base64
PAYLOAD_NONCE_SIZE = 16
# A header is a few hundred bytes (hybrid stanzas about 3 KiB); a cap keeps a
# hostile stream that never ends its header from growing memory without bound.
MAX_HEADER_SIZE = 1 << 20

_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_VCHAR = bytes(range(0x21, 0x7F))


def b64encode(data: bytes) -> str:
    """Return canonical unpadded standard base64 (age spec "base64")."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").decode("ascii")


def b64decode(text: bytes | str) -> bytes:
    """Return the bytes of strict unpadded base64; raise ``ValueError`` otherwise.

    Rejects padding, characters outside the standard alphabet (including
    newlines) and non-canonical trailing bits, because each would let two
    encodings map to the same bytes.
    """
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    if raw.translate(None, _B64_ALPHABET):
        raise ValueError("base64 contains characters outside the unpadded standard alphabet")
    if len(raw) % 4 == 1:
        raise ValueError(f"base64 length {len(raw)} is impossible")
    data = binascii.a2b_base64(raw + b"=" * (-len(raw) % 4), strict_mode=True)
    if b64encode(data).encode("ascii") != raw:
        raise ValueError("base64 is not canonical (unused bits are not zero)")
    return data


def _check_arg(arg: str) -> None:
    if not arg or not arg.isascii() or arg.encode("ascii").translate(None, _VCHAR):
        raise ValueError(f"stanza argument {truncate(arg)} is not 1 or more VCHAR")


@dataclass(frozen=True, slots=True)
class Stanza:
    """One recipient stanza: a type, its arguments and a binary body.

    The type and every argument are non-empty strings of VCHAR (0x21-0x7E);
    the body is any bytes. Construction validates, so an instance always encodes.
    """

    type: str
    args: tuple[str, ...]
    body: bytes

    def __post_init__(self) -> None:
        if not isinstance(self.body, bytes):
            raise TypeError("body must be bytes")
        _check_arg(self.type)
        for arg in self.args:
            _check_arg(arg)

    def encode(self) -> bytes:
        """Return the stanza lines: the argument line and the 64-column wrapped body."""
        line = " ".join((self.type, *self.args)).encode("ascii")
        body = b64encode(self.body).encode("ascii")
        # The body always ends with a short line (possibly empty), so a body
        # whose encoding fills whole lines gets an extra empty line.
        lines = [body[i : i + COLUMNS] for i in range(0, len(body) - len(body) % COLUMNS, COLUMNS)]
        lines.append(body[len(body) - len(body) % COLUMNS :])
        return STANZA_PREFIX + line + b"\n" + b"\n".join(lines) + b"\n"


@dataclass(frozen=True, slots=True)
class Header:
    """A parsed age v1 header: at least one stanza and the 32-byte header MAC."""

    stanzas: tuple[Stanza, ...]
    mac: bytes

    def __post_init__(self) -> None:
        if not self.stanzas:
            raise ValueError("a header needs at least one stanza")
        if len(self.mac) != 32:
            raise ValueError(f"header mac must be 32 bytes, found {len(self.mac)}")

    @staticmethod
    def encode_mac_input(stanzas: tuple[Stanza, ...] | list[Stanza]) -> bytes:
        """Return the header bytes the MAC covers: version line through ``---``."""
        return VERSION_LINE + b"\n" + b"".join(s.encode() for s in stanzas) + MAC_MARK

    def encode(self) -> bytes:
        """Return the canonical header bytes, through the LF that ends the MAC line."""
        return self.encode_mac_input(self.stanzas) + b" " + b64encode(self.mac).encode() + b"\n"


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    """What the parser returns: the header, the exact MAC input, the payload nonce.

    ``header_size`` counts bytes through the MAC line's LF; ``rest`` holds any
    payload bytes that arrived after the nonce.
    """

    header: Header
    mac_input: bytes
    nonce: bytes
    header_size: int
    rest: bytes


class _State(enum.Enum):
    VERSION = enum.auto()
    NEXT = enum.auto()  # expecting "-> " (a stanza) or "--- " (the MAC line)
    BODY = enum.auto()
    NONCE = enum.auto()


class HeaderParser:
    """Incremental strict parser of an age v1 header plus the 16-byte payload nonce.

    Feed bytes with :meth:`feed` until it returns a :class:`ParsedHeader`; call
    :meth:`finish` at end of input. Raises :class:`HeaderError` on the first
    grammar violation; the object must not be used after an error.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._state = _State.VERSION
        self._stanzas: list[Stanza] = []
        self._args: list[str] = []
        self._body: list[bytes] = []
        self._mac = b""
        self._mac_input = b""

    def feed(self, data: bytes | bytearray | memoryview) -> ParsedHeader | None:
        """Consume ``data``; return the parsed header once it and the nonce are complete."""
        self._buf += data
        while self._state is not _State.NONCE:
            nl = self._buf.find(b"\n", self._pos)
            if nl < 0:
                if len(self._buf) > MAX_HEADER_SIZE:
                    raise HeaderError(f"header is longer than {MAX_HEADER_SIZE} bytes")
                return None
            line = bytes(self._buf[self._pos : nl])
            line_start = self._pos
            self._pos = nl + 1
            self._line(line, line_start)
        if len(self._buf) - self._pos < PAYLOAD_NONCE_SIZE:
            return None
        end = self._pos + PAYLOAD_NONCE_SIZE
        return ParsedHeader(
            header=Header(stanzas=tuple(self._stanzas), mac=self._mac),
            mac_input=self._mac_input,
            nonce=bytes(self._buf[self._pos : end]),
            header_size=self._pos,
            rest=bytes(self._buf[end:]),
        )

    def finish(self) -> None:
        """Signal end of input before :meth:`feed` returned a header: always raises."""
        if not self._buf:
            raise HeaderError("empty file: expected an age header")
        if self._state is _State.NONCE:
            found = len(self._buf) - self._pos
            raise HeaderError(f"payload nonce truncated: want 16 bytes, found {found}")
        raise HeaderError("header truncated: end of input before the mac line")

    def _line(self, line: bytes, line_start: int) -> None:
        if b"\r" in line:
            raise HeaderError(f"header line contains CR (lines must end in LF): {truncate(line)}")
        if self._state is _State.VERSION:
            if line != VERSION_LINE:
                if line.startswith(MAGIC_PREFIX):
                    raise HeaderError(f"unsupported age version {truncate(line)}, want v1")
                raise HeaderError(f"not an age file: first line is {truncate(line)}")
            self._state = _State.NEXT
        elif self._state is _State.BODY:
            if len(line) > COLUMNS:
                raise HeaderError(f"stanza body line is {len(line)} characters, max {COLUMNS}")
            if line.translate(None, _B64_ALPHABET):
                raise HeaderError(f"stanza body line is not unpadded base64: {truncate(line)}")
            self._body.append(line)
            if len(line) < COLUMNS:
                self._end_stanza()
        elif line.startswith(STANZA_PREFIX):
            args = line[len(STANZA_PREFIX) :].split(b" ")
            if any(not a or a.translate(None, _VCHAR) for a in args):
                raise HeaderError(
                    f"stanza line must be '-> ' and VCHAR arguments separated by single "
                    f"spaces, found {truncate(line)}"
                )
            self._args = [a.decode("ascii") for a in args]
            self._body = []
            self._state = _State.BODY
        elif line.startswith(MAC_PREFIX):
            if not self._stanzas:
                raise HeaderError("header has no stanzas, want at least one")
            encoded = line[len(MAC_PREFIX) :]
            if len(encoded) != MAC_B64_SIZE:
                raise HeaderError(f"header mac is {len(encoded)} characters, want {MAC_B64_SIZE}")
            try:
                self._mac = b64decode(encoded)
            except ValueError as err:
                raise HeaderError(f"header mac: {err}") from None
            self._mac_input = bytes(self._buf[: line_start + len(MAC_MARK)])
            self._state = _State.NONCE
        else:
            raise HeaderError(
                f"expected a stanza ('-> ') or the mac line ('--- '), found {truncate(line)}"
            )

    def _end_stanza(self) -> None:
        try:
            body = b64decode(b"".join(self._body))
        except ValueError as err:
            raise HeaderError(f"stanza body: {err}") from None
        self._stanzas.append(Stanza(self._args[0], tuple(self._args[1:]), body))
        self._state = _State.NEXT


def parse_header(data: bytes) -> ParsedHeader:
    """Parse a complete age header (plus nonce) at the start of ``data``."""
    parser = HeaderParser()
    result = parser.feed(data)
    if result is None:
        parser.finish()
        raise AssertionError("unreachable: finish() always raises")
    return result
