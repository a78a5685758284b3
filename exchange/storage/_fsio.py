"""Small file and asyncio helpers shared by the filesystem blob store and its upload sessions.

DESIGN.md §8. Kept apart so that ``fs_blobs`` and ``fs_uploads`` use one copy
of each: finishing work that must not be abandoned half-way on cancellation,
naming temporary files, hashing a file in flat memory.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import hashlib
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from exchange.storage.blobs import BlobId
from exchange.storage.errors import BlobNotFound, BlobStoreUnavailable, InsufficientStorage

T = TypeVar("T")
P = ParamSpec("P")

#: OS errors that mean "no room left" rather than a broken disk.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})
#: OS errors that mean the filesystem under the store failed or went away.
_BROKEN = frozenset({errno.EIO, errno.EROFS, errno.ESTALE, errno.ENOTCONN})


def storage_errors(
    method: Callable[P, Coroutine[Any, Any, T]],
) -> Callable[P, Coroutine[Any, Any, T]]:
    r"""Turn a full or failed filesystem into the interface's storage errors.

    A full disk is :class:`InsufficientStorage` (the failed write was cut
    back, so nothing of it was kept), an I/O error or a vanished network
    filesystem is :class:`BlobStoreUnavailable`. Other ``OSError``\s (a
    client that went away while its chunks were read) pass through unchanged.
    """
    @functools.wraps(method)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await method(*args, **kwargs)
        except OSError as err:
            if err.errno in _NO_SPACE:
                raise InsufficientStorage(
                    "the blob store's filesystem is full; nothing of this write was kept, "
                    "retry later or free space"
                ) from None
            if err.errno in _BROKEN:
                raise BlobStoreUnavailable(
                    f"the blob store's filesystem failed ({errno.errorcode.get(err.errno or 0)})"
                ) from None
            raise

    return wrapper


async def wait_out(future: asyncio.Future[Any]) -> bool:
    """Wait until ``future`` is done, riding out cancellations; return whether one came.

    For work that must not be abandoned half-way (a thread writing to a file
    descriptor we are about to close, a log entry that may be committing): the
    caller learns it was cancelled only once the work has finished.
    """
    interrupted = False
    while not future.done():
        try:
            await asyncio.wait((future,))
        except asyncio.CancelledError:
            interrupted = True
    return interrupted


async def finish(work: Awaitable[T]) -> T:
    """Await ``work`` to completion even if cancelled meanwhile (then re-raise the cancel).

    Used for short steps that leave things half done if abandoned: a created
    temporary file nobody closes, a commit or cleanup thread still running.
    """
    future = asyncio.ensure_future(work)
    if await wait_out(future):
        if not future.cancelled():
            future.exception()  # retrieved, so asyncio does not log it as lost
        raise asyncio.CancelledError
    return future.result()


def temp_path(directory: Path) -> Path:
    """A fresh temporary file name in ``directory``, tagged with our pid (see ``sweep``)."""
    return directory / f"{os.getpid()}-{secrets.token_hex(8)}.tmp"


def hash_file(path: Path, chunk_bytes: int, blob_id: BlobId | None) -> tuple[str, int]:
    """Return the SHA-256 (hex) and size of ``path``, read ``chunk_bytes`` at a time."""
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb", buffering=0) as handle:
            while data := handle.read(chunk_bytes):
                digest.update(data)
                size += len(data)
    except FileNotFoundError:
        raise BlobNotFound(f"no blob {blob_id}") from None
    return digest.hexdigest(), size


__all__ = ["finish", "hash_file", "temp_path", "wait_out"]
