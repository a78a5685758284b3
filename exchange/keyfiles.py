"""Reading and writing secret key files at the edge (keystores, age identity files).

The pure formats live in :mod:`exchange.crypto.keystore`; this module is the
I/O around them: new secret files are created exclusively with mode 0600 via
:func:`exchange.fsutil.write_atomic`, and reading a secret file that other
users may read triggers a warning (as ``age-keygen`` does on the write side).
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

from exchange.fsutil import write_atomic

__all__ = [
    "MAX_SECRET_FILE_BYTES",
    "InsecureKeyFileWarning",
    "insecure_mode_message",
    "read_secret_file",
    "write_keystore",
    "write_secret_file",
]

# Key files are small; refusing big ones keeps a mistaken path (an evidence
# file, /dev/zero) from being read into memory.
MAX_SECRET_FILE_BYTES = 1024 * 1024


class InsecureKeyFileWarning(UserWarning):
    """A secret key file is readable by users other than its owner."""


def _default_warn(message: str) -> None:
    warnings.warn(message, InsecureKeyFileWarning, stacklevel=3)


def write_secret_file(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data``, mode 0600, atomically; ``FileExistsError`` if it exists."""
    write_atomic(Path(path), data, mode=0o600, exclusive=True)


def write_keystore(path: Path, data: bytes) -> None:
    """Create the keystore file ``path`` (mode 0600, never replacing an existing file)."""
    write_secret_file(path, data)


def insecure_mode_message(path: Path, mode: int) -> str | None:
    """Return a warning text if ``mode`` lets group or others read a secret file, else None."""
    if stat.S_ISREG(mode) and mode & (stat.S_IRGRP | stat.S_IROTH):
        who = "world" if mode & stat.S_IROTH else "group"
        return f"secret key file {str(path)!r} is {who}-readable (mode {stat.S_IMODE(mode):04o})"
    return None


def read_secret_file(
    path: Path,
    *,
    max_bytes: int = MAX_SECRET_FILE_BYTES,
    warn: Callable[[str], None] | None = None,
) -> bytes:
    """Return the contents of the secret file ``path``.

    Calls ``warn`` (default: :func:`warnings.warn` with
    :class:`InsecureKeyFileWarning`) when group or others can read it.
    Raises ``ValueError`` when the file is larger than ``max_bytes`` and the
    usual ``OSError`` subclasses when it cannot be read.
    """
    with Path(path).open("rb") as handle:
        message = insecure_mode_message(Path(path), os.fstat(handle.fileno()).st_mode)
        if message is not None:
            (warn or _default_warn)(message)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"key file {str(path)!r} is larger than {max_bytes} bytes")
    return data
