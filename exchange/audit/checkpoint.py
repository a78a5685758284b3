"""C2SP tlog-checkpoint v1.0.0: the signed tree head body and its verification.

Body: origin line, decimal tree size (uint64, no leading zeros), standard
base64 of the 32-byte RFC 6962 root, then optional non-empty extension lines;
every line ends in a newline. The note is signed per ``exchange.audit.note``.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from exchange.audit.note import (
    Ed25519Verifier,
    Note,
    NoteError,
    Signer,
    Verifier,
    open_note,
    parse_verifier_key,
    sign_note,
)
from exchange.audit.tree import HASH_SIZE, MAX_TREE_SIZE, empty_root
from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.errors import AuditError


class CheckpointError(AuditError, ValueError):
    """A checkpoint body breaks a tlog-checkpoint rule, or is not the one expected."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A parsed checkpoint body; validated on construction."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not isinstance(self.root, bytes):
            raise TypeError("origin must be str and root bytes")
        if not self.origin or "\n" in self.origin:
            raise CheckpointError(f"invalid origin {self.origin[:60]!r}")
        if isinstance(self.size, bool) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size {self.size!r} is not a uint64")
        if len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash is {len(self.root)} bytes, want {HASH_SIZE}")
        if self.size == 0 and not hmac.compare_digest(self.root, empty_root()):
            raise CheckpointError("a checkpoint of size 0 must carry the empty-tree root")
        for line in self.extensions:
            if not line or "\n" in line:
                raise CheckpointError(f"invalid extension line {line[:60]!r}")

    def text(self) -> str:
        """Return the body as note text (ends in a newline)."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        lines.extend(self.extensions)
        return "".join(line + "\n" for line in lines)

    def encode(self) -> bytes:
        """Return the UTF-8 body bytes (what the log signs)."""
        return self.text().encode("utf-8")


def parse_checkpoint(body: str | bytes) -> Checkpoint:
    """Return the checkpoint in a note body, enforcing every tlog-checkpoint rule.

    Rejects fewer than three lines, an empty origin, a size with leading
    zeros, a sign or beyond uint64, a root that is not canonical base64 of 32
    bytes, an empty extension line, and a body not ending in a newline.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint is not valid UTF-8") from None
    if not body.endswith("\n"):
        raise CheckpointError("checkpoint body does not end in a newline")
    lines = body[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(f"checkpoint has {len(lines)} lines, want at least 3")
    origin, size_text, root_text, *extensions = lines
    if not origin:
        raise CheckpointError("checkpoint origin is empty")
    if not size_text.isascii() or not size_text.isdigit() or (
        size_text != "0" and size_text.startswith("0")
    ):
        raise CheckpointError(f"tree size {size_text[:30]!r} is not canonical decimal")
    # Length first: int() refuses (with a plain ValueError) beyond 4300 digits.
    if len(size_text) > len(str(MAX_TREE_SIZE)) or int(size_text) > MAX_TREE_SIZE:
        raise CheckpointError(f"tree size {size_text[:30]!r} does not fit a uint64")
    size = int(size_text)
    try:
        root = b64decode_canonical(root_text)
    except StrictDecodeError as err:
        raise CheckpointError(f"root hash {root_text[:60]!r} is {err}") from None
    return Checkpoint(origin=origin, size=size, root=root, extensions=tuple(extensions))


def sign_checkpoint(
    checkpoint: Checkpoint, signer: Signer, *, cosigners: Sequence[Signer] = ()
) -> bytes:
    """Return the signed checkpoint note (log signature first, then any cosignatures)."""
    return sign_note(checkpoint.text(), [signer, *cosigners])


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    """A verified checkpoint together with its note (for the signature lists) and raw bytes."""

    checkpoint: Checkpoint
    note: Note
    raw: bytes


def open_checkpoint(
    data: bytes,
    log_key: Verifier | str,
    *,
    origin: str | None = None,
    witnesses: Sequence[Verifier | str] = (),
    min_witnesses: int = 0,
) -> SignedCheckpoint:
    """Return the checkpoint in a signed note after every client-side check.

    The note must verify under ``log_key`` (a trusted witness key alone is not
    enough); the origin must equal ``origin`` (default: the log key name, as
    tlog-checkpoint recommends); at least ``min_witnesses`` of ``witnesses``
    (type 0x01 or 0x04 keys) must have signed. Unknown signatures are ignored.
    """
    log = parse_verifier_key(log_key) if isinstance(log_key, str) else log_key
    others = [parse_verifier_key(w) if isinstance(w, str) else w for w in witnesses]
    note = open_note(data, [log, *others])
    verified = {(sig.name, sig.key_id) for sig in note.verified}
    if (log.name, log.key_id) not in verified:
        raise CheckpointError(f"checkpoint is not signed by the log key {log.name!r}")
    checkpoint = parse_checkpoint(note.text)
    want = log.name if origin is None else origin
    if checkpoint.origin != want:
        raise CheckpointError(
            f"checkpoint origin {checkpoint.origin[:60]!r}, want {want[:60]!r}"
        )
    cosigned = sum(1 for w in others if (w.name, w.key_id) in verified)
    if cosigned < min_witnesses:
        raise CheckpointError(f"checkpoint has {cosigned} witness signatures, want {min_witnesses}")
    return SignedCheckpoint(checkpoint=checkpoint, note=note, raw=data)


def verify_checkpoint(
    data: bytes, log_key: Verifier | str, *, origin: str | None = None
) -> Checkpoint:
    """Return the checkpoint after checking its signature and origin (see open_checkpoint)."""
    return open_checkpoint(data, log_key, origin=origin).checkpoint


#: The checkpoint extension line that introduces a new log key (``PREFIX <vkey>``).
KEY_TRANSITION_PREFIX = "exchange-log-key "


def sign_transition(checkpoint: Checkpoint, old: Signer, new: Signer, *,
                    new_vkey: str) -> bytes:
    """Return the key-transition note: ``checkpoint`` naming ``new_vkey``, signed by both keys.

    A C2SP signed note may carry several signatures; here the old key (what
    every participant pinned) vouches for the new one, and the new key proves
    it is held. Both keys have the log's name (the origin), so they differ by
    key ID only.
    """
    if old.name != new.name or old.name != checkpoint.origin:
        raise CheckpointError("both log keys must carry the log's origin as their name")
    named = Checkpoint(origin=checkpoint.origin, size=checkpoint.size, root=checkpoint.root,
                       extensions=(*checkpoint.extensions, KEY_TRANSITION_PREFIX + new_vkey))
    return sign_note(named.text(), [old, new])


def open_transition(data: bytes, current: Verifier) -> tuple[Checkpoint, Ed25519Verifier]:
    """Return the checkpoint of a key-transition note and the new key it introduces.

    The note must name exactly one new key, differ from ``current`` and be
    signed by both ``current`` and the new key; anything else is a
    :class:`CheckpointError` (a key nobody holding the old key vouched for).
    """
    try:
        named = [line for line in parse_checkpoint(open_note(data, [current]).text).extensions
                 if line.startswith(KEY_TRANSITION_PREFIX)]
    except (NoteError, ValueError) as err:
        raise CheckpointError(f"the key transition does not verify under the current "
                              f"log key: {err}") from None
    if len(named) != 1:
        raise CheckpointError("a key transition must name exactly one new log key")
    try:
        new = parse_verifier_key(named[0][len(KEY_TRANSITION_PREFIX):])
    except NoteError as err:
        raise CheckpointError(f"the key transition names an invalid log key: {err}") from None
    if not isinstance(new, Ed25519Verifier):
        raise CheckpointError("a log key must be an Ed25519 (type 0x01) key")
    if (new.name, new.key_id) == (current.name, current.key_id):
        raise CheckpointError("a key transition must introduce another key")
    try:
        signed = open_checkpoint(data, current)
        both = {(s.name, s.key_id) for s in open_note(data, [current, new]).verified}
    except NoteError as err:
        raise CheckpointError(f"the key transition does not verify: {err}") from None
    if (new.name, new.key_id) not in both:
        raise CheckpointError("the key transition is not signed by the new log key")
    return signed.checkpoint, new



def key_chain(first: Ed25519Verifier, rotations: Sequence[bytes]) -> list[Ed25519Verifier]:
    """Return the log keys, oldest first: ``first``, then each transition's new key."""
    keys = [first]
    for note in rotations:
        keys.append(open_transition(note, keys[-1])[1])
    return keys


def open_under_any(data: bytes, keys: Sequence[Verifier], *,
                   origin: str | None = None) -> Checkpoint:
    """Return a checkpoint signed by any of the log's ``keys`` (one kept from before a rotation).

    The newest key is tried first; the first error is raised if none verifies.
    """
    error: CheckpointError | NoteError | None = None
    for key in reversed(keys):
        try:
            return open_checkpoint(data, key, origin=origin).checkpoint
        except (CheckpointError, NoteError) as err:
            error = error or err
    raise error or CheckpointError("no log key to verify the checkpoint with")
