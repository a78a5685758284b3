"""Backups of a running server, restore, ``server check``, and the rollback guard, end to end.

Against real ``exchange serve`` processes on SQLite and PostgreSQL: uploads
keep running while ``exchange server backup`` works; the archive restores
into a new data directory (a fresh PostgreSQL database for the PostgreSQL
backend) that ``exchange server check`` finds clean and that holds every
evidence committed before the backup started. Started where the original
server had published a newer checkpoint, the restored server refuses to
start (exit 3) until told ``--accept-rollback``, which is recorded; a client
that saw the newer log then refuses the server with exit 3 and says the log
was rolled back.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from exchange.ops.rollback import DECISIONS_FILE, GUARD_FILE
from exchange.transport.client import SignedSession
from tests import pg, statements
from tests.faults._tools import TUS, b64, new_case, patch, sha256_hex
from tests.server_harness import (
    Deployment,
    ServerProcess,
    deployed,
    run,
    server_anchor,
    write_test_keystore,
)
from tests.support import ROOT

PASSPHRASE = "backup test passphrase"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``exchange ARGS`` as a subprocess (as an administrator would)."""
    child = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    child["PYTHONPATH"] = str(ROOT)
    child["EXCHANGE_TEST_WEAK_KDF"] = "1"  # the test keystores use cheap Argon2 parameters
    child.update(env or {})
    return subprocess.run([sys.executable, "-m", "exchange", *args], capture_output=True,
                          text=True, env=child, timeout=180, check=False)


async def upload(session: SignedSession, case_id: str, data: bytes) -> str:
    """Create, send and commit one upload; return its evidence id."""
    response = await session.request("POST", f"/v1/cases/{case_id}/uploads",
                                     headers={**TUS, "Upload-Length": str(len(data))})
    async with response:
        assert response.status == 201, await response.text()
        path = response.headers["Location"]
    async with await patch(session, path, 0, data) as response:
        assert response.status == 204, await response.text()
    head = await statements.case_head(session, await server_anchor(session), case_id)
    response = await session.request("POST", path + "/commit", json={
        "sealed_manifest": b64(b"m"), "ciphertext_sha256": sha256_hex(data), "epoch": 1,
        "case_head": head})
    async with response:
        assert response.status == 201, await response.text()
        return str((await response.json())["evidence_id"])


async def backup_under_load(d: Deployment, archive: Path) -> tuple[set[str], set[str]]:
    """Back up while uploads run; return (evidence committed before, evidence committed after)."""
    rng = random.Random(7)
    before: set[str] = set()
    during: set[str] = set()
    stop = asyncio.Event()
    async with d.session("prosecutor") as pro:
        case_id, _ = await new_case(d, pro)
        for _ in range(3):
            before.add(await upload(pro, case_id, rng.randbytes(rng.randint(1, 300_000))))

        async def load() -> None:
            while not stop.is_set():
                during.add(await upload(pro, case_id, rng.randbytes(rng.randint(1, 300_000))))

        task = asyncio.create_task(load())
        await asyncio.sleep(0.2)
        args = ["server", "backup", "--data-dir", str(d.data_dir), "-o", str(archive),
                "--include-keys", "--json"]
        if d.database_url:
            args += ["--database", d.database_url]
        result = await asyncio.to_thread(cli, *args)
        await asyncio.sleep(0.3)
        stop.set()
        await task
        after = await upload(pro, case_id, b"after the backup")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["blobs"] >= len(before) and report["keys"] is True
    assert during, "no upload ran while the backup was made"
    return before, during | {after}


def evidence_ids(data_dir: Path, database_url: str | None) -> set[str]:
    """Return the evidence ids in a data directory's database (read directly)."""
    async def read() -> set[str]:
        if database_url:
            conn = await asyncpg.connect(database_url)
            try:
                return {r[0] for r in await conn.fetch("SELECT id FROM evidence")}
            finally:
                await conn.close()
        db = sqlite3.connect(data_dir / "exchange.sqlite3")
        try:
            return {r[0] for r in db.execute("SELECT id FROM evidence")}
        finally:
            db.close()

    return run(read())


def empty_database() -> tuple[str, str]:
    """Return (name, dsn) of a new, empty (unmigrated) PostgreSQL database."""
    server = pg.server()
    name = f"{server.prefix}restore_{os.urandom(3).hex()}"

    async def create() -> None:
        admin = await asyncpg.connect(server.admin_dsn)
        try:
            await admin.execute(f"CREATE DATABASE {name} ENCODING 'UTF8' TEMPLATE template0")
        finally:
            await admin.close()

    run(create())
    return name, server.dsn(name)


def client_args(d: Deployment, url: str, tmp: Path) -> list[str]:
    """CLI connection flags of a coordinator in no case (own keystore and state directory)."""
    keystore = tmp / "coordinator2.keystore"
    if not keystore.exists():
        write_test_keystore(keystore, d.cast["coordinator2"], PASSPHRASE)
        (tmp / "pass").write_text(PASSPHRASE + "\n")
    return ["--url", url, "--keystore", str(keystore), "--passphrase-file", str(tmp / "pass"),
            "--trust", str(d.trust_file), "--state-dir", str(tmp / "state")]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_backup_while_serving_restore_check_and_rollback_guard(
        tmp_path: Path, backend: str) -> None:
    archive = tmp_path / "backup.tar"
    restored = tmp_path / "restored"
    database = restored_db = None
    (tmp_path / "live").mkdir()
    with deployed(tmp_path / "live", backend) as d:
        before, after = run(backup_under_load(d, archive))
        # A client sees the log as it is now, newer than the backup.
        seen = cli("case", "list", *client_args(d, d.url, tmp_path))
        assert seen.returncode == 0, seen.stderr
        live_check = cli("server", "check", "--data-dir", str(d.data_dir),
                         *(["--database", d.database_url] if d.database_url else []))
        assert live_check.returncode == 0, live_check.stderr
        assert "no errors were found" in live_check.stderr
        database, live_url = d.database_url, d.url
    assert archive.stat().st_mode & 0o077 == 0

    restore_args = ["server", "restore", str(archive), "--data-dir", str(restored)]
    if backend == "postgres":
        restored_name, restored_db = empty_database()
        restore_args += ["--database", restored_db]
    result = cli(*restore_args)
    assert result.returncode == 0, result.stderr
    checked = cli("server", "check", "--data-dir", str(restored), "--json")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["problems"] == []
    restored_evidence = evidence_ids(restored, restored_db)
    assert before <= restored_evidence
    assert not after <= restored_evidence  # the last upload came after the backup
    assert report["evidence"] == len(restored_evidence)

    # Restored where the live server had published a newer checkpoint: refused at start-up.
    (restored / GUARD_FILE).write_bytes((tmp_path / "live" / "data" / GUARD_FILE).read_bytes())
    refused = cli("serve", "--data-dir", str(restored), "--port", "0")
    assert refused.returncode == 3, refused.stderr
    assert "refusing to start" in refused.stderr and "--accept-rollback" in refused.stderr
    assert not (restored / DECISIONS_FILE).exists()
    check_rolled = cli("server", "check", "--data-dir", str(restored))
    assert check_rolled.returncode == 0  # the data is whole; serve decides on the rollback
    assert "will refuse to start unless told --accept-rollback" in check_rolled.stderr

    # Same URL as before (clients keep their state per server URL).
    port = live_url.rsplit(":", 1)[1].rstrip("/")
    server = ServerProcess(restored, extra_args=["--accept-rollback", "--port", port])
    try:
        assert any("--accept-rollback" in line for line in server.lines)
        decisions = [json.loads(line) for line in
                     (restored / DECISIONS_FILE).read_text().splitlines()]
        assert len(decisions) == 1 and decisions[0]["decision"] == "accept-rollback"
        assert decisions[0]["database_size"] < decisions[0]["published_size"]
        assert server.url == live_url
        rolled = cli("case", "list", *client_args(d, server.url, tmp_path))
        assert rolled.returncode == 3, rolled.stderr
        assert "rolled back" in rolled.stderr and "Restoring a backup" in rolled.stderr
    finally:
        server.stop()
    # Once accepted, the guard follows the restored log: a plain start works again.
    again = ServerProcess(restored)
    assert again.stop() == 0
    if backend == "postgres":
        run(pg.server().drop(restored_name))
    assert database is None or database != restored_db
