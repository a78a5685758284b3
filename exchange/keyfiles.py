"""Reading and writing secret key files at the edge (keystores, age identity files).

The pure formats live in :mod:`exchange.crypto.keystore`; this module is the
I/O around them: new secret files are created exclusively with mode 0600 via
:func:`exchange.fsutil.write_atomic`, and reading a secret file that other
users may read triggers a warning (as ``age-keygen`` does on the write side).

A participant keystore is stricter (:func:`read_keystore_file`): one that
group or others can read is refused unless the user says otherwise
(``--allow-insecure-keystore`` or ``EXCHANGE_ALLOW_INSECURE_KEYSTORE=1``), and
one whose Argon2id cost is below what ``keygen`` writes is refused with the
way out (``exchange key upgrade``). Test-only: ``EXCHANGE_TEST_WEAK_KDF=1``
accepts cheap parameters, so the suite can use fast keystores; it is the
counterpart of keygen's hidden ``--test-kdf-params``.
"""

from __future__ import annotations

import os
import stat
import warnings
from collections.abc import Callable
from pathlib import Path

from exchange.crypto.keystore import DEFAULT_PARAMS, Argon2Params, check_strength, is_keystore
from exchange.fsutil import write_atomic

__all__ = [
    "ALLOW_INSECURE_ENV",
    "MAX_SECRET_FILE_BYTES",
    "InsecureKeyFile",
    "InsecureKeyFileWarning",
    "insecure_mode_message",
    "keystore_minimum",
    "read_keystore_file",
    "read_secret_file",
    "write_keystore",
    "write_secret_file",
]

# Key files are small; refusing big ones keeps a mistaken path (an evidence
# file, /dev/zero) from being read into memory.
MAX_SECRET_FILE_BYTES = 1024 * 1024


#: Set to 1 to accept a keystore that group or others may read (a warning is still shown).
ALLOW_INSECURE_ENV = "EXCHANGE_ALLOW_INSECURE_KEYSTORE"
_WEAK_KDF_ENV = "EXCHANGE_TEST_WEAK_KDF"  # test-only, see the module docstring


class InsecureKeyFileWarning(UserWarning):
    """A secret key file is readable by users other than its owner."""


class InsecureKeyFile(PermissionError):
    """A keystore is readable by group or others and that was not explicitly allowed."""


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
    data, message = _read(path, max_bytes=max_bytes)
    if message is not None:
        (warn or _default_warn)(message)
    return data


def _read(path: Path, *, max_bytes: int) -> tuple[bytes, str | None]:
    """Return the file's bytes and the insecure-mode message (None: only the owner reads)."""
    with Path(path).open("rb") as handle:
        message = insecure_mode_message(Path(path), os.fstat(handle.fileno()).st_mode)
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError(f"key file {str(path)!r} is larger than {max_bytes} bytes")
    return data, message


def keystore_minimum() -> Argon2Params:
    """Return the least Argon2id cost a keystore may have: what ``keygen`` writes."""
    if os.environ.get(_WEAK_KDF_ENV) == "1":  # test-only: fast keystores in the suite
        return Argon2Params(time_cost=1, memory_kib=8, parallelism=1)
    return DEFAULT_PARAMS


def read_keystore_file(path: Path, *, allow_insecure: bool = False,
                       warn: Callable[[str], None] | None = None) -> bytes:
    """Return the contents of the keystore (or age identity) file ``path``, checked.

    For a keystore: refuses (:class:`InsecureKeyFile`) a file group or others
    can read unless ``allow_insecure`` or ``$EXCHANGE_ALLOW_INSECURE_KEYSTORE``
    is 1 (then it warns), and one whose Argon2id cost is below
    :func:`keystore_minimum` (:class:`~exchange.crypto.keystore.KeystoreTooWeak`),
    before any passphrase is asked for. Any other file (an age identity file)
    only warns, as ``age`` does, and is returned for the caller to parse.
    """
    data, message = _read(path, max_bytes=MAX_SECRET_FILE_BYTES)
    keystore = is_keystore(data)
    if message is not None:
        allowed = allow_insecure or os.environ.get(ALLOW_INSECURE_ENV) == "1"
        if keystore and not allowed:
            raise InsecureKeyFile(
                f"refusing to use {message}: run 'chmod 600 {path}', or allow it with "
                f"--allow-insecure-keystore or {ALLOW_INSECURE_ENV}=1")
        (warn or _default_warn)(message)
    if keystore:
        check_strength(data, keystore_minimum())
    return data
