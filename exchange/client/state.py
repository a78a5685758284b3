"""The client's local state directory: pins, last verified checkpoint, resume records.

Layout (one directory per server and participant, see ``ClientConfig.state_dir``)::

    log.json           {"log_key": vkey}: the verifier key pinned on first use
    checkpoint         the last verified signed checkpoint note, verbatim
    pins.json          {participant: {fingerprint, key_index, ...}}
    uploads/<id>.json  resume records of unfinished uploads (no secret in clear)
    pulls/<id>.json    per-destination ledgers of evidence already pulled

Every write is atomic (temporary file, fsync, rename), so a crash leaves the
old or the new state, never a torn file. Nothing here is secret in clear:
upload records hold their stream key only age-encrypted to the participant.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from exchange.client.errors import ClientError
from exchange.fsutil import write_atomic

__all__ = ["LocalState", "StateError"]

_MAX_STATE_BYTES = 16 * 1024 * 1024


class StateError(ClientError):
    """A state file is unreadable or malformed."""


class LocalState:
    """Reads and writes the files of one state directory (created 0700 on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalState({str(self.root)!r})"

    def _ensure(self, directory: Path) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def read_bytes(self, name: str) -> bytes | None:
        """Return the contents of state file ``name``, or None when it does not exist."""
        path = self.root / name
        try:
            with path.open("rb") as handle:
                data = handle.read(_MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StateError(f"cannot read state file {str(path)!r}: "
                             f"{(err.strerror or 'error').lower()}") from None
        if len(data) > _MAX_STATE_BYTES:
            raise StateError(f"state file {str(path)!r} is larger than 16 MiB")
        return data

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace state file ``name`` atomically and durably (mode 0600)."""
        path = self.root / name
        self._ensure(path.parent)
        write_atomic(path, data, mode=0o600)

    def read_json(self, name: str) -> Any:
        """Return the JSON in state file ``name``, or None when it does not exist."""
        data = self.read_bytes(name)
        if data is None:
            return None
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise StateError(
                f"state file {str(self.root / name)!r} is not valid JSON",
                "move it aside and rerun; it will be rebuilt",
            ) from None

    def write_json(self, name: str, value: Any) -> None:
        """Replace state file ``name`` with ``value`` as JSON."""
        self.write_bytes(name, (json.dumps(value, indent=1, sort_keys=True) + "\n").encode())

    def remove(self, name: str) -> None:
        """Remove state file ``name`` if it exists."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / name)

    @staticmethod
    def key(*parts: str) -> str:
        """Return a short file-name-safe key for the given identifying strings."""
        joined = "\x00".join(parts).encode("utf-8", "surrogateescape")
        return hashlib.sha256(joined).hexdigest()[:32]
