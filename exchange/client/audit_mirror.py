"""A local mirror of an exchange audit log in the C2SP tlog-tiles layout (static read API).

Layout under the mirror root, readable by any tlog-tiles client::

    checkpoint                     the last verified signed checkpoint note
    tile/<L>/<N>[.p/<W>]           hash tiles (C2SP tlog-tiles v0.1.0)
    tile/entries/<N>[.p/<W>]       entry bundles
    log-key                        the verifier key the mirror was verified with
    .staging/tile/...              what a run in progress fetched, not yet verified
    evidence/<UTC time>/           what a failed run saw (checkpoints, proof, findings)

Only verified data reaches ``tile/`` and ``checkpoint``: a run stages what it
fetches and :meth:`AuditMirror.commit` moves it into place, checkpoint last,
so the mirror is always a consistent, verified log at its checkpoint's size.
The mirror names who touched which case, so it is private (0700/0600).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from exchange.audit.tiles import TILE_WIDTH, TileId, parse_bundle
from exchange.client.errors import ClientError
from exchange.fsutil import fsync_directory, write_atomic

__all__ = ["AUDIT_SUBDIR", "AuditMirror", "MirrorError", "dump_json"]

#: A participant's mirror lives in this subdirectory of its state directory (CLI, UI, library).
AUDIT_SUBDIR = "audit"
CHECKPOINT_FILE = "checkpoint"
#: The log-key transition notes (JSON list of base64), when the log's key was rotated.
ROTATIONS_FILE = "log-keys.json"
LOG_KEY_FILE = "log-key"
STAGING_DIR = ".staging"
EVIDENCE_DIR = "evidence"
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class MirrorError(ClientError):
    """The local mirror is missing a file it should have, or is not usable."""

    problem_type = "audit-mirror"


class AuditMirror:
    """The mirror rooted at ``root`` (created on first use)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"AuditMirror({str(self.root)!r})"

    @property
    def staging(self) -> Path:
        """Where a run's fetched files wait until they verified."""
        return self.root / STAGING_DIR

    def checkpoint(self) -> bytes | None:
        """Return the remembered (last verified) checkpoint note, or None for a new mirror."""
        try:
            return (self.root / CHECKPOINT_FILE).read_bytes()
        except FileNotFoundError:
            return None

    def rotations(self) -> list[bytes]:
        """Return the log-key transition notes the mirror was verified with (oldest first)."""
        try:
            data = json.loads((self.root / ROTATIONS_FILE).read_bytes())
            return [base64.b64decode(item, validate=True) for item in data]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as err:
            raise MirrorError(f"{ROTATIONS_FILE} in {str(self.root)!r} is malformed: {err}"
                              ) from None

    def log_key(self) -> str | None:
        """Return the verifier key the mirror was verified with, or None for a new mirror."""
        try:
            return (self.root / LOG_KEY_FILE).read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)

    def stage(self, tile: TileId, data: bytes) -> None:
        """Keep a fetched tile or bundle in the staging area (not durable, not trusted)."""
        path = self.staging / tile.path()  # computed here from numbers, never the server's
        self._mkdir(path.parent)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, _FILE_MODE)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)

    def is_staged(self, tile: TileId) -> bool:
        """Whether this run fetched ``tile``."""
        return (self.staging / tile.path()).is_file()

    def read(self, tile: TileId, *, committed: bool = False) -> bytes:
        """Return a tile or bundle: the staged copy first (unless ``committed``), then the mirror.

        Raises :class:`MirrorError` when neither has it.
        """
        places = [self.root] if committed else [self.staging, self.root]
        for base in places:
            with contextlib.suppress(FileNotFoundError):
                return (base / tile.path()).read_bytes()
        raise MirrorError(f"the mirror has no {tile.path()} (run 'exchange audit verify')")

    def entries(self, size: int, *, committed: bool = False) -> Iterator[bytes]:
        """Yield the first ``size`` entries, bundle by bundle (flat memory).

        Stops early, without error, at the first missing or malformed bundle:
        the verifier then reports the log as truncated at that point.
        """
        for index in range(-(-size // TILE_WIDTH)):
            width = min(TILE_WIDTH, size - index * TILE_WIDTH)
            try:
                yield from parse_bundle(self.read(TileId(None, index, width),
                                                  committed=committed), width)
            except (MirrorError, ValueError):
                return

    def discard_staging(self) -> None:
        """Forget what this run fetched."""
        shutil.rmtree(self.staging, ignore_errors=True)

    def commit(self, checkpoint: bytes, log_key: str, rotations: Sequence[bytes] = ()) -> int:
        """Move every staged file into place, drop superseded partial tiles, then the checkpoint.

        The checkpoint is written last (atomically, fsynced), so a crash leaves
        the previous checkpoint in charge and the next run fetches again from
        its size. Returns how many files were committed.
        """
        self._mkdir(self.root)
        moved = 0
        touched: set[Path] = set()
        if self.staging.is_dir():
            for source in sorted(p for p in self.staging.rglob("*") if p.is_file()):
                relative = source.relative_to(self.staging)
                target = self.root / relative
                self._mkdir(target.parent)
                with open(source, "rb") as handle:
                    os.fsync(handle.fileno())
                os.replace(source, target)
                touched.add(target.parent)
                moved += 1
                self._drop_superseded(relative)
        for directory in touched:
            fsync_directory(directory)
        self.discard_staging()
        write_atomic(self.root / LOG_KEY_FILE, (log_key + "\n").encode("utf-8"), mode=_FILE_MODE)
        if rotations:
            write_atomic(self.root / ROTATIONS_FILE, json.dumps(
                [base64.b64encode(n).decode("ascii") for n in rotations]).encode("utf-8"),
                mode=_FILE_MODE)
        write_atomic(self.root / CHECKPOINT_FILE, checkpoint, mode=_FILE_MODE)
        return moved

    def _drop_superseded(self, relative: Path) -> None:
        """Remove older partial versions of the tile at ``relative`` (tile/.../N[.p/W])."""
        parts = relative.parts
        if len(parts) >= 2 and parts[-2].endswith(".p"):
            partial_dir = self.root.joinpath(*parts[:-1])
            for other in partial_dir.iterdir():
                if other.name != parts[-1]:
                    other.unlink(missing_ok=True)
        else:
            shutil.rmtree(self.root / relative.parent / (relative.name + ".p"),
                          ignore_errors=True)

    def save_evidence(self, files: Mapping[str, bytes], *, keep_staged: bool = True) -> Path:
        """Write ``files`` (name -> bytes) and the staged downloads into a new evidence directory.

        Returns the directory; what the server served goes to ``served/``.
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        base = self.root / EVIDENCE_DIR
        self._mkdir(base)
        directory = base / stamp
        suffix = 1
        while directory.exists():
            suffix += 1
            directory = base / f"{stamp}-{suffix}"
        self._mkdir(directory)
        for name, data in files.items():
            write_atomic(directory / name, data, mode=_FILE_MODE)
        if keep_staged and self.staging.is_dir():
            os.replace(self.staging, directory / "served")
        return directory


def dump_json(value: object) -> bytes:
    """Return ``value`` as indented UTF-8 JSON with a final newline (evidence files)."""
    return (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
