"""Durable file writes: temporary file, fsync, rename, fsync the directory.

Used wherever a half-written file would be worse than no file (key files,
pulled evidence, blobs). After tessera's ``file_ops.go`` idioms.

A rename replaces whatever the name pointed at, so it is only ever done over a
regular file or a new name: :func:`atomic_writer` refuses anything else
(renaming over ``/dev/null`` as root once replaced the device with a regular
file and broke every program that writes to it). User-named outputs go
through :func:`open_output`, which writes character devices, FIFOs and
sockets in place, as the ``age`` tool does, and refuses directories, block
devices and symlinks that do not lead to such a stream.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, cast

__all__ = [
    "OutputKind",
    "UnsafeOutput",
    "append_line",
    "atomic_writer",
    "fsync_directory",
    "open_output",
    "output_kind",
    "start_writeback",
    "write_atomic",
]


class UnsafeOutput(OSError):
    """The output path names something that must not be replaced or written to."""


class OutputKind(enum.Enum):
    """How an output path is written."""

    NEW = "new"  #: nothing there yet: created atomically
    REGULAR = "regular"  #: a regular file: replaced atomically
    STREAM = "stream"  #: a character device, FIFO or socket: written in place


def _describe(mode: int) -> str:
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISCHR, "a character device"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISREG, "a regular file"))
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def _is_stream(mode: int) -> bool:
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


def output_kind(path: Path) -> OutputKind:
    """Return how ``path`` may be written, or raise :class:`UnsafeOutput`.

    A symlink is followed only when it leads to a stream (``/dev/stdout``):
    replacing it would destroy the link, writing through it to a regular file
    would not be atomic, so both are refused, as is a dangling link.
    """
    try:
        own = os.lstat(path)
    except FileNotFoundError:
        return OutputKind.NEW
    if stat.S_ISREG(own.st_mode):
        return OutputKind.REGULAR
    if _is_stream(own.st_mode):
        return OutputKind.STREAM
    if stat.S_ISLNK(own.st_mode):
        try:
            target = os.stat(path)
        except OSError:
            raise UnsafeOutput(f"{str(path)!r} is a symlink to a missing target") from None
        if _is_stream(target.st_mode):
            return OutputKind.STREAM
        raise UnsafeOutput(f"{str(path)!r} is a symlink to {_describe(target.st_mode)}; "
                           f"name the target itself")
    raise UnsafeOutput(f"{str(path)!r} is {_describe(own.st_mode)}")


#: Flush a file's data (not its timestamps) to disk: ``os.fdatasync``, or ``os.fsync``
#: where there is none (macOS).
datasync = getattr(os, "fdatasync", os.fsync)


#: ``sync_file_range``'s flag that starts write-back of a range's dirty pages and
#: returns without waiting for it (``<linux/fs.h>``).
_SYNC_FILE_RANGE_WRITE = 2


def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    """Return the C library's ``sync_file_range`` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return cast(Callable[[int, int, int, int], int], function)


_start_range_writeback = _sync_file_range()


def start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing ``length`` bytes of ``fd`` from ``offset`` to the disk; do not wait.

    Why: a big write left in the page cache reaches the disk all at once, at
    the ``fsync`` that makes it durable or when the kernel's write-back wakes,
    and while those megabytes are queued every other ``fsync`` on the disk
    (the database's commit, another upload's) waits behind them. Started as
    each piece is written, the disk's queue stays a piece deep and the final
    ``fsync`` finds little left (issue 17: an 8 KiB flush's p99, measured
    beside eight 60 MB/s writers on the test machine, fell from about 200 ms
    with a ``fdatasync`` every 16 MiB to about 45 ms).

    It only starts write-back (``SYNC_FILE_RANGE_WRITE``): durability still
    needs ``fsync``, and a failed write-back is still reported to the
    ``fsync`` that follows (nothing here consumes it). Where there is no
    ``sync_file_range`` (not Linux) it does nothing and the ``fsync`` does it all.
    """
    if _start_range_writeback is None or length <= 0:
        return
    if _start_range_writeback(fd, offset, length, _SYNC_FILE_RANGE_WRITE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"sync_file_range: {os.strerror(code)}")


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
    Anything at ``path`` other than a regular file (a device, a FIFO, a
    directory, a symlink) raises :class:`UnsafeOutput` before anything is
    created and again just before the rename.
    """
    path = Path(path)
    if not exclusive:
        _check_replaceable(path)
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
            _check_replaceable(path)
            os.replace(tmp, path)
        fsync_directory(directory)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _check_replaceable(path: Path) -> None:
    if output_kind(path) is OutputKind.STREAM:
        raise UnsafeOutput(f"{str(path)!r} is {_describe(os.stat(path).st_mode)}: "
                           "refusing to replace it with a file")


@contextlib.contextmanager
def _stream_writer(path: Path) -> Iterator[BinaryIO]:
    """Yield ``path`` (a device, FIFO or socket) opened for writing in place."""
    if stat.S_ISSOCK(os.stat(path).st_mode):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            with sock.makefile("wb") as handle:
                yield handle
        return
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not _is_stream(os.fstat(fd).st_mode):  # swapped since output_kind looked
            raise UnsafeOutput(f"{str(path)!r} changed while it was opened")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "wb") as handle:
        yield handle


@contextlib.contextmanager
def open_output(path: Path, *, mode: int = 0o600) -> Iterator[BinaryIO]:
    """Yield a binary file for a user-named output ``path``.

    New paths and regular files are written atomically (:func:`atomic_writer`);
    character devices, FIFOs and sockets are opened and written in place and
    are still what they were afterwards; anything else raises
    :class:`UnsafeOutput`.
    """
    path = Path(path)
    if output_kind(path) is OutputKind.STREAM:
        with _stream_writer(path) as handle:
            yield handle
    else:
        with atomic_writer(path, mode=mode) as handle:
            yield handle


def write_atomic(path: Path, data: bytes, *, mode: int = 0o600, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` durably and atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path, mode=mode, exclusive=exclusive) as handle:
        handle.write(data)


def append_line(path: Path, line: bytes, *, mode: int = 0o600) -> None:
    """Append ``line`` (ending in a newline) to ``path``, created if missing, and fsync it.

    For the data directory's append-only records (rollback decisions, log-key
    history): nothing already written is ever rewritten or renamed.
    """
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)
