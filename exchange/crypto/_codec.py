"""Push encryptor and decryptor of whole age v1 files (C2SP age spec), sans I/O.

They join the layers in the spec's check order: armor, header syntax
(including the payload nonce), per-stanza validity, unwrap, header MAC, then
the STREAM payload. Both are single-use: after ``finalize`` or any error they
refuse further input.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Sequence

from exchange.crypto._age_errors import AgeError, HeaderError, HeaderMacError, NoIdentityMatch
from exchange.crypto._format import (
    MAGIC_PREFIX,
    Header,
    HeaderParser,
    ParsedHeader,
    b64encode,
)
from exchange.crypto._primitives import FILE_KEY_SIZE, header_mac, payload_key, verify_header_mac
from exchange.crypto._stream import Buffer, Sink, StreamDecryptor, StreamEncryptor
from exchange.crypto.armor import ArmorDecoder, ArmorEncoder
from exchange.crypto.recipients import Identity, Recipient, check_stanzas
from exchange.crypto.recipients.scrypt import STANZA_TYPE as SCRYPT_TYPE
from exchange.crypto.recipients.scrypt import ScryptRecipient

__all__ = ["Decryptor", "Encryptor", "open_header"]

# Feed the header parser at most this much at a time, so a large first buffer
# is not copied whole into the parser before the header is known.
_HEADER_SLICE = 64 * 1024


def _check_bytes(data: object) -> None:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")


def open_header(parsed: ParsedHeader, identities: Sequence[Identity]) -> bytes:
    """Return the payload key after unwrapping the file key and verifying the header MAC.

    Raises :class:`HeaderError` for an invalid known stanza, :class:`NoIdentityMatch`
    if no identity unwraps, :class:`HeaderMacError` if the MAC does not verify.
    """
    stanzas = parsed.header.stanzas
    check_stanzas(stanzas)
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            break
    else:
        raise NoIdentityMatch(tuple(s.type for s in stanzas))
    if len(file_key) != FILE_KEY_SIZE:
        raise HeaderError(f"unwrapped file key is {len(file_key)} bytes, want {FILE_KEY_SIZE}")
    # The MAC is checked only now, with the unwrapped key, over the exact bytes
    # received; pyca compares in constant time.
    if not verify_header_mac(file_key, parsed.mac_input, parsed.header.mac):
        raise HeaderMacError("header mac does not verify")
    return payload_key(file_key, parsed.nonce)


#: Bytes of the payload nonce that ends an age header (C2SP age, "Payload").
NONCE_SIZE = 16


def new_header(recipients: Sequence[Recipient]) -> tuple[bytes, bytes]:
    """Return (header bytes + payload nonce, payload key) for a fresh random file key.

    The one place an age header is built, so every writer (``Encryptor``,
    ``exchange.crypto.resumable``) enforces the rule that a passphrase
    (scrypt) recipient stands alone: with another recipient beside it, the
    file key would be as weak as the weakest of them, and the reference
    implementation refuses such files. Raises ``ValueError``.
    """
    recipients = list(recipients)
    if not recipients:
        raise ValueError("at least one recipient is required")
    if len(recipients) > 1 and any(isinstance(r, ScryptRecipient) for r in recipients):
        raise ValueError("a passphrase (scrypt) recipient must be the only recipient")
    file_key = os.urandom(FILE_KEY_SIZE)
    stanzas = [stanza for r in recipients for stanza in r.wrap(file_key)]
    if len(stanzas) > 1 and any(s.type == SCRYPT_TYPE for s in stanzas):
        raise ValueError("an scrypt stanza must be the only stanza in the header")
    mac_input = Header.encode_mac_input(stanzas)
    mac = header_mac(file_key, mac_input)
    nonce = os.urandom(NONCE_SIZE)
    head = mac_input + b" " + b64encode(mac).encode() + b"\n" + nonce
    return head, payload_key(file_key, nonce)


class Encryptor:
    """Push encryptor: ``update(plaintext) -> bytes``, then ``finalize() -> bytes``.

    The header is emitted with the first output. Raises ``ValueError`` for no
    recipients or an scrypt recipient mixed with any other.
    """

    def __init__(self, recipients: Sequence[Recipient], *, armor: bool = False) -> None:
        head, key = new_header(recipients)
        self._head: bytes | None = head
        self._stream = StreamEncryptor(key)
        self._armor = ArmorEncoder() if armor else None
        self._finalized = False

    def _emit(self, data: Buffer, sink: Sink) -> None:
        if self._head is not None:
            head, self._head = self._head, None
            self._emit(head, sink)
        if not len(data):
            return
        if self._armor is not None:
            sink(self._armor.update(data))
        else:
            sink(data)

    def feed(self, data: Buffer, sink: Sink, *, scratch: bytearray | None = None) -> None:
        """Pass the output for ``data`` to ``sink``; each buffer is valid only until it returns.

        With a ``scratch`` of at least ``feed_scratch_size(len(data))`` bytes,
        binary ciphertext is instead a view of ``scratch`` that stays valid
        until the caller reuses it; everything else given to ``sink`` is
        ``bytes``.
        """
        _check_bytes(data)
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        self._stream.feed(data, lambda out: self._emit(out, sink), scratch=scratch)
        if self._head is not None:
            self._emit(b"", sink)

    def update(self, data: Buffer) -> bytes:
        """Return the output bytes now available for ``data`` (the header on first call)."""
        out = bytearray()
        self.feed(data, out.extend)
        return bytes(out)

    def finalize(self) -> bytes:
        """Return the rest of the file: the final chunk and, if armored, the END line."""
        if self._finalized:
            raise RuntimeError("encryptor already finalized")
        out = bytearray()
        self._emit(self._stream.finalize(), out.extend)
        self._finalized = True
        if self._armor is not None:
            out += self._armor.finalize()
        return bytes(out)


class _Mode(enum.Enum):
    DETECT = enum.auto()
    BINARY = enum.auto()
    ARMOR = enum.auto()


class Decryptor:
    """Push decryptor: releases plaintext only after each chunk authenticates.

    ASCII armor is detected automatically: input that does not start with
    ``age-encryption.org/`` is parsed as armor. A payload failure found after
    some plaintext of the same :meth:`update` was authenticated is raised by
    the next call, so that plaintext is still released; the stream is complete
    only when :meth:`finalize` returns.
    """

    def __init__(self, identities: Sequence[Identity]) -> None:
        self._identities = list(identities)
        if not self._identities:
            raise ValueError("at least one identity is required")
        self._mode = _Mode.DETECT
        self._detect = bytearray()
        self._armor: ArmorDecoder | None = None
        self._parser: HeaderParser | None = HeaderParser()
        self._stream: StreamDecryptor | None = None
        self._failed = False
        self._finalized = False
        self._deferred: AgeError | None = None

    def _check_usable(self) -> None:
        if self._deferred is not None:
            err, self._deferred = self._deferred, None
            self._failed = True
            raise err
        if self._failed:
            raise RuntimeError("decryptor is unusable after an error")
        if self._finalized:
            raise RuntimeError("decryptor already finalized")

    def _binary(self, data: Buffer, sink: Sink, scratch: bytearray | None = None) -> None:
        if self._stream is None:
            assert self._parser is not None
            view = memoryview(data).cast("B")
            for at in range(0, len(view), _HEADER_SLICE):
                parsed = self._parser.feed(view[at : at + _HEADER_SLICE])
                if parsed is not None:
                    self._parser = None
                    self._stream = StreamDecryptor(open_header(parsed, self._identities))
                    # Only the second feed may use ``scratch``: two feeds into
                    # it would overwrite each other's output.
                    self._stream.feed(parsed.rest, sink)
                    self._stream.feed(view[at + _HEADER_SLICE :], sink, scratch=scratch)
                    return
            return
        self._stream.feed(data, sink, scratch=scratch)

    def _route(self, data: Buffer, sink: Sink, scratch: bytearray | None = None) -> None:
        if self._mode is _Mode.DETECT:
            self._detect += data
            if self._detect.startswith(MAGIC_PREFIX):
                self._mode = _Mode.BINARY
            elif MAGIC_PREFIX.startswith(self._detect):
                return  # too short to tell yet
            else:
                self._mode = _Mode.ARMOR
                self._armor = ArmorDecoder()
            data, self._detect = self._detect, bytearray()
        if self._armor is not None:
            data = self._armor.update(data)
        self._binary(data, sink, scratch)

    def feed(self, data: Buffer, sink: Sink, *, scratch: bytearray | None = None) -> None:
        """Pass authenticated plaintext to ``sink``; raise at once on any failure.

        Each buffer given to ``sink`` is valid only until it returns, except
        views of ``scratch`` (given one of at least
        ``feed_scratch_size(len(data))`` bytes), which stay valid until the
        caller reuses it.
        """
        _check_bytes(data)
        self._check_usable()
        try:
            self._route(data, sink, scratch)
        except AgeError:
            self._failed = True
            raise

    def update(self, data: Buffer) -> bytes:
        """Return the plaintext of every chunk that has authenticated so far."""
        _check_bytes(data)
        self._check_usable()
        out = bytearray()
        try:
            self._route(data, out.extend)
        except AgeError as err:
            if not out:
                self._failed = True
                raise
            self._deferred = err
        return bytes(out)

    def finalize(self) -> bytes:
        """Return the last plaintext; raise if the file is truncated or malformed."""
        self._check_usable()
        out = bytearray()
        try:
            self._finish(out.extend)
        except AgeError:
            self._failed = True
            raise
        self._finalized = True
        return bytes(out)

    def _finish(self, sink: Sink) -> None:
        if self._mode is _Mode.DETECT:
            self._mode = _Mode.BINARY
            data, self._detect = self._detect, bytearray()
            self._binary(data, sink)
        if self._armor is not None:
            self._binary(self._armor.finalize(), sink)
        if self._stream is None:
            assert self._parser is not None
            self._parser.finish()
            raise AssertionError("unreachable: finish() always raises")
        sink(self._stream.finalize())
