"""Log-key rotation: a new checkpoint key, introduced by a note both keys signed.

``exchange server log-key rotate`` runs with the server stopped (offline), so
that no process signs a checkpoint with the old key after the transition and
the transition's tree is the whole log. It:

1. generates the new key (same name: the log's origin; another key ID) into a
   new file ``log.key.N`` (``log.key`` and earlier files are never touched);
2. signs the key-transition note (``exchange.audit.checkpoint.sign_transition``):
   the current tree, an extension line naming the new verifier key, signed
   by the old and the new key;
3. appends the server-originated audit entry ``log.key_rotate`` carrying that
   note, at the index equal to the note's tree size;
4. appends a line to ``log-keys.jsonl`` (which key file signs from now on,
   and the note), and makes the note the rollback guard's published checkpoint.

Clients and auditors fetch the transitions (``GET /v1/audit/log-keys``) and
accept a new key only through a note the key they hold signed too.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from pathlib import Path

from exchange.audit.checkpoint import Checkpoint, sign_transition
from exchange.audit.entry import LOG_KEY_ROTATE, UNKNOWN_ACTOR, AuditEntry, DetailValue
from exchange.audit.note import Ed25519Signer
from exchange.errors import ExchangeError
from exchange.fsutil import append_line
from exchange.keyfiles import write_secret_file
from exchange.ops.rollback import record_published
from exchange.storage.metadata import MetadataStore

__all__ = ["KEYS_FILE", "ROTATED_KEY_FILE", "Rotation", "RotationError", "current_key_file",
           "read_rotations", "rotate_log_key"]

KEYS_FILE = "log-keys.jsonl"
FIRST_KEY_FILE = "log.key"
#: The files rotated keys are written to: log.key.2, log.key.3, ...
ROTATED_KEY_FILE = re.compile(r"log\.key\.[1-9][0-9]{0,5}")
_MAX_FILE_BYTES = 4 * 1024 * 1024


class RotationError(ExchangeError):
    """The log-key history in the data directory cannot be used."""

    problem_type = "log-key-rotation"


@dataclass(frozen=True, slots=True)
class Rotation:
    """One key transition: the entry that logs it, the key file and the dual-signed note."""

    index: int
    key_file: str
    old_key: str
    new_key: str
    note: bytes

    def to_json(self) -> dict[str, object]:
        """The line of ``log-keys.jsonl`` (and the answer of ``GET /v1/audit/log-keys``)."""
        return {"index": self.index, "key_file": self.key_file, "old_key": self.old_key,
                "new_key": self.new_key,
                "transition": base64.b64encode(self.note).decode("ascii")}


def read_rotations(data_dir: Path) -> list[Rotation]:
    """Return the data directory's key transitions, oldest first (none before a rotation)."""
    try:
        with open(Path(data_dir) / KEYS_FILE, "rb") as handle:
            data = handle.read(_MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    if len(data) > _MAX_FILE_BYTES:
        raise RotationError(f"{KEYS_FILE} is larger than {_MAX_FILE_BYTES} bytes")
    out: list[Rotation] = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            obj = json.loads(line)
            rotation = Rotation(int(obj["index"]), str(obj["key_file"]), str(obj["old_key"]),
                                str(obj["new_key"]),
                                base64.b64decode(obj["transition"], validate=True))
        except (ValueError, KeyError, TypeError) as err:
            raise RotationError(f"{KEYS_FILE} line {number} is malformed: {err}") from None
        if ROTATED_KEY_FILE.fullmatch(rotation.key_file) is None:
            raise RotationError(f"{KEYS_FILE} line {number} names an invalid key file "
                                f"{rotation.key_file[:60]!r}")
        out.append(rotation)
    return out


def current_key_file(data_dir: Path) -> Path:
    """Return the file of the key that signs checkpoints now (``log.key`` until a rotation)."""
    rotations = read_rotations(data_dir)
    return Path(data_dir) / (rotations[-1].key_file if rotations else FIRST_KEY_FILE)


async def rotate_log_key(data_dir: Path, store: MetadataStore, old: Ed25519Signer,
                         new: Ed25519Signer, new_key_text: str) -> Rotation:
    """Rotate the log key (server stopped); return the transition recorded.

    ``store`` must be open with ``new`` as its checkpoint signer: the first
    checkpoint after the transition (covering the ``log.key_rotate`` entry)
    is published here, signed by the new key only. ``new_key_text`` is the
    new private key in the signed-note format, written to a new file.
    """
    data_dir = Path(data_dir)
    key_file = f"{FIRST_KEY_FILE}.{len(read_rotations(data_dir)) + 2}"
    try:
        write_secret_file(data_dir / key_file, (new_key_text + "\n").encode("ascii"))
    except FileExistsError:
        raise RotationError(f"{key_file} exists already (an interrupted rotation?); move it "
                            "aside after checking that no line of log-keys.jsonl names it"
                            ) from None
    size, root = await store.root_hash()
    note = sign_transition(Checkpoint(origin=old.name, size=size, root=root), old, new,
                           new_vkey=new.verifier().vkey())
    rotation = Rotation(size, key_file, old.verifier().vkey(), new.verifier().vkey(), note)
    details: dict[str, DetailValue] = {
        "old_key": rotation.old_key, "new_key": rotation.new_key,
        "transition": base64.b64encode(note).decode("ascii")}

    def make(index: int, prev: bytes, time: str) -> AuditEntry:
        if index != size:
            raise RotationError("the log grew during the rotation: stop the server first")
        return AuditEntry(index=index, time=time, actor=UNKNOWN_ACTOR, actor_key="",
                          action=LOG_KEY_ROTATE, case=None, object=None, outcome="ok",
                          reason=None, request=None, details=details, prev=prev)

    async with store.transaction("log_key_rotate") as tx:
        await tx.append_audit(make)
    append_line(data_dir / KEYS_FILE,
                (json.dumps(rotation.to_json(), sort_keys=True) + "\n").encode("utf-8"))
    # The first checkpoint under the new key; the rollback guard follows it.
    checkpoint = await store.publish_checkpoint()
    record_published(data_dir, checkpoint, new.verifier(), replace=True)
    return rotation
