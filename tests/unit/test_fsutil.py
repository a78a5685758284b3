"""Outputs that are not regular files: devices, FIFOs and sockets are written in place.

Renaming a temporary file over ``/dev/null`` as root once replaced the device
with a regular file. These tests make their own device with ``mknod`` in a
temporary directory (same numbers as ``/dev/null``), never touching the real
one; without root they use ``/dev/null`` itself, which an unprivileged
process cannot replace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.fsutil import (
    OutputKind,
    UnsafeOutput,
    open_output,
    output_kind,
    start_writeback,
    write_atomic,
)


@pytest.fixture
def null_device(tmp_path: Path) -> Iterator[Path]:
    """A character device that discards writes (mknod when root, else the real /dev/null)."""
    if os.geteuid() != 0:
        yield Path("/dev/null")  # an ordinary user cannot rename over it
        return
    path = tmp_path / "null"
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    yield path


def _assert_still_device(path: Path) -> None:
    mode = os.lstat(path).st_mode
    assert stat.S_ISCHR(mode), f"{path} is no longer a character device"
    assert os.lstat(path).st_rdev == os.makedev(1, 3)


def test_a_character_device_is_written_in_place_and_stays_a_device(null_device: Path) -> None:
    assert output_kind(null_device) is OutputKind.STREAM
    with open_output(null_device) as out:
        out.write(b"discarded" * 1000)
    _assert_still_device(null_device)
    assert not [p for p in null_device.parent.iterdir() if p.name.startswith(".null.")]


def test_write_atomic_refuses_to_rename_over_a_device(null_device: Path) -> None:
    with pytest.raises(UnsafeOutput, match="character device"):
        write_atomic(null_device, b"x")
    _assert_still_device(null_device)


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with open_output(fifo) as out:
        out.write(b"through the pipe")
    reader.join(10)
    assert got == [b"through the pipe"]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_a_unix_socket_is_written_in_place(tmp_path: Path) -> None:
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        got: list[bytes] = []

        def accept() -> None:
            conn, _ = server.accept()
            with conn:
                chunks = []
                while data := conn.recv(65536):
                    chunks.append(data)
                got.append(b"".join(chunks))

        thread = threading.Thread(target=accept)
        thread.start()
        with open_output(path) as out:
            out.write(b"to the socket")
        thread.join(10)
    assert got == [b"to the socket"]


def test_regular_files_and_new_paths_are_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out"
    with open_output(target) as out:
        out.write(b"one")
    target.write_bytes(b"old")
    inode = target.stat().st_ino
    with pytest.raises(RuntimeError), open_output(target) as out:
        out.write(b"half")
        raise RuntimeError("failed midway")
    assert target.read_bytes() == b"old"
    with open_output(target) as out:
        out.write(b"new")
    assert target.read_bytes() == b"new" and target.stat().st_ino != inode  # replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_directories_symlinks_and_block_devices_are_refused(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "file").write_bytes(b"keep")
    (tmp_path / "to-file").symlink_to(tmp_path / "file")
    (tmp_path / "to-dir").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    cases = {"dir": "is a directory", "to-file": "symlink to a regular file",
             "to-dir": "symlink to a directory", "dangling": "missing target"}
    if os.geteuid() == 0:
        os.mknod(tmp_path / "blk", 0o600 | stat.S_IFBLK, os.makedev(7, 250))
        cases["blk"] = "is a block device"
    for name, message in cases.items():
        with pytest.raises(UnsafeOutput, match=message):
            output_kind(tmp_path / name)
        with pytest.raises(UnsafeOutput), open_output(tmp_path / name) as out:
            out.write(b"x")
        with pytest.raises(UnsafeOutput):
            write_atomic(tmp_path / name, b"x")
    assert (tmp_path / "file").read_bytes() == b"keep"
    assert (tmp_path / "to-file").is_symlink() and (tmp_path / "dangling").is_symlink()


def test_a_symlink_to_a_device_is_followed(null_device: Path, tmp_path: Path) -> None:
    link = tmp_path / "stdout-like"
    link.symlink_to(null_device)
    with open_output(link) as out:
        out.write(b"x")
    assert link.is_symlink()
    _assert_still_device(null_device)


class _CachestatRange(ctypes.Structure):
    _fields_ = [("off", ctypes.c_uint64), ("len", ctypes.c_uint64)]


class _Cachestat(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "nr_cache", "nr_dirty", "nr_writeback", "nr_evicted", "nr_recently_evicted")]


#: ``cachestat(2)``'s number on x86-64 (Linux 6.5 and later).
_CACHESTAT = 451


def _dirty_pages(fd: int, offset: int, length: int) -> int:
    """Pages of ``fd``'s range still dirty in the page cache (``cachestat(2)``)."""
    if os.uname().machine != "x86_64":
        pytest.skip("cachestat(2) is called by its x86-64 number here")
    libc = ctypes.CDLL(None, use_errno=True)
    found = _Cachestat()
    asked = _CachestatRange(offset, length)
    if libc.syscall(_CACHESTAT, fd, ctypes.byref(asked), ctypes.byref(found), 0) != 0:
        code = ctypes.get_errno()
        if code == errno.ENOSYS:
            pytest.skip("this kernel has no cachestat(2) (Linux < 6.5) to see dirty pages with")
        raise OSError(code, os.strerror(code))
    return int(found.nr_dirty)


def test_start_writeback_sends_exactly_its_range_to_the_disk(tmp_path: Path) -> None:
    # Written, the pages wait in the page cache (dirty); started, exactly the range
    # asked for leaves that state at once, without an fsync, and the rest stays.
    half = 4 * 1024 * 1024
    fd = os.open(tmp_path / "blob", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, os.urandom(2 * half))
        before = _dirty_pages(fd, 0, 2 * half)
        if before == 0:
            pytest.skip(f"{tmp_path} keeps no dirty pages (a filesystem without write-back)")
        start_writeback(fd, 0, half)
        assert _dirty_pages(fd, 0, half) == 0
        assert _dirty_pages(fd, half, half) == before // 2
        start_writeback(fd, half, half)
        assert _dirty_pages(fd, 0, 2 * half) == 0
    finally:
        os.close(fd)


def test_start_writeback_reports_the_systems_refusal() -> None:
    read, write = os.pipe()
    try:
        with pytest.raises(OSError, match="sync_file_range") as caught:
            start_writeback(write, 0, 4096)  # a pipe has no pages to write back
        assert caught.value.errno == errno.ESPIPE
    finally:
        os.close(read)
        os.close(write)
