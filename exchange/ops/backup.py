"""``exchange server backup`` and ``restore``: one consistent archive of a server, and back.

Archive format (``exchange-backup/v1``): an uncompressed POSIX tar (blobs
are ciphertext and do not compress) whose members all sit under
``exchange-backup/``:

* ``database/exchange.sqlite3`` (SQLite online-backup copy) or
  ``database/exchange.pgdump`` (``pg_dump --format=custom`` of one snapshot);
* ``blobs/ab/cd/<sha256>``: every blob an evidence record of that snapshot
  names, hashed against its address while it is copied;
* ``server.json`` and ``log-keys.jsonl`` (the log-key history); ``log.key`` and the
  rotated keys only when asked (``--include-keys``);
* ``manifest.json`` last: format, time, release, dialect, schema version,
  tree size, the snapshot's latest signed checkpoint, the blob count and the
  SHA-256 of every other member.

Why this order is consistent while the server runs: the database snapshot
comes first, and blobs are immutable and written before the evidence record
that names them, so every blob the snapshot names exists when it is copied.

Restore reads the archive as a stream, refuses any member name outside the
format (no path tricks reach the disk: files are written by us, never
extracted by ``tarfile``), checks every hash against the manifest, stages
everything next to the target directory and moves it in only when all
checked. The rollback guard file of an existing target directory is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from exchange import __version__
from exchange.config import CONFIG_FILE, ServerConfig
from exchange.fsutil import atomic_writer, fsync_directory
from exchange.ops.logkey import KEYS_FILE, ROTATED_KEY_FILE, read_rotations
from exchange.ops.rollback import DECISIONS_FILE, GUARD_FILE, LOCK_FILE
from exchange.ops.snapshot import (
    BackupError,
    Snapshot,
    find_pg_tool,
    pg_tool_args,
    postgres_snapshot,
    sqlite_snapshot,
)
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.sqlite_store import DATABASE_NAME

__all__ = [
    "ARCHIVE_FORMAT",
    "BackupError",
    "BackupReport",
    "make_backup",
    "restore_backup",
]

ARCHIVE_FORMAT = "exchange-backup/v1"
ROOT = "exchange-backup"
MANIFEST = "manifest.json"
LOG_KEY_FILE = "log.key"
COPY_BYTES = 1024 * 1024
#: Files an existing target directory may hold: they belong to the place, not to the backup.
KEPT_ON_RESTORE = frozenset({GUARD_FILE, DECISIONS_FILE, LOCK_FILE})
_BLOB_MEMBER = re.compile(r"blobs/([0-9a-f]{2})/([0-9a-f]{2})/(\1\2[0-9a-f]{60})")
_PLAIN_MEMBERS = frozenset({
    MANIFEST, CONFIG_FILE, LOG_KEY_FILE, KEYS_FILE, "database/exchange.sqlite3",
    "database/exchange.pgdump",
})

_MAX_SMALL_MEMBER = 16 * 1024 * 1024  # manifest, config, key: small files


@dataclass(frozen=True, slots=True)
class BackupReport:
    """What an archive holds (the manifest without the member hashes)."""

    archive: str
    dialect: str
    schema_version: int
    tree_size: int
    checkpoint_size: int | None
    blobs: int
    blob_bytes: int
    keys: bool

    def to_json(self) -> dict[str, Any]:
        """Return the report for ``--json`` output."""
        return asdict(self)


class _HashingReader:
    """A read-only file wrapper that hashes and counts what passes through it."""

    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        self.size += len(data)
        return data


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> tuple[str, int]:
    """Add ``path`` as ``ROOT/name``; return its SHA-256 (hex) and size as copied."""
    with path.open("rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        info = tarfile.TarInfo(f"{ROOT}/{name}")
        info.size, info.mode, info.mtime = size, 0o600, int(time.time())
        reader = _HashingReader(handle)
        tar.addfile(info, reader)
    return reader.digest.hexdigest(), reader.size


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(f"{ROOT}/{name}")
    info.size, info.mode, info.mtime = len(data), 0o600, int(time.time())
    tar.addfile(info, _BytesReader(data))


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._data = memoryview(data)
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = bytes(self._data[self._at:end])
        self._at += len(chunk)
        return chunk


async def _add_blobs(tar: tarfile.TarFile, snapshot: Snapshot, blobs: FsBlobStore
                     ) -> tuple[int, int]:
    """Copy every blob the snapshot's evidence names; return (count, bytes)."""
    count = total = 0
    seen: set[str] = set()
    after = ""
    while page := await snapshot.evidence(after):
        for evidence_id, blob_id, size in page:
            after = evidence_id
            if blob_id in seen:
                continue
            seen.add(blob_id)
            try:
                digest, copied = _add_file(tar, f"blobs/{blob_id[:2]}/{blob_id[2:4]}/{blob_id}",
                                           blobs.blob_path(blob_id))
            except FileNotFoundError:
                raise BackupError(
                    f"evidence {evidence_id} names blob {blob_id}, which is missing from the "
                    "data directory; run 'exchange server check' and restore it from an "
                    "older backup") from None
            if digest != blob_id or copied != size:
                raise BackupError(
                    f"blob {blob_id} of evidence {evidence_id} is damaged in the data directory "
                    f"(content hashes to {digest}, {copied} bytes, want {size}); run "
                    "'exchange server check'")
            count += 1
            total += copied
    return count, total


async def make_backup(config: ServerConfig, output: Path, *, include_keys: bool) -> BackupReport:
    """Write a consistent archive of the server ``config`` describes to ``output`` (new file).

    Safe while the server runs. Raises :class:`BackupError` (nothing is left
    at ``output``) when the database cannot be snapshotted or a blob is
    missing or damaged, ``FileExistsError`` when ``output`` exists.
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(output)
    data_dir = config.data_dir
    key_path = data_dir / LOG_KEY_FILE
    if include_keys and not key_path.is_file():
        raise BackupError(f"--include-keys: no {LOG_KEY_FILE} in {str(data_dir)!r}")
    blobs = FsBlobStore(data_dir)
    dialect = "postgres" if config.database_url else "sqlite"
    with tempfile.TemporaryDirectory(prefix=".exchange-backup-", dir=output.parent) as work:
        snapshot_cm = (postgres_snapshot(config.database_url, Path(work))
                       if config.database_url else
                       sqlite_snapshot(data_dir / DATABASE_NAME, Path(work)))
        with atomic_writer(output, mode=0o600, exclusive=True) as handle:
            tar = tarfile.open(  # noqa: SIM115 (closed below, after the manifest)
                fileobj=handle, mode="w|", format=tarfile.PAX_FORMAT)
            async with snapshot_cm as snapshot:
                facts = await snapshot.facts()
                files: dict[str, str] = {}
                name = f"database/{snapshot.dump_name}"
                files[name] = _add_file(tar, name, snapshot.dump)[0]
                count, total = await _add_blobs(tar, snapshot, blobs)
            files[CONFIG_FILE] = _add_file(tar, CONFIG_FILE, data_dir / CONFIG_FILE)[0]
            if (data_dir / KEYS_FILE).is_file():  # the log-key history (public keys, notes)
                files[KEYS_FILE] = _add_file(tar, KEYS_FILE, data_dir / KEYS_FILE)[0]
            if include_keys:
                files[LOG_KEY_FILE] = _add_file(tar, LOG_KEY_FILE, key_path)[0]
                for rotation in read_rotations(data_dir):  # and every key that replaced it
                    files[rotation.key_file] = _add_file(
                        tar, rotation.key_file, data_dir / rotation.key_file)[0]
            checkpoint_size = (None if facts.checkpoint is None
                               else int(facts.checkpoint.split(b"\n")[1]))
            report = BackupReport(
                archive=str(output), dialect=dialect, schema_version=facts.schema_version,
                tree_size=facts.tree_size, checkpoint_size=checkpoint_size, blobs=count,
                blob_bytes=total, keys=include_keys,
            )
            manifest = {
                "format": ARCHIVE_FORMAT, "created_at": int(time.time()),
                "exchange_version": __version__, **report.to_json(),
                "checkpoint": (None if facts.checkpoint is None
                               else facts.checkpoint.decode("utf-8")),
                "files": files,
            }
            del manifest["archive"]
            _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
            tar.close()
    return report


# -- restore --------------------------------------------------------------------------


def _member_path(member: tarfile.TarInfo) -> str:
    """Return the member's name inside ``ROOT``; refuse anything outside the format."""
    if not member.isfile() or not member.name.startswith(ROOT + "/"):
        raise BackupError(f"archive member {member.name[:80]!r} is not part of an exchange "
                          "backup (wrong archive, or it was altered)")
    name = member.name[len(ROOT) + 1:]
    if name not in _PLAIN_MEMBERS and _BLOB_MEMBER.fullmatch(name) is None \
            and ROTATED_KEY_FILE.fullmatch(name) is None:
        raise BackupError(f"archive member {member.name[:80]!r} is not part of an exchange "
                          "backup (wrong archive, or it was altered)")
    if name in _PLAIN_MEMBERS - {"database/exchange.sqlite3", "database/exchange.pgdump"} \
            and member.size > _MAX_SMALL_MEMBER:
        raise BackupError(f"archive member {name!r} is implausibly large ({member.size} bytes)")
    return name


def _write_member(source: IO[bytes], target: Path) -> str:
    """Copy one member to a new file ``target`` (0600, fsynced); return its SHA-256 (hex)."""
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = hashlib.sha256()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        while data := source.read(COPY_BYTES):
            digest.update(data)
            out.write(data)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def _unpack(archive: Path, staging: Path) -> tuple[dict[str, Any], dict[str, str], int]:
    """Stream ``archive`` into ``staging``; return (manifest, file hashes, blob count)."""
    hashes: dict[str, str] = {}
    blobs = 0
    manifest: dict[str, Any] | None = None
    try:
        with tarfile.open(archive, mode="r|") as tar:
            for member in tar:
                name = _member_path(member)
                if manifest is not None:
                    raise BackupError("the archive continues after its manifest (altered?)")
                source = tar.extractfile(member)
                assert source is not None  # a regular file, checked above
                if name == MANIFEST:
                    manifest = _parse_manifest(source.read(_MAX_SMALL_MEMBER))
                    continue
                blob = _BLOB_MEMBER.fullmatch(name)
                if name in hashes or (staging / name).exists():
                    raise BackupError(f"archive member {name!r} appears twice (altered?)")
                digest = _write_member(source, staging / name)
                if blob is not None:
                    if digest != blob.group(3):
                        raise BackupError(f"blob {blob.group(3)} in the archive is damaged "
                                          f"(content hashes to {digest})")
                    blobs += 1
                else:
                    hashes[name] = digest
    except tarfile.TarError as err:
        raise BackupError(f"{str(archive)!r} is not a readable backup archive: {err}") from None
    if manifest is None:
        raise BackupError("the archive has no manifest: it is truncated or not a backup")
    return manifest, hashes, blobs


def _parse_manifest(data: bytes) -> dict[str, Any]:
    try:
        manifest = json.loads(data)
    except ValueError:
        raise BackupError("the archive's manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        raise BackupError(f"the archive's format is not {ARCHIVE_FORMAT!r}")
    return manifest


def _check_contents(manifest: dict[str, Any], hashes: dict[str, str], blobs: int) -> None:
    want = manifest.get("files")
    if not isinstance(want, dict) or want != hashes:
        missing = sorted(set(want or {}) ^ set(hashes)) if isinstance(want, dict) else []
        changed = [n for n in hashes if isinstance(want, dict) and want.get(n) not in
                   (None, hashes[n])]
        raise BackupError("the archive's files do not match its manifest "
                          f"(missing or extra: {missing}, changed: {changed})")
    if manifest.get("blobs") != blobs:
        raise BackupError(f"the archive holds {blobs} blobs, its manifest says "
                          f"{manifest.get('blobs')}")


def _check_target(data_dir: Path) -> None:
    if not data_dir.exists():
        return
    if not data_dir.is_dir():
        raise BackupError(f"{str(data_dir)!r} exists and is not a directory")
    extra = sorted(p.name for p in data_dir.iterdir() if p.name not in KEPT_ON_RESTORE)
    if extra:
        raise BackupError(
            f"{str(data_dir)!r} is not empty (holds {extra[0]!r}); restore into a new directory "
            f"(only {GUARD_FILE!r} may be there, and is kept)")


def _pg_restore(dump: Path, database_url: str) -> None:
    url, env = pg_tool_args(database_url)
    result = subprocess.run(
        [find_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--exit-on-error",
         "--single-transaction", f"--dbname={url}", str(dump)],
        capture_output=True, check=False, env=env,
    )
    if result.returncode != 0:
        last = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        raise BackupError(f"pg_restore failed (exit {result.returncode}): {last[0][:300]}; "
                          "the target database must exist and be empty")


def _set_database_url(config_file: Path, database_url: str | None) -> None:
    values = json.loads(config_file.read_bytes())
    if database_url is None:
        values.pop("database_url", None)
    else:
        values["database_url"] = database_url
    with atomic_writer(config_file, mode=0o600) as handle:
        handle.write((json.dumps(values, indent=2, sort_keys=True) + "\n").encode())


@contextlib.contextmanager
def _staging(data_dir: Path) -> Iterator[Path]:
    staging = data_dir.parent / f".{data_dir.name}.restoring-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o700, parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def restore_backup(archive: Path, data_dir: Path, *, database_url: str | None) -> BackupReport:
    """Restore ``archive`` into the new (or empty) data directory ``data_dir``.

    A PostgreSQL archive needs ``database_url``, an existing empty database,
    which the restored ``server.json`` then names. Raises :class:`BackupError`
    with nothing moved into ``data_dir`` when anything does not check.
    """
    data_dir = Path(data_dir)
    _check_target(data_dir)
    with _staging(data_dir) as staging:
        manifest, hashes, blobs = _unpack(Path(archive), staging)
        _check_contents(manifest, hashes, blobs)
        dialect = manifest.get("dialect")
        if dialect == "postgres":
            if database_url is None:
                raise BackupError("this backup holds a PostgreSQL dump: give --database with "
                                  "the URL of an existing, empty database")
            _pg_restore(staging / "database/exchange.pgdump", database_url)
        elif dialect == "sqlite":
            if database_url is not None:
                raise BackupError("this backup holds a SQLite database; --database is only for "
                                  "PostgreSQL backups")
            os.replace(staging / "database/exchange.sqlite3", staging / DATABASE_NAME)
        else:
            raise BackupError(f"the manifest names an unknown database dialect {dialect!r:.20}")
        shutil.rmtree(staging / "database")
        _set_database_url(staging / CONFIG_FILE, database_url)
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for item in sorted(staging.iterdir()):
            os.rename(item, data_dir / item.name)
        fsync_directory(data_dir)
    return BackupReport(
        archive=str(archive), dialect=str(dialect), schema_version=int(manifest["schema_version"]),
        tree_size=int(manifest["tree_size"]), checkpoint_size=manifest.get("checkpoint_size"),
        blobs=blobs, blob_bytes=int(manifest.get("blob_bytes", 0)),
        keys=(data_dir / LOG_KEY_FILE).is_file(),
    )
