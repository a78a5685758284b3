"""Upgrading a data directory made by an older release (schema 2), as the README says.

The fixture ``tests/fixtures/release-bea1a66-sqlite.tar.gz`` was made by that
release's own commands (``tests/fixtures/make_previous_release.py``). The
upgrade path: ``server migrate --dry-run`` lists and changes nothing,
``server check`` refuses an outdated schema, ``server migrate`` applies, the
old log and evidence check clean, ``serve`` prints its schema status line,
and today's client reads what the old one wrote.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pytest

from exchange.storage import schema
from tests.ops.test_backup_restore import cli
from tests.server_harness import ServerProcess

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "release-bea1a66-sqlite.tar.gz"
KNOWN = schema.known_version("sqlite")


@pytest.fixture
def old(tmp_path: Path) -> Path:
    with tarfile.open(FIXTURE) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp_path, filter="data")
        else:  # Python before 3.11.4 (Debian 12's 3.11.2) has no extraction filters
            members = tar.getmembers()
            unsafe = [m.name for m in members if not (m.isfile() or m.isdir())
                      or m.name.startswith("/") or ".." in m.name.split("/")]
            assert not unsafe, f"the fixture holds members that are not plain: {unsafe}"
            tar.extractall(tmp_path, members=members)
    return tmp_path


def db_version(data: Path) -> int:
    db = sqlite3.connect(data / "exchange.sqlite3")
    try:
        return int(db.execute("SELECT max(version) FROM schema_version").fetchone()[0])
    finally:
        db.close()


def test_upgrade_previous_release(old: Path) -> None:
    data = old / "data"
    fixture = json.loads((old / "fixture.json").read_text())
    assert db_version(data) == fixture["schema_version"] == 2 < KNOWN

    dry = cli("server", "migrate", "--data-dir", str(data), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    status = json.loads(dry.stdout)
    assert status["version"] == 2 and status["known"] == KNOWN
    assert status["pending"][0] == "0003_membership_history"
    assert "dry run: nothing was changed" in dry.stderr
    assert db_version(data) == 2

    outdated = cli("server", "check", "--data-dir", str(data))
    assert outdated.returncode == 3 and "run 'exchange server migrate' first" in outdated.stderr

    shutil.copytree(data, old / "untouched")
    migrated = cli("server", "migrate", "--data-dir", str(data), "--json")
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["applied"] == status["pending"]
    assert db_version(data) == KNOWN
    again = cli("server", "migrate", "--data-dir", str(data))
    assert again.returncode == 0 and f"version {KNOWN} of {KNOWN}" in again.stderr

    checked = cli("server", "check", "--data-dir", str(data), "--json")
    report = json.loads(checked.stdout)
    assert report["evidence"] == 1 and report["blobs"] == 1 and report["entries"] > 3
    assert report["schema_version"] == KNOWN
    assert report["problems"] == []

    server = ServerProcess(data)
    try:
        assert f"exchange: database schema version {KNOWN} of {KNOWN} (sqlite)\n" in server.lines
        (old / "pass").write_text(fixture["passphrase"] + "\n")
        # A log made before signed statements has no trust anchor: its enrolments and
        # cases cannot be given statements after the fact, so clients refuse to trust it
        # (clearly, exit 4) instead of believing the server's tables.
        listed = cli("case", "list", "--json", "--url", server.url,
                     "--keystore", str(old / "prosecutor-01.keystore"),
                     "--passphrase-file", str(old / "pass"), "--log-key", fixture["log_key"],
                     "--state-dir", str(old / "state"))
        assert listed.returncode == 4, listed.stderr
        assert "no trust anchor is pinned" in listed.stderr
    finally:
        assert server.stop() == 0

    # Without the explicit step, serve migrates at start-up and says so.
    server = ServerProcess(old / "untouched")
    try:
        line = next(x for x in server.lines if "database schema" in x)
        assert line.startswith(f"exchange: database schema version {KNOWN} of {KNOWN} (sqlite); "
                               "migrated from version 2: 0003_membership_history")
    finally:
        server.stop()


def test_old_log_verifies_after_upgrade(old: Path) -> None:
    """A log from before the request binding verifies: its proof reads name no sizes.

    That release logged ``audit.read`` proof entries without ``details.old`` or
    ``details.index``; the verifier binds the sizes an entry restates, and the
    signed query the entry embeds binds the rest (``exchange/audit/actions.py``).
    """
    data = old / "data"
    assert cli("server", "migrate", "--data-dir", str(data)).returncode == 0
    checked = cli("server", "check", "--data-dir", str(data))
    assert checked.returncode == 0, checked.stderr
