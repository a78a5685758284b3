"""C2SP tlog-witness v1.0.0 ``add-checkpoint``: request parsing and the decision (sans I/O).

Request body::

    old <size>\\n
    <consistency proof hash, base64>\\n      (at most 63 lines)
    \\n
    <signed checkpoint note>

Checks in the spec's order, each with its status code: a malformed body is
400; an origin no configured log key names is 404; no valid signature from
a trusted log key (or a bad one from a trusted key) is 403; old size larger
than the checkpoint's is 400; old size different from the size the witness
last cosigned for the origin (0 if never) is 409 with that size; a proof
that does not verify, a non-empty proof from 0, equal sizes with another
root, or a size-0 checkpoint whose root is not SHA-256("") is 422. The
stored-state part (409/422 and the update) is :func:`check_extension`, which
the state store runs atomically with its write.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from exchange.audit.checkpoint import Checkpoint, CheckpointError, parse_checkpoint
from exchange.audit.note import (
    Ed25519Verifier,
    NoteError,
    Signature,
    Signer,
    open_note,
)
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency
from exchange.audit.tree import HASH_SIZE, MAX_TREE_SIZE, empty_root
from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.errors import ExchangeError

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_PROOF_LINES",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "Stored",
    "WitnessProtocolError",
    "check_extension",
    "cosign",
    "open_request",
    "parse_request",
]

#: tlog-witness: "at most 63 consistency proof lines".
MAX_PROOF_LINES = 63
#: A checkpoint note of 100 signatures is under 20 KiB; 64 KiB bounds the work per request.
MAX_BODY_BYTES = 64 * 1024
#: tlog-witness: the 409 body is the stored size and a newline, with this media type.
SIZE_CONTENT_TYPE = "text/x.tlog.size"


class WitnessProtocolError(ExchangeError):
    """An add-checkpoint request the witness refuses; ``http_status`` is the spec's code.

    ``stored_size`` is set for 409 (the body the spec requires).
    """

    def __init__(self, status: int, slug: str, message: str, *,
                 stored_size: int | None = None) -> None:
        super().__init__(message)
        self.http_status = status
        self.problem_type = slug
        self.stored_size = stored_size


def _bad(message: str) -> WitnessProtocolError:
    return WitnessProtocolError(400, "bad-request", message)


@dataclass(frozen=True, slots=True)
class AddCheckpoint:
    """A parsed add-checkpoint request: old size, proof hashes and the raw checkpoint note."""

    old: int
    proof: tuple[bytes, ...]
    note: bytes


def _canonical_size(text: str) -> int:
    if (not text or not text.isascii() or not text.isdigit()
            or (text != "0" and text.startswith("0")) or len(text) > len(str(MAX_TREE_SIZE))
            or int(text) > MAX_TREE_SIZE):
        raise _bad(f"old size {text[:30]!r} is not a canonical decimal uint64")
    return int(text)


def parse_request(body: bytes) -> AddCheckpoint:
    """Return the request in ``body``; :class:`WitnessProtocolError` (400) when malformed."""
    if len(body) > MAX_BODY_BYTES:
        raise _bad(f"request body is larger than {MAX_BODY_BYTES} bytes")
    head_end = body.find(b"\n\n")
    if head_end < 0:
        raise _bad("request has no empty line between the proof and the checkpoint")
    try:
        head = body[:head_end].decode("ascii")
    except UnicodeDecodeError:
        raise _bad("request head is not ASCII") from None
    first, *lines = head.split("\n")
    if not first.startswith("old "):
        raise _bad("request does not start with an 'old <size>' line")
    old = _canonical_size(first[len("old "):])
    if len(lines) > MAX_PROOF_LINES:
        raise _bad(f"request has {len(lines)} proof lines, at most {MAX_PROOF_LINES}")
    proof: list[bytes] = []
    for line in lines:
        try:
            digest = b64decode_canonical(line)
        except StrictDecodeError as err:
            raise _bad(f"proof line {line[:60]!r} is {err}") from None
        if len(digest) != HASH_SIZE:
            raise _bad(f"proof hash is {len(digest)} bytes, want {HASH_SIZE}")
        proof.append(digest)
    return AddCheckpoint(old=old, proof=tuple(proof), note=body[head_end + 2:])


def open_request(request: AddCheckpoint,
                 logs: Mapping[str, Sequence[Ed25519Verifier]]) -> Checkpoint:
    """Return the request's checkpoint once a trusted log key for its origin signed it.

    ``logs`` maps each origin to its trusted log keys. Raises 400 (malformed
    body, old > size), 404 (unknown origin), 403 (no valid signature from a
    trusted key, a bad one, or an unreadable signature block) or 422 (size 0 with a root other than
    SHA-256("")).
    """
    split = request.note.rfind(b"\n\n")
    if split < 0:
        raise _bad("the checkpoint note has no empty line before its signatures")
    try:
        text = request.note[: split + 1].decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the checkpoint note is not valid UTF-8") from None
    lines = text.split("\n")
    origin = lines[0]
    keys = logs.get(origin)
    if not keys:
        raise WitnessProtocolError(404, "unknown-log", f"unknown log origin {origin[:80]!r}")
    try:
        open_note(request.note, keys)
    except NoteError as err:
        # A signature block we cannot read carries no valid trusted signature either.
        raise WitnessProtocolError(
            403, "invalid-signature",
            f"no valid signature from a trusted key of {origin[:80]!r}: {err}") from None
    try:
        checkpoint = parse_checkpoint(text)
    except CheckpointError as err:
        if len(lines) > 2 and lines[1] == "0":
            raise WitnessProtocolError(422, "inconsistent-checkpoint", str(err)) from None
        raise _bad(f"malformed checkpoint: {err}") from None
    if request.old > checkpoint.size:
        raise _bad(f"old size {request.old} is larger than the checkpoint size "
                   f"{checkpoint.size}")
    return checkpoint


@dataclass(frozen=True, slots=True)
class Stored:
    """What the witness cosigned last for one origin (size 0 and the empty root if nothing)."""

    size: int
    root: bytes

    @classmethod
    def nothing(cls) -> Stored:
        """Return the state of an origin never cosigned."""
        return cls(size=0, root=empty_root())


def check_extension(stored: Stored, request: AddCheckpoint, checkpoint: Checkpoint) -> None:
    """Raise 409 or 422 unless ``checkpoint`` consistently extends ``stored`` from ``old``.

    Must run atomically with the write of the new state (no rollback).
    """
    if request.old != stored.size:
        raise WitnessProtocolError(
            409, "old-size-mismatch",
            f"old size {request.old} is not the size last cosigned ({stored.size})",
            stored_size=stored.size)
    if checkpoint.size == stored.size and not hmac.compare_digest(checkpoint.root,
                                                                  stored.root):
        raise WitnessProtocolError(
            422, "inconsistent-checkpoint",
            f"a checkpoint of size {stored.size} with another root was cosigned before")
    try:
        verify_consistency(stored.size, checkpoint.size, list(request.proof), stored.root,
                           checkpoint.root)
    except (ProofError, RootMismatch) as err:
        raise WitnessProtocolError(
            422, "inconsistent-checkpoint",
            f"consistency proof from {stored.size} to {checkpoint.size} does not verify: "
            f"{err}") from None


def cosign(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """Return the response body: the witness's cosignature line (with its newline)."""
    data = signer.sign(checkpoint.encode())
    return (Signature(signer.name, signer.key_id, data).line() + "\n").encode("utf-8")
