"""ASCII armor of age files: strict PEM (RFC 7468 §3) as in the C2SP age spec.

The encoder writes 64-column padded base64 between the BEGIN and END lines
with LF endings. The decoder is strict, because a lax armor parser makes the
file malleable: only whitespace is allowed outside the block, lines end in LF
or CRLF, every line but the last holds exactly 64 characters, the last holds
1-64 with padding only there, and the base64 must be canonical. Both are push
objects with no I/O.
"""

from __future__ import annotations

import binascii
import enum

from exchange.crypto._age_errors import ArmorError, truncate

__all__ = ["BEGIN_LINE", "END_LINE", "ArmorDecoder", "ArmorEncoder", "armor", "dearmor"]

BEGIN_LINE = b"-----BEGIN AGE ENCRYPTED FILE-----"
END_LINE = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
_LINE_BYTES = COLUMNS // 4 * 3  # 48 bytes of data per full line
_WHITESPACE = b" \t\r\n"
_B64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# No legitimate line is longer than this; a longer partial line is an error
# right away instead of an unbounded buffer.
_MAX_LINE = max(len(BEGIN_LINE), COLUMNS) + 2


class ArmorEncoder:
    """Push encoder: binary age bytes in, armored text bytes out."""

    def __init__(self) -> None:
        self._pending = bytearray()
        self._started = False

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the armored lines for every complete 48-byte group seen so far."""
        self._pending += data
        ready = len(self._pending) // _LINE_BYTES * _LINE_BYTES
        head = b"" if self._started else BEGIN_LINE + b"\n"
        self._started = True
        if not ready:
            return head
        encoded = binascii.b2a_base64(self._pending[:ready], newline=False)
        del self._pending[:ready]
        lines = [encoded[i : i + COLUMNS] for i in range(0, len(encoded), COLUMNS)]
        return head + b"\n".join(lines) + b"\n"

    def finalize(self) -> bytes:
        """Return the last (padded) line, if any, and the END line."""
        out = self.update(b"")
        if self._pending:
            out += binascii.b2a_base64(bytes(self._pending), newline=True)
        self._pending = bytearray()
        return out + END_LINE + b"\n"


class _State(enum.Enum):
    BEFORE = enum.auto()  # whitespace, then the BEGIN line
    DATA = enum.auto()  # 64-character lines
    END = enum.auto()  # after a short or padded line: only END may follow
    AFTER = enum.auto()  # after END: only whitespace


class ArmorDecoder:
    """Push decoder: armored text in, binary age bytes out; strict per the age spec.

    Raises :class:`ArmorError` on the first violation; unusable afterwards.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = _State.BEFORE

    def update(self, data: bytes | bytearray | memoryview) -> bytes:
        """Return the decoded bytes of every complete armor line seen so far."""
        self._buf += data
        out = bytearray()
        if self._state is _State.BEFORE:
            # Whitespace before the BEGIN line is allowed (and dropped).
            self._buf = bytearray(self._buf.lstrip(_WHITESPACE))
        pos = 0
        buf = self._buf
        while self._state is not _State.AFTER:
            if self._state is _State.DATA:
                pos = self._fast_lines(buf, pos, out)
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if len(buf) - pos > _MAX_LINE:
                    raise ArmorError(f"armor line too long: {truncate(bytes(buf[pos : pos + 80]))}")
                break
            line = bytes(buf[pos:nl])
            if line.endswith(b"\r"):
                line = line[:-1]
            pos = nl + 1
            out += self._line(line)
        if self._state is _State.AFTER and buf[pos:].strip(_WHITESPACE):
            raise ArmorError(f"data after the armor END line: {truncate(bytes(buf[pos:]).strip())}")
        if self._state is _State.AFTER:
            self._buf = bytearray()
        else:
            del self._buf[:pos]
        return bytes(out)

    def _fast_lines(self, buf: bytearray, pos: int, out: bytearray) -> int:
        """Decode a run of full LF-terminated 64-character lines in one step."""
        count = (len(buf) - pos) // (COLUMNS + 1)
        if count < 2:
            return pos
        # Keep the last complete line for the slow path: it may be the last
        # data line, which can carry padding.
        count -= 1
        end = pos + count * (COLUMNS + 1)
        block = bytes(buf[pos:end])
        if (
            block[COLUMNS :: COLUMNS + 1] != b"\n" * count
            or block.count(b"\n") != count
            or b"=" in block
        ):
            return pos
        joined = block.replace(b"\n", b"")
        if joined.translate(None, _B64_CHARS):
            return pos  # let the slow path name the bad line
        out += binascii.a2b_base64(joined, strict_mode=True)
        return end

    def _line(self, line: bytes) -> bytes:
        state = self._state
        if state is _State.BEFORE:
            if line != BEGIN_LINE:
                raise ArmorError(f"expected {BEGIN_LINE.decode()!r}, found {truncate(line)}")
            self._state = _State.DATA
            return b""
        if line == END_LINE:
            self._state = _State.AFTER
            return b""
        if state is _State.END:
            raise ArmorError(f"expected the armor END line, found {truncate(line)}")
        if not line or len(line) > COLUMNS:
            raise ArmorError(f"armor line is {len(line)} characters, want 1 to {COLUMNS}")
        if len(line) < COLUMNS or line.endswith(b"="):
            self._state = _State.END
        try:
            decoded = _strict_b64decode(line)
        except ValueError as err:
            raise ArmorError(f"armor line is not canonical padded base64: {err}") from None
        return decoded

    def finalize(self) -> bytes:
        """Check that the END line was seen; return any last bytes."""
        out = self.update(b"")
        if self._state is not _State.AFTER:
            leftover = bytes(self._buf)
            if leftover.rstrip(b"\r") == END_LINE:  # END without a final newline
                self._state = _State.AFTER
                self._buf = bytearray()
                return out
            if self._state is _State.BEFORE:
                if not leftover:
                    raise ArmorError("armor BEGIN line missing")
                raise ArmorError(f"expected {BEGIN_LINE.decode()!r}, found {truncate(leftover)}")
            raise ArmorError("armor END line missing")
        return out


def _strict_b64decode(line: bytes) -> bytes:
    if len(line) % 4:
        raise ValueError(f"length {len(line)} is not a multiple of 4 (missing padding)")
    body = line.rstrip(b"=")
    if len(line) - len(body) > 2 or body.translate(None, _B64_CHARS):
        raise ValueError(f"invalid characters in {truncate(line)}")
    data = binascii.a2b_base64(line, strict_mode=True)
    if binascii.b2a_base64(data, newline=False) != line:
        raise ValueError("unused bits are not zero")
    return data


def armor(data: bytes) -> bytes:
    """Return ``data`` wrapped in age ASCII armor."""
    encoder = ArmorEncoder()
    return encoder.update(data) + encoder.finalize()


def dearmor(text: bytes) -> bytes:
    """Return the binary bytes inside strict age ASCII armor; raise :class:`ArmorError`."""
    decoder = ArmorDecoder()
    return decoder.update(text) + decoder.finalize()
