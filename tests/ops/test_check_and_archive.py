"""``server check`` finds each kind of damage; backups and restores refuse damaged input.

One SQLite server gets a few uploads and is stopped; each test damages its
own copy of the data directory (or of the archive) in one way and expects
the precise complaint and exit status, with nothing half-written.
"""

from __future__ import annotations

import io
import json
import shutil
import sqlite3
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.audit.verify import verify_log
from tests.faults._tools import new_case
from tests.ops.test_backup_restore import cli, upload
from tests.server_harness import deployed, run


@pytest.fixture(scope="module")
def stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The data directory of a stopped SQLite server holding three evidence files."""
    base = tmp_path_factory.mktemp("check")
    with deployed(base, "sqlite") as d:
        async def fill() -> None:
            async with d.session("prosecutor") as pro:
                case_id, _ = await new_case(d, pro)
                for size in (10, 70_000, 1_000):
                    await upload(pro, case_id, bytes([size % 251]) * size)

        run(fill())
    yield base / "data"


@pytest.fixture
def copy(stopped: Path, tmp_path: Path) -> Path:
    target = tmp_path / "data"
    shutil.copytree(stopped, target)
    return target


def blobs(data_dir: Path) -> list[Path]:
    return sorted(p for p in (data_dir / "blobs").glob("??/??/*") if p.is_file())


def test_clean_directory_checks_clean(copy: Path) -> None:
    result = cli("server", "check", "--data-dir", str(copy), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["evidence"] == 3 and report["blobs"] == 3
    assert report["entries"] == report["checkpoint_size"] > 5


def test_check_finds_a_flipped_bit_and_a_missing_blob(copy: Path) -> None:
    flipped, gone = blobs(copy)[:2]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 1
    flipped.write_bytes(bytes(data))
    gone.unlink()
    result = cli("server", "check", "--data-dir", str(copy))
    assert result.returncode == 3
    err = result.stderr
    assert f"blob {flipped.name}: content hashes to" in err
    assert f"its blob {flipped.name} is damaged" in err
    assert f"its blob {gone.name} is missing" in err
    assert "3 problem(s) found" in err


def test_check_finds_an_altered_audit_entry(copy: Path) -> None:
    db = sqlite3.connect(copy / "exchange.sqlite3")
    try:
        entry = db.execute("SELECT entry FROM audit_entries WHERE idx = 3").fetchone()[0]
        altered = bytes(entry).replace(b'"outcome":"ok"', b'"outcome":"no"')
        assert altered != bytes(entry)
        db.execute("UPDATE audit_entries SET entry = ? WHERE idx = 3", (altered,))
        db.commit()
    finally:
        db.close()
    result = cli("server", "check", "--data-dir", str(copy), "--json")
    assert result.returncode == 3
    problems = json.loads(result.stdout)["problems"]
    assert problems and all(p.startswith("audit log: ") for p in problems)
    assert any("entry 3" in p or "entry 4" in p for p in problems), problems


def test_backup_refuses_a_damaged_blob(copy: Path, tmp_path: Path) -> None:
    victim = blobs(copy)[0]
    victim.write_bytes(victim.read_bytes()[:-1])
    archive = tmp_path / "b.tar"
    result = cli("server", "backup", "--data-dir", str(copy), "-o", str(archive))
    assert result.returncode == 1
    assert f"blob {victim.name}" in result.stderr and "damaged" in result.stderr
    assert "no archive was written" in result.stderr
    assert not archive.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture
def archive(copy: Path, tmp_path: Path) -> Path:
    path = tmp_path / "good.tar"
    result = cli("server", "backup", "--data-dir", str(copy), "-o", str(path))
    assert result.returncode == 0, result.stderr
    assert "without log.key" in result.stderr
    with tarfile.open(path) as tar:
        assert "exchange-backup/log.key" not in tar.getnames()
    return path


def rewrite(source: Path, target: Path, change: dict[str, bytes | None]) -> None:
    """Copy a tar, replacing (bytes) or dropping (None) the named members."""
    with tarfile.open(source) as old, tarfile.open(target, "w") as new:
        for member in old.getmembers():
            if member.name in change:
                data = change[member.name]
                if data is None:
                    continue
                member.size = len(data)
                new.addfile(member, io.BytesIO(data))
            else:
                new.addfile(member, old.extractfile(member))


def test_restore_refuses_altered_archives(archive: Path, tmp_path: Path) -> None:
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        blob = next(n for n in names if "/blobs/" in n)
        config = tar.extractfile("exchange-backup/server.json").read()  # type: ignore[union-attr]
    cases = {
        "blob": ({blob: b"not the content"}, "is damaged"),
        "config": ({"exchange-backup/server.json": config + b" "},
                   "do not match its manifest"),
        "manifest": ({"exchange-backup/manifest.json": None}, "has no manifest"),
    }
    for label, (change, complaint) in cases.items():
        bad = tmp_path / f"{label}.tar"
        rewrite(archive, bad, change)
        target = tmp_path / f"restored-{label}"
        result = cli("server", "restore", str(bad), "--data-dir", str(target))
        assert result.returncode == 1, (label, result.stderr)
        assert complaint in result.stderr, (label, result.stderr)
        assert not target.exists(), label
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_restore_refuses_foreign_members_and_busy_targets(archive: Path, tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar"
    with tarfile.open(archive) as old, tarfile.open(evil, "w") as new:
        info = tarfile.TarInfo("exchange-backup/../../escape")
        info.size = 1
        new.addfile(info, io.BytesIO(b"x"))
        for member in old.getmembers():
            new.addfile(member, old.extractfile(member))
    result = cli("server", "restore", str(evil), "--data-dir", str(tmp_path / "r"))
    assert result.returncode == 1 and "not part of an exchange backup" in result.stderr
    assert not (tmp_path.parent / "escape").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    result = cli("server", "restore", str(archive), "--data-dir", str(busy))
    assert result.returncode == 1 and "is not empty" in result.stderr
    assert sorted(p.name for p in busy.iterdir()) == ["notes.txt"]


def test_restored_log_matches_the_original(archive: Path, copy: Path, tmp_path: Path) -> None:
    target = tmp_path / "restored"
    result = cli("server", "restore", str(archive), "--data-dir", str(target))
    assert result.returncode == 0, result.stderr
    assert "holds no log.key" in result.stderr
    shutil.copy2(copy / "log.key", target / "log.key")
    vkey = cli("server", "log-key", "show", "--data-dir", str(target))
    assert vkey.returncode == 0 and vkey.stdout.count("\n") == 1
    same = cli("server", "log-key", "show", "--data-dir", str(copy))
    assert vkey.stdout == same.stdout

    def entries(path: Path) -> tuple[list[bytes], bytes]:
        db = sqlite3.connect(path / "exchange.sqlite3")
        try:
            rows = [bytes(r[0]) for r in db.execute("SELECT entry FROM audit_entries ORDER BY idx")]
            note = db.execute("SELECT note FROM audit_checkpoints ORDER BY size DESC").fetchone()
            return rows, bytes(note[0])
        finally:
            db.close()

    restored_entries, note = entries(target)
    assert restored_entries == entries(copy)[0]
    assert verify_log(restored_entries, vkey.stdout.strip(), note).ok
    checked = cli("server", "check", "--data-dir", str(target), "--log-key", vkey.stdout.strip())
    assert checked.returncode == 0, checked.stderr
