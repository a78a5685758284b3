"""Signed statements: the only source of trust-relevant state (DESIGN.md trust model).

Every change a client must rely on (an enrolment, a key change, a role, a
suspension, a case's creation, a member added or removed, a new key epoch,
an envelope) is a *statement*: a small canonical JSON object (RFC 8785)
signed with Ed25519 by the participant(s) entitled to make it. The server
stores statements verbatim and carries each one in its audit entry; clients
and the verifier replay them (``exchange.crypto.chains``) and never take a
server listing of keys, members or epochs at its word.

Wire form (the bytes stored and logged; ``JCS`` of)::

    {"format": "exchange-signed-statement/v1",
     "statement": {"v": 1, "type": ..., "chain": "directory" | "case:<id>",
                   "seq": n, "prev": "<hex sha256 of the previous statement>" | null,
                   "issuer": "<participant id>", "issued_at": "<RFC 3339 UTC>",
                   "origin": "<log origin>", "body": {...}},
     "signatures": [{"by": "<participant id>", "key": "<b64 ed25519>", "sig": "<b64>"}]}

Each signature is over ``"exchange-statement/v1\\n" || JCS(statement)``: the
label keeps a statement signature from ever verifying as a manifest, request
or checkpoint signature, and signing only the statement (not the list of
signatures) lets several parties sign the same bytes independently. A
statement's identity, used by ``prev`` to chain it, is the SHA-256 of
``JCS(statement)``. ``origin`` binds it to one log, so a statement cannot be
replayed on another server.

This module checks the *format* and the signatures' arithmetic; who may
sign what is the business of ``exchange.crypto.chains``.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import re
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import nacl.exceptions
import nacl.signing

from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.crypto.jcs import CanonicalizationError, canonicalize
from exchange.crypto.keys import BundleError, loads_strict, validate_participant_id
from exchange.errors import CryptoError

__all__ = [
    "DIRECTORY_CHAIN",
    "SIGNED_FORMAT",
    "STATEMENT_TYPES",
    "Signature",
    "SignedStatement",
    "Statement",
    "StatementError",
    "case_chain",
    "issued_at",
    "make_signature",
    "parse_signed_statement",
    "sign_statement",
]

SIGNED_FORMAT = "exchange-signed-statement/v1"
STATEMENT_VERSION = 1
SIGNATURE_LABEL = b"exchange-statement/v1\n"
DIRECTORY_CHAIN = "directory"
CASE_CHAIN_PREFIX = "case:"
MAX_STATEMENT_BYTES = 40 * 1024  # base64 in an audit entry (65535 B) with room for the rest
MAX_SIGNATURES = 16
SIGNATURE_SIZE = 64
KEY_SIZE = 32

DIRECTORY_TYPES = frozenset({
    "participant.enrol", "participant.key_change", "participant.suspend",
    "participant.reinstate", "participant.role", "admin.set", "server.url",
})
CASE_TYPES = frozenset({
    "case.create", "case.member_add", "case.member_remove", "case.epoch_rotate",
    "case.envelope_add", "case.policy",
})
STATEMENT_TYPES = DIRECTORY_TYPES | CASE_TYPES

_STATEMENT_KEYS = frozenset({"v", "type", "chain", "seq", "prev", "issuer", "issued_at",
                             "origin", "body"})
_SIGNED_KEYS = frozenset({"format", "statement", "signatures"})
_SIGNATURE_KEYS = frozenset({"by", "key", "sig"})
_HEX64 = re.compile(r"[0-9a-f]{64}")
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_CASE_ID = re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?")
_ORIGIN = re.compile(r"[\x21-\x7e]{1,255}")


class StatementError(CryptoError, ValueError):
    """A statement is malformed, or one of its signatures does not verify."""

    problem_type = "statement-invalid"


def case_chain(case_id: str) -> str:
    """Return the chain name of case ``case_id``."""
    if not _CASE_ID.fullmatch(case_id):
        raise StatementError(f"case id {case_id[:70]!r} is not a valid case id")
    return CASE_CHAIN_PREFIX + case_id


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class Statement:
    """One statement, validated on construction (its body is checked by the chain rules)."""

    type: str
    chain: str
    seq: int
    prev: str | None
    issuer: str
    issued_at: str
    origin: str
    body: Mapping[str, Any]
    canonical: bytes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.type not in STATEMENT_TYPES:
            raise StatementError(f"unknown statement type {str(self.type)[:60]!r}")
        if self.chain == DIRECTORY_CHAIN:
            if self.type not in DIRECTORY_TYPES:
                raise StatementError(f"a {self.type} statement cannot stand in the directory")
        elif isinstance(self.chain, str) and self.chain.startswith(CASE_CHAIN_PREFIX):
            case_chain(self.chain[len(CASE_CHAIN_PREFIX):])
            if self.type not in CASE_TYPES:
                raise StatementError(f"a {self.type} statement cannot stand in a case chain")
        else:
            raise StatementError(f"chain {str(self.chain)[:70]!r} is neither 'directory' "
                                 "nor 'case:<id>'")
        if isinstance(self.seq, bool) or not isinstance(self.seq, int) or not (
                0 <= self.seq < 2**53):
            raise StatementError("seq must be a non-negative integer")
        if self.seq == 0:
            if self.prev is not None:
                raise StatementError("the first statement of a chain has prev null")
        elif not isinstance(self.prev, str) or not _HEX64.fullmatch(self.prev):
            raise StatementError("prev must be the lowercase hex SHA-256 of the previous "
                                 "statement")
        try:
            validate_participant_id(self.issuer, what="issuer")
        except BundleError as err:
            raise StatementError(str(err)) from None
        if not isinstance(self.issued_at, str) or not _TIME.fullmatch(self.issued_at):
            raise StatementError("issued_at must be RFC 3339 UTC (YYYY-MM-DDTHH:MM:SSZ)")
        if not isinstance(self.origin, str) or not _ORIGIN.fullmatch(self.origin):
            raise StatementError("origin must be a log origin (printable ASCII, no spaces)")
        if not isinstance(self.body, Mapping):
            raise StatementError("body must be a JSON object")
        try:
            canonical = canonicalize(self.to_json())
        except CanonicalizationError as err:
            raise StatementError(f"the statement cannot be canonicalized: {err}") from None
        object.__setattr__(self, "canonical", canonical)

    @property
    def case_id(self) -> str | None:
        """The case of a case chain statement (None for the directory)."""
        if self.chain.startswith(CASE_CHAIN_PREFIX):
            return self.chain[len(CASE_CHAIN_PREFIX):]
        return None

    @property
    def hash(self) -> str:
        """Lowercase hex SHA-256 of the canonical statement: what ``prev`` names."""
        return hashlib.sha256(self.canonical).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object form."""
        return {"v": STATEMENT_VERSION, "type": self.type, "chain": self.chain,
                "seq": self.seq, "prev": self.prev, "issuer": self.issuer,
                "issued_at": self.issued_at, "origin": self.origin, "body": dict(self.body)}

    def signed_message(self) -> bytes:
        """Return the bytes every signature of this statement covers."""
        return SIGNATURE_LABEL + self.canonical


@dataclass(frozen=True, slots=True)
class Signature:
    """One signature: who signed (``by``), with which Ed25519 public key, and the signature."""

    by: str
    key: bytes
    sig: bytes

    def to_json(self) -> dict[str, str]:
        """Return the JSON object form."""
        return {"by": self.by, "key": _b64(self.key), "sig": _b64(self.sig)}


@dataclass(frozen=True, slots=True)
class SignedStatement:
    """A statement with its signatures; every signature verified on construction.

    A valid signature says only that the holder of ``key`` signed; whether
    that key belongs to ``by`` and whether ``by`` may make the statement is
    decided by the chain rules against the replayed directory.
    """

    statement: Statement
    signatures: tuple[Signature, ...]

    def __post_init__(self) -> None:
        if not self.signatures:
            raise StatementError("a statement needs at least one signature")
        if len(self.signatures) > MAX_SIGNATURES:
            raise StatementError(f"more than {MAX_SIGNATURES} signatures")
        message = self.statement.signed_message()
        seen = set()
        for signature in self.signatures:
            if signature.key in seen:
                raise StatementError("the same key signs twice")
            seen.add(signature.key)
            try:
                nacl.signing.VerifyKey(signature.key).verify(message, signature.sig)
            except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError,
                    nacl.exceptions.TypeError):
                raise StatementError(
                    f"the signature by {signature.by!r} on the {self.statement.type} "
                    "statement does not verify") from None

    @property
    def hash(self) -> str:
        """The statement's identity (hash of the statement, not of the signatures)."""
        return self.statement.hash

    def signed_by_key(self, key: bytes) -> bool:
        """True when one of the (verified) signatures was made with ``key``."""
        return any(s.key == key for s in self.signatures)

    def signer_keys(self, by: str) -> tuple[bytes, ...]:
        """Return the keys of the signatures that claim to be by participant ``by``."""
        return tuple(s.key for s in self.signatures if s.by == by)

    def with_signature(self, signature: Signature) -> SignedStatement:
        """Return a copy with one more signature (e.g. a second administrator's)."""
        return SignedStatement(self.statement, (*self.signatures, signature))

    def encode(self) -> bytes:
        """Return the canonical bytes stored by the server and carried in the audit entry."""
        return canonicalize({"format": SIGNED_FORMAT, "statement": self.statement.to_json(),
                             "signatures": [s.to_json() for s in self.signatures]})


def issued_at(now: float) -> str:
    """Return ``now`` (seconds since the epoch) in the ``issued_at`` form (RFC 3339 UTC)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(now)))


def make_signature(statement: Statement, signing_key: nacl.signing.SigningKey,
                   by: str) -> Signature:
    """Return ``by``'s signature of ``statement`` with ``signing_key``."""
    sig = signing_key.sign(statement.signed_message()).signature
    return Signature(by=by, key=bytes(signing_key.verify_key), sig=sig)


def sign_statement(statement: Statement,
                   signers: Sequence[tuple[str, nacl.signing.SigningKey]]) -> SignedStatement:
    """Return ``statement`` signed by each (participant id, signing key) of ``signers``."""
    return SignedStatement(statement, tuple(make_signature(statement, key, by)
                                            for by, key in signers))


def _signature(obj: object) -> Signature:
    if not isinstance(obj, dict) or set(obj) != _SIGNATURE_KEYS:
        raise StatementError(f"a signature has exactly the members {sorted(_SIGNATURE_KEYS)}")
    try:
        by = validate_participant_id(obj["by"], what="signature 'by'")
        key = b64decode_canonical(obj["key"])
        sig = b64decode_canonical(obj["sig"])
    except (BundleError, StrictDecodeError) as err:
        raise StatementError(f"a signature is malformed: {err}") from None
    if len(key) != KEY_SIZE or len(sig) != SIGNATURE_SIZE:
        raise StatementError("a signature has a 32-byte key and a 64-byte signature")
    return Signature(by=by, key=key, sig=sig)


_PARSED_LOCK = threading.Lock()
#: Statements parsed and verified lately, by their exact bytes (see below).
_PARSED: collections.OrderedDict[bytes, SignedStatement] = collections.OrderedDict()
_PARSED_MAX = 4096


def parse_signed_statement(data: bytes) -> SignedStatement:
    """Parse and check the wire form; the bytes must be exactly canonical.

    Refusing non-canonical input means that the bytes logged, stored and
    hashed are the only spelling of a statement: nobody can present two
    encodings of one statement.

    Why a memo: trust state is rebuilt by replaying whole chains (the server
    on every statement it accepts, the client and agent on every command),
    and each replay verified every signature again, which grew with the
    directory and held the server's event loop for tens of milliseconds
    (issue 17). The result is a pure function of the bytes and a
    :class:`SignedStatement` is immutable, so the last few thousand accepted
    ones are kept by their exact bytes; a refused input is never kept.
    """
    key = bytes(data)
    with _PARSED_LOCK:
        known = _PARSED.get(key)
        if known is not None:
            _PARSED.move_to_end(key)
            return known
    signed = _parse_signed_statement(key)
    with _PARSED_LOCK:
        _PARSED[key] = signed
        if len(_PARSED) > _PARSED_MAX:
            _PARSED.popitem(last=False)
    return signed


def _parse_signed_statement(data: bytes) -> SignedStatement:
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(f"a statement is at most {MAX_STATEMENT_BYTES} bytes")
    try:
        doc = loads_strict(data, what="statement", max_bytes=MAX_STATEMENT_BYTES)
    except BundleError as err:
        raise StatementError(str(err)) from None
    if not isinstance(doc, dict) or set(doc) != _SIGNED_KEYS or doc["format"] != SIGNED_FORMAT:
        raise StatementError(f"not an {SIGNED_FORMAT} document")
    raw = doc["statement"]
    if not isinstance(raw, dict) or set(raw) != _STATEMENT_KEYS:
        raise StatementError(f"a statement has exactly the members {sorted(_STATEMENT_KEYS)}")
    if raw["v"] != STATEMENT_VERSION:
        raise StatementError(f"statement version {str(raw['v'])[:10]!r} is not supported")
    statement = Statement(type=raw["type"], chain=raw["chain"], seq=raw["seq"],
                          prev=raw["prev"], issuer=raw["issuer"], issued_at=raw["issued_at"],
                          origin=raw["origin"], body=raw["body"])
    signatures = doc["signatures"]
    if not isinstance(signatures, list):
        raise StatementError("signatures must be a list")
    signed = SignedStatement(statement, tuple(_signature(s) for s in signatures))
    if signed.encode() != bytes(data):
        raise StatementError("the statement is not in canonical form (RFC 8785)")
    return signed
