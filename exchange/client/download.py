"""Evidence listing and download: verify signature, ciphertext hash and plaintext hash.

Theory of operation. The sealed manifest is opened with the case key of the
evidence's epoch and its signature checked under the uploader's key (which
``Client.participant`` checks against the log and the pin). The ciphertext
streams from the server through worker threads that hash it and decrypt it
into a plaintext file in ``DEST/.partial/<hash>/``, so network, disk and
crypto overlap and memory stays flat; nothing but plaintext (and the age
header, for resumption) is written. Only when the age payload authenticated
to its end and the sizes and both SHA-256 hashes equal the signed manifest is
its chain-of-custody record written and the plaintext fsynced and renamed to
``DEST/<case>/<name>``. On any failure nothing appears there. An interrupted
download keeps its plaintext prefix (whole, authenticated chunks) and header;
the next run regenerates the prefix's ciphertext from them to rebuild both
hashes and asks only for the rest (``Range``). A kept prefix that turns out
damaged is deleted and the file fetched again from the start.

Nothing the server says names a local file: every id is checked against its
pattern first (:mod:`exchange.client.ids`), partial downloads live in
``DEST/.partial/<hash of the evidence id>/`` (a directory only the client
creates, opened without following symlinks), and the file name comes from
the signed manifest, made safe. Only files inside that partial directory are
ever truncated or unlinked.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import concurrent.futures
import contextlib
import hashlib
import os
import queue
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from exchange.client._body import AiohttpBody, BodyReceiver, Piece
from exchange.client.cases import case_key
from exchange.client.custody import write_custody
from exchange.client.errors import EvidenceRejected, MalformedReply
from exchange.client.handling import HandlingPolicy
from exchange.client.ids import (
    CUSTODY_SUFFIX,
    check_case_id,
    check_evidence_id,
    check_participant_id,
    local_file_name,
    local_key,
)
from exchange.client.problems import refusal
from exchange.client.retry import announce_retry, backoff_s
from exchange.client.session import SOCK_READ_TIMEOUT_S, Client, audit_index_of
from exchange.client.trust import VerifiedParticipant
from exchange.crypto.age import AgeError, decrypt
from exchange.crypto.keys import loads_strict
from exchange.crypto.manifest import (
    Manifest,
    ManifestError,
    open_manifest,
    safe_file_name,
    safe_folder,
    verify_against,
)
from exchange.crypto.resumable import (
    CHUNK_SIZE,
    ENCRYPTED_CHUNK_SIZE,
    HeadedDecryptor,
    ResumableAge,
    feed_scratch_size,
)
from exchange.fsutil import fsync_directory, start_writeback
from exchange.transport.client_evidence import read_problem

__all__ = ["Evidence", "PulledFile", "download_evidence", "list_evidence", "open_evidence"]

_PIECE = 2 * 1024 * 1024  # the stages get the body in pieces of about this size
_MAX_RECV = 256 * 1024  # asyncio's socket read size: by how much a piece may exceed _PIECE
_IN_FLIGHT = 6  # pieces queued for the stages: bounded memory (about 30 MiB)
_ATTEMPTS = 6
_PARTIAL_DIR = ".partial"
_PLAINTEXT, _HEADER = "plaintext", "header"  # what a partial download keeps
_MAX_HEADER_BYTES = 1024 * 1024  # a kept age header longer than this is damaged
_NO_FOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC
Progress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence:
    """One evidence record with its manifest opened and its signature verified."""

    record: dict[str, Any]
    manifest: Manifest
    signed_manifest: dict[str, Any]
    uploader: VerifiedParticipant

    @property
    def evidence_id(self) -> str:
        """The server's evidence id."""
        return str(self.record["evidence_id"])

    def to_json(self) -> dict[str, Any]:
        """Return the listing form: decrypted name, sizes, uploader, time."""
        m = self.manifest
        return {"evidence_id": self.evidence_id, "case_id": m.case_id, "file_name": m.file_name,
                "media_type": m.media_type, "plaintext_size": m.plaintext_size,
                "plaintext_sha256": m.plaintext_sha256, "ciphertext_size": m.ciphertext_size,
                "uploader": m.uploader, "uploaded_at": m.uploaded_at, "epoch": m.epoch,
                "folder": m.folder, "handling": m.handling, "handling_note": m.handling_note,
                "audit_index": self.record.get("audit_index")}


@dataclass(frozen=True, slots=True, kw_only=True)
class PulledFile:
    """A verified file moved into place, with its custody record."""

    evidence_id: str
    path: Path
    custody_path: Path
    plaintext_size: int
    resumed_from: int
    #: The uploader's signed handling code and note ("" = none).
    handling: str = ""
    handling_note: str = ""


def _rejected(evidence_id: str, what: str) -> EvidenceRejected:
    return EvidenceRejected(
        f"evidence {evidence_id} failed verification: {what}",
        "nothing was written; the server's copy or its metadata was altered or damaged — "
        "tell the uploader and your auditor")


async def open_evidence(client: Client, record: dict[str, Any]) -> Evidence:
    """Return ``record`` (a server evidence record) with its manifest opened and verified.

    Raises :class:`MalformedReply` when one of its ids is not well formed.
    """
    if not isinstance(record, dict):
        raise MalformedReply("the server sent an evidence record that is not a JSON object")
    evidence_id = check_evidence_id(record.get("evidence_id"), "reading an evidence record")
    case_id = check_case_id(record.get("case_id"), f"reading evidence {evidence_id}")
    uploader_id = check_participant_id(record.get("uploader"), f"reading evidence {evidence_id}")
    epoch = record.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool):
        raise _rejected(evidence_id, "the record has no epoch")
    key = await case_key(client, case_id, epoch)
    uploader = await client.participant(uploader_id)
    # The manifest is judged by the keys the uploader had when the commit was logged,
    # and the uploader must have been a member of that epoch (named in a statement).
    state = await client.trust.sync(case_id)
    commit_index = record.get("audit_index")
    if not isinstance(commit_index, int):
        raise _rejected(evidence_id, "the record names no commit entry")
    if state.case(case_id).envelope_hash(uploader_id, epoch) is None:
        raise _rejected(evidence_id, f"{uploader_id[:60]!r} was not a member of epoch {epoch} "
                        "by the case's statements")
    signing_key = state.directory.get(uploader_id).keys_at(commit_index).signing_key
    try:
        sealed = base64.b64decode(str(record.get("sealed_manifest", "")), validate=True)
        manifest = open_manifest(
            sealed, key.identity,
            lambda pid: signing_key if pid == uploader.id else None,
            case_id=case_id, epoch=epoch)
        signed = loads_strict(decrypt(sealed, [key.identity]), what="manifest",
                              max_bytes=64 * 1024)
    except (AgeError, ManifestError, ValueError) as err:
        raise _rejected(evidence_id, f"its manifest does not verify ({err})") from None
    for name in ("ciphertext_sha256", "ciphertext_size"):
        if record.get(name) != getattr(manifest, name):
            raise _rejected(evidence_id, f"the server's {name} differs from the signed manifest")
    return Evidence(record=dict(record), manifest=manifest, signed_manifest=signed,
                    uploader=uploader)


async def list_evidence(client: Client, case_id: str) -> list[Evidence]:
    """Return the case's evidence with names decrypted and manifests verified locally."""
    reply = await client.call("GET", f"/v1/cases/{case_id}/evidence",
                              doing=f"listing the evidence of case {case_id!r}")
    records = reply.body.get("evidence", []) if isinstance(reply.body, dict) else []
    return [await open_evidence(client, record) for record in records]


class _Sink:
    """Hashes and decrypts ciphertext pieces in order, over three worker threads.

    Each stage is one thread, so it sees the pieces in the order :meth:`feed`
    was called (from the event loop only): the ciphertext hasher, the
    decryptor (whose AEAD work spreads over the crypto pool) and the plaintext
    hasher-writer. hashlib, pyca and ``os.write`` release the GIL, so the
    stages run on all cores at once. The writer starts each write's write-back
    to the disk at once (:func:`~exchange.fsutil.start_writeback`), so the
    final fsync finds almost nothing left, where it used to wait for the whole
    file (1.2-1.4 s per GiB of an idle client on this machine, a third of a
    pull's time; issue 17), and the disk's queue stays shallow for every other
    program's flushes. Plaintext goes from the decryptor to the
    writer in a few reused ``scratch`` buffers, so memory is bounded by the
    pieces in flight. Only plaintext reaches the disk, plus the age header
    (a few hundred bytes) kept for resumption: no ciphertext spool, which
    doubled a pull's disk writes and the free space it needs (issue 17).
    """

    def __init__(self, partial_dir: Path, key_identity: Any, *, keep: bool) -> None:
        self.plain_path = partial_dir / _PLAINTEXT
        self.header_path = partial_dir / _HEADER
        truncate = 0 if keep else os.O_TRUNC
        self.plain_fd = os.open(self.plain_path, os.O_WRONLY | os.O_CREAT | truncate | _NO_FOLLOW,
                                0o600)
        self.identity = key_identity
        self.cipher = hashlib.sha256()
        self.plain = hashlib.sha256()
        self.decryptor = HeadedDecryptor([key_identity])
        self.header_kept = False
        self._stages = [concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
                        for name in ("pull-hash", "pull-open", "pull-plain")]
        self._scratch: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        for _ in range(_IN_FLIGHT + 2):
            self._scratch.put(bytearray(feed_scratch_size(_PIECE + _MAX_RECV)))
        self.received = 0
        self.plain_size = 0
        self.resumed_from = 0
        self._closed = False

    def replay(self, plaintext_size: int) -> None:
        """Continue from the plaintext prefix and header a previous run kept (a thread).

        The prefix is cut to whole chunks, never the final one; its ciphertext
        is regenerated from the kept header's payload key (age chunks depend
        only on key, index and plaintext), so both hashes cover the whole file
        again. A prefix damaged on disk makes those hashes differ from the
        signed manifest, and the caller starts over. Raises ``AgeError`` when
        the kept header does not open with the case key.
        """
        try:
            header = _read_kept_header(self.header_path)
        except FileNotFoundError:
            os.ftruncate(self.plain_fd, 0)
            return
        age = ResumableAge.from_header(header, [self.identity])
        kept = os.fstat(self.plain_fd).st_size
        chunks = min(kept // CHUNK_SIZE, max(0, plaintext_size - 1) // CHUNK_SIZE)
        limit = chunks * CHUNK_SIZE
        self.cipher.update(header)
        encryptor = age.stream()
        sealed = bytearray(_PIECE // CHUNK_SIZE * ENCRYPTED_CHUNK_SIZE)
        reader = os.open(self.plain_path, os.O_RDONLY | _NO_FOLLOW)
        try:
            position = 0
            while position < limit:
                data = os.pread(reader, min(_PIECE, limit - position), position)
                if not data or len(data) % CHUNK_SIZE:
                    raise AgeError("the kept plaintext changed while it was read")
                self.plain.update(data)
                size = encryptor.seal_into(memoryview(data), memoryview(sealed), final=False)
                self.cipher.update(memoryview(sealed)[:size])
                position += len(data)
        finally:
            os.close(reader)
        os.ftruncate(self.plain_fd, limit)
        os.lseek(self.plain_fd, limit, os.SEEK_SET)
        self.decryptor = HeadedDecryptor.resumed(age, chunks)
        self.header_kept = True
        self.received = self.resumed_from = len(header) + chunks * ENCRYPTED_CHUNK_SIZE
        self.plain_size = limit

    def feed(self, piece: Piece) -> list[concurrent.futures.Future[Any]]:
        """Queue ``piece`` (buffers as received, about ``_PIECE`` bytes) to every stage;
        return its futures.

        The piece is done once each future is, and the decryptor's future
        yields the plaintext writer's (see :func:`_settle`).
        """
        hash_stage, open_stage = self._stages[:2]
        self.received += sum(map(len, piece))
        return [hash_stage.submit(self._hash, piece), open_stage.submit(self._open, piece)]

    def _hash(self, piece: Piece) -> None:
        for data in piece:
            self.cipher.update(data)

    def _open(self, piece: Piece) -> concurrent.futures.Future[None]:
        scratch = self._scratch.get()
        items: list[bytes | memoryview] = []
        used = 0  # each feed's plaintext lands in scratch right after the previous one's

        def collect(plain: bytes | bytearray | memoryview) -> None:
            # Views of ``scratch`` stay valid until the writer gives it back; any
            # other buffer is only valid during this call, so it is copied.
            nonlocal used
            view = memoryview(plain)
            if view.obj is scratch:
                items.append(view)
                used += len(view)
            else:
                items.append(bytes(plain))

        try:
            for data in piece:
                self.decryptor.feed(data, collect, scratch=memoryview(scratch)[used:])
            if not self.header_kept and self.decryptor.age is not None:
                _keep_header(self.header_path, self.decryptor.age.header)
                self.header_kept = True
        except BaseException:
            self._scratch.put(scratch)
            raise
        return self._stages[2].submit(self._write_plain, scratch, items)

    def _write_plain(self, scratch: bytearray | None,
                     items: list[bytes | memoryview]) -> None:
        try:
            start = self.plain_size
            for item in items:
                self.plain.update(item)
                self.plain_size += len(item)
                _write_all(self.plain_fd, item)
            start_writeback(self.plain_fd, start, self.plain_size - start)
        finally:
            items.clear()
            if scratch is not None:
                self._scratch.put(scratch)

    def _finish(self) -> concurrent.futures.Future[None]:
        last = self.decryptor.finalize()
        return self._stages[2].submit(self._final_write, last)

    def _final_write(self, last: bytes) -> None:
        self._write_plain(None, [last])
        os.fsync(self.plain_fd)

    async def finish(self) -> None:
        """Authenticate the end of the payload and make the plaintext durable."""
        await _settle([self._stages[1].submit(self._finish)])

    def close(self) -> None:
        """Wait for every stage (they use the descriptor), then close the file (once)."""
        if self._closed:
            return
        self._closed = True
        for stage in self._stages:
            stage.shutdown(wait=True)
        with contextlib.suppress(OSError):
            os.close(self.plain_fd)

    def discard(self) -> None:
        """Close, then delete what this download kept (it failed verification)."""
        self.close()
        self.plain_path.unlink(missing_ok=True)
        self.header_path.unlink(missing_ok=True)


def _keep_header(path: Path, header: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _NO_FOLLOW, 0o600)
    try:
        _write_all(fd, header)
    finally:
        os.close(fd)


def _read_kept_header(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | _NO_FOLLOW)
    try:
        return os.read(fd, _MAX_HEADER_BYTES + 1)
    finally:
        os.close(fd)


async def _settle(parts: list[concurrent.futures.Future[Any]]) -> None:
    """Wait for one piece's stage futures, in order (so the first error raised is the
    earliest stage's), including the plaintext write a decryptor future hands on."""
    for part in parts:
        result = await asyncio.wrap_future(part)
        if isinstance(result, concurrent.futures.Future):
            await asyncio.wrap_future(result)


def _too_much(evidence_id: str, total: int) -> EvidenceRejected:
    return _rejected(evidence_id, f"the server sent more than the {total} bytes signed")


async def _drain(pending: collections.deque[list[concurrent.futures.Future[Any]]]) -> None:
    """Wait out every queued piece, ignoring their errors (one is being raised already)."""
    while pending:
        with contextlib.suppress(Exception):
            await _settle(pending.popleft())


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def folder_dir(case_dir: Path, folder: str) -> Path:
    """Create (0700) and return ``case_dir/folder`` for a manifest's relative folder.

    The folder is checked again here (:func:`safe_folder`: no ``..``, no
    absolute path), and no level may be an existing symlink or a file, so a
    file can only ever land under ``case_dir``. Raises ``UnsafeFileName`` or
    ``NotADirectoryError``.
    """
    directory = case_dir
    for part in safe_folder(folder).split("/") if folder else ():
        directory = directory / part
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if directory.is_symlink() or not directory.is_dir():
                raise NotADirectoryError(f"{str(directory)!r} exists and is not a "
                                         "directory") from None
    return directory


def _own_directory(path: Path) -> Path:
    """Create ``path`` (0700) or accept it if it is a real directory, never a symlink."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise EvidenceRejected(f"{str(path)!r} is not a directory (a symlink or a file)",
                               "move it aside; pull keeps its partial downloads there")
    return path


def partial_directory(dest: Path, evidence_id: str) -> Path:
    """Return (creating it) the client-owned directory of one partial download.

    ``DEST/.partial/<hash of the id>``: the id never becomes a path itself.
    """
    root = _own_directory(dest / _PARTIAL_DIR)
    return _own_directory(root / local_key("evidence", evidence_id))


def _free_name(directory: Path, name: str, evidence_id: str) -> Path:
    target = directory / name
    if not target.exists():
        return target
    stem, dot, ext = name.partition(".")
    return directory / (f"{stem}.{evidence_id}{dot}{ext}" if dot else f"{name}.{evidence_id}")


async def download_evidence(client: Client, evidence: Evidence, dest: Path, *,
                            progress: Progress | None = None) -> PulledFile:
    """Download, verify and move one evidence file into ``dest/<case>/``; return where.

    Raises :class:`EvidenceRejected` (nothing written) when any check fails, and
    :class:`HandlingRefused` (nothing written) when the local handling policy
    (``EXCHANGE_HANDLING_SHARED_DEST``) forbids ``dest`` for the file's code.
    """
    m = evidence.manifest
    evidence_id = check_evidence_id(evidence.evidence_id)
    HandlingPolicy.from_env().check(m, evidence_id, dest)
    try:
        case_id = check_case_id(m.case_id)
        name = safe_file_name(local_file_name(m.file_name, evidence_id))
    except (MalformedReply, ManifestError) as err:
        raise _rejected(evidence_id, str(err)) from None
    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    case_dir = _own_directory(dest / case_id)
    partial_dir = partial_directory(dest, evidence_id)
    # The ciphertext spool clients kept before issue 17; resumption no longer reads it.
    (partial_dir / "ciphertext").unlink(missing_ok=True)
    key = await case_key(client, m.case_id, m.epoch)
    sink, download_index = await _receive(client, evidence, partial_dir, key.identity, progress)
    custody_path = None
    try:
        try:
            target_dir = folder_dir(case_dir, m.folder)
        except (ManifestError, OSError) as err:
            raise _rejected(evidence_id, f"cannot recreate its folder: {err}") from None
        target = _free_name(target_dir, name, evidence_id)
        custody_path = target.with_name(target.name + CUSTODY_SUFFIX)
        # The custody record first: whoever sees the file can rely on its record.
        await write_custody(client, evidence, custody_path, file_path=target,
                            download_index=download_index)
        os.replace(sink.plain_path, target)
        fsync_directory(target_dir)
    except BaseException:
        # The verified plaintext stays in the partial directory: a rerun resumes it.
        if custody_path is not None:
            custody_path.unlink(missing_ok=True)
        raise
    finally:
        sink.close()
    sink.header_path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        partial_dir.rmdir()
    return PulledFile(evidence_id=evidence_id, path=target, custody_path=custody_path,
                      plaintext_size=sink.plain_size, resumed_from=sink.resumed_from,
                      handling=m.handling, handling_note=m.handling_note)


async def _receive(client: Client, evidence: Evidence, partial_dir: Path, identity: Any,
                   progress: Progress | None) -> tuple[_Sink, int | None]:
    """Fetch, decrypt and verify the file into ``partial_dir``; return the sink and the
    download's audit index.

    A prefix kept by an earlier run is resumed (:meth:`_Sink.replay`); if its
    header does not open, or the finished file does not verify, it is dropped
    with a warning and the file is fetched once more from the start. A file
    fetched from the start that does not verify is refused (``EvidenceRejected``)
    and deleted. Any other failure keeps the prefix for the next run.
    """
    m, evidence_id = evidence.manifest, evidence.evidence_id

    def start_over(sink: _Sink, why: str) -> None:
        client.warn(f"the partial download of {evidence_id} kept from an earlier run is "
                    f"damaged{why}: downloading it again from the start")
        sink.discard()

    keep = True
    while True:
        sink = _Sink(partial_dir, identity, keep=keep)
        try:
            if keep:
                try:
                    await asyncio.to_thread(sink.replay, m.plaintext_size)
                except AgeError:
                    start_over(sink, "")
                    keep = False
                    continue
            try:
                download_index = await _fetch(client, evidence, sink, progress)
                await sink.finish()
                verify_against(m, ciphertext_size=sink.received,
                               ciphertext_sha256=sink.cipher.digest(),
                               plaintext_size=sink.plain_size,
                               plaintext_sha256=sink.plain.digest())
            except (AgeError, ManifestError) as err:
                if sink.resumed_from:
                    start_over(sink, " (the file did not verify)")
                    keep = False
                    continue
                sink.discard()
                raise _rejected(evidence_id, f"the downloaded file does not match its signed "
                                             f"manifest ({err})") from None
        except BaseException:
            sink.close()
            raise
        return sink, download_index


async def _fetch(client: Client, evidence: Evidence, sink: _Sink,
                 progress: Progress | None) -> int | None:
    """Stream the rest of the ciphertext into ``sink``; return the download's audit index."""
    total = evidence.manifest.ciphertext_size
    failures, index = 0, None
    while sink.received < total:
        start = sink.received
        headers = {"Range": f"bytes={start}-"} if start else {}
        pending: collections.deque[list[concurrent.futures.Future[Any]]] = collections.deque()
        try:
            response = await client.http.request(
                "GET", f"/v1/evidence/{evidence.evidence_id}/content", headers=headers)
            async with response:
                if response.status not in (200, 206):
                    problem = await read_problem(response)
                    raise refusal(response.status, problem, audit_index=audit_index_of(response),
                                  doing=f"downloading evidence {evidence.evidence_id}")
                index = audit_index_of(response)
                if start + (response.content_length or 0) > total:
                    raise _too_much(evidence.evidence_id, total)
                body = BodyReceiver.take_over(
                    response, piece_bytes=_PIECE, buffers=_IN_FLIGHT + 2,
                    read_timeout_s=SOCK_READ_TIMEOUT_S) or AiohttpBody(
                    response.content, piece_bytes=_PIECE)
                pieces: collections.deque[Piece] = collections.deque()
                try:
                    while piece := await body.next_piece():
                        if sink.received + sum(map(len, piece)) > total:
                            raise _too_much(evidence.evidence_id, total)
                        pending.append(sink.feed(piece))
                        pieces.append(piece)
                        if len(pending) >= _IN_FLIGHT:
                            await _settle(pending.popleft())
                            body.recycle(pieces.popleft())
                        if progress is not None:
                            progress(sink.received, total)
                    while pending:
                        await _settle(pending.popleft())
                finally:
                    body.close()
        except (aiohttp.ClientError, TimeoutError, ConnectionError) as err:
            await _drain(pending)
            failures += 1
            if failures >= _ATTEMPTS:
                raise client.unreachable(err) from None
            announce_retry(client, err, doing=f"downloading {evidence.evidence_id}",
                           delay_s=backoff_s(failures), attempt=failures, attempts=_ATTEMPTS)
            await asyncio.sleep(backoff_s(failures))
            continue
        finally:
            await _drain(pending)
        if sink.received < total:
            raise _rejected(evidence.evidence_id,
                            f"the server sent {sink.received} of {total} bytes")
    return index
