"""Dropped folders: relative paths of uploaded files, and where the UI stages them.

A folder dropped on the page arrives as files with relative paths
(``seizure-3/phone/sms.db``). The sealed manifest holds one file name per
evidence today, so :func:`manifest_name` is the single place that decides
what goes into the manifest (the base name) and what the UI keeps itself
(the whole relative path, in ``ui-paths.json`` in the client state
directory, shown beside the evidence). When the manifest carries relative
paths, only :func:`manifest_name` and :func:`staged_path` change.

Staging: the browser hands the bytes to this process, which writes them to
``<state>/ui-staging/<key>/<name>`` (mode 0700 directories) and uploads from
there with the client library. The key depends on the case, the relative
path, the size and the browser's last-modified time, and the staged file gets
that modification time, so dropping the same file again after an interrupted
upload (a closed laptop) resumes the upload instead of starting over.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from exchange.client.state import LocalState
from exchange.crypto.manifest import ManifestError, safe_file_name

__all__ = ["PATHS_FILE", "clean_relative_path", "manifest_name", "remember_path",
           "remembered_paths", "staged_path"]

PATHS_FILE = "ui-paths.json"
STAGING_DIR = "ui-staging"
_MAX_DEPTH = 32
_MAX_PATH_CHARS = 1024


def clean_relative_path(text: str) -> str:
    """Return a dropped file's relative path with each part checked; raise ValueError.

    Every component must be a safe file name (no ``..``, separators, control
    characters); the result uses ``/``.
    """
    if not text or len(text) > _MAX_PATH_CHARS:
        raise ValueError("a file's relative path must have 1 to 1024 characters")
    parts = [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or len(parts) > _MAX_DEPTH:
        raise ValueError(f"relative path {text[:80]!r} has no file name or is too deep")
    try:
        return "/".join(safe_file_name(part) for part in parts)
    except ManifestError as err:
        raise ValueError(str(err)) from None


def manifest_name(relative_path: str) -> str:
    """Return the file name sealed in the manifest for ``relative_path`` (today: the base name)."""
    return relative_path.rsplit("/", 1)[-1]


def staged_path(state: LocalState, case_id: str, relative_path: str, size: int,
                last_modified_ms: int) -> Path:
    """Return where the UI stages a dropped file (same drop, same path: uploads resume)."""
    key = hashlib.sha256("\x00".join(
        (case_id, relative_path, str(size), str(last_modified_ms))).encode()).hexdigest()[:32]
    directory = state.root / STAGING_DIR / key
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory / manifest_name(relative_path)


def set_mtime(path: Path, last_modified_ms: int) -> None:
    """Give a staged file the browser's last-modified time (part of the resume identity)."""
    ns = max(last_modified_ms, 0) * 1_000_000
    os.utime(path, ns=(ns, ns))


def remember_path(state: LocalState, evidence_id: str, relative_path: str) -> None:
    """Record the relative path of an uploaded evidence file (UI layer only)."""
    paths = remembered_paths(state)
    paths[evidence_id] = relative_path
    state.write_json(PATHS_FILE, paths)


def remembered_paths(state: LocalState) -> dict[str, str]:
    """Return evidence id -> relative path for the files this UI uploaded."""
    doc = state.read_json(PATHS_FILE)
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v) for k, v in doc.items() if isinstance(v, str)}


def discard_staged(path: Path) -> None:
    """Remove a staged file and its directory once its upload is committed."""
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
