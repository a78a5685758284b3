"""SQLite start-up: a migration that fails reports its own error, not the ROLLBACK's.

SQLite ends a transaction by itself on an I/O error or a full disk; a blind
``ROLLBACK`` then raises "cannot rollback - no transaction is active" and the
real cause disappears into ``__context__``. The disk is made to fail for real:
a child process lowers its file-size limit (``RLIMIT_FSIZE``) step by step
while it creates fresh databases, so every point of the migration fails once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

_CHILD = r"""
import asyncio, json, resource, signal, sys
from pathlib import Path
from exchange.storage.sqlite_store import SqliteStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
base = Path(sys.argv[1])
for limit in range(4096, 1_000_000, 4096):  # stops at the first size that fits
    folder = base / str(limit)
    folder.mkdir()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
    try:
        store = asyncio.run(SqliteStore.open(folder / "db.sqlite3"))
    except BaseException as err:
        outcome = {"type": type(err).__name__, "message": str(err)}
    else:
        outcome = {"type": "opened", "message": ""}
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    print(json.dumps(outcome), flush=True)
    if outcome["type"] == "opened":
        break
"""


def test_failed_migration_reports_the_disk_error(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path)], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=True)
    outcomes = [json.loads(line) for line in done.stdout.splitlines()]
    failures = [o for o in outcomes if o["type"] != "opened"]
    assert outcomes[-1]["type"] == "opened", "the migration never fit under the limits"
    assert len(failures) >= 3, outcomes
    hidden = [f for f in failures if "no transaction is active" in f["message"]]
    assert not hidden, hidden
    for failure in failures:
        assert failure["type"] == "StorageError", failure  # typed, naming the file
        assert "db.sqlite3" in failure["message"]
        assert "disk i/o error" in failure["message"].lower() or "full" in failure["message"]
