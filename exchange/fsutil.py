"""Durable file writes: temporary file, fsync, rename, fsync the directory.

Used wherever a half-written file would be worse than no file (key files,
pulled evidence, blobs). After tessera's ``file_ops.go`` idioms.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_directory(path: Path) -> None:
    """fsync a directory so that a rename or create inside it is durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: Path, *, mode: int = 0o600, exclusive: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that appears at ``path`` only if the block completes.

    The data goes to a temporary file in the same directory, which is fsynced
    and renamed over ``path`` (or hard-linked, when ``exclusive`` is set, so
    that an existing file is never replaced: ``FileExistsError``). On any
    exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        if exclusive:
            os.link(tmp, path)
            tmp.unlink()
        else:
            os.replace(tmp, path)
        fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` durably and atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, exclusive=exclusive) as handle:
        handle.write(data)
