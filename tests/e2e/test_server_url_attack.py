"""A hostile operator serves under a public URL no ``server.url`` statement records.

The operator has the data directory: it moves its own copy of ``trust.json``
aside, so the server's start-up check has nothing to compare the URL with,
and serves under a URL of its choosing. A client still signing for the
recorded URL is told the "new" one (421 ``wrong-server-url``), re-reads the
signed directory, finds another URL recorded there and refuses (exit 3)
before its upload sends a byte; the requests the client signed while checking
are named by the verifier as signed for a URL no statement records.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from exchange.ports import unused_port
from tests.e2e.conftest import World
from tests.server_harness import ServerProcess


def _rows(data_dir: Path, table: str) -> int:
    db = sqlite3.connect(data_dir / "exchange.sqlite3")
    try:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        db.close()


def _serve(world: World, port: str, *extra: str) -> None:
    world.deployment.processes[0] = ServerProcess(world.deployment.data_dir,
                                                  extra_args=["--port", port, *extra])


def test_a_url_no_statement_records_is_refused_and_named(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    # A legitimate move first, so that the signed directory records a URL.
    recorded = f"http://127.0.0.1:{unused_port()}"
    world.cli("admin", "server", "move", "--public-url", recorded)
    port = recorded.rsplit(":", 1)[1]
    deployment.processes[0].stop()
    _serve(world, port)
    assert deployment.url == recorded
    case_id = world.cli("prosecutor", "case", "create", "--title", "Operation Signpost",
                        extra_env={"EXCHANGE_URL": recorded}).stdout.strip()

    # The operator's forgery.
    pinned = tmp_path / "pinned-trust.json"  # the participant's own copy of the anchor
    pinned.write_bytes((deployment.data_dir / "trust.json").read_bytes())
    deployment.processes[0].stop()
    aside = tmp_path / "trust.json"
    (deployment.data_dir / "trust.json").rename(aside)
    forged = f"http://127.0.0.1:{unused_port()}"
    _serve(world, port, "--public-url", forged)
    evidence, sessions = (_rows(deployment.data_dir, t) for t in ("evidence", "upload_sessions"))
    try:
        secret = tmp_path / "secret.bin"
        secret.write_bytes(b"never sent " * 100)
        refused = world.cli("prosecutor", "upload", case_id, str(secret), check=False,
                            extra_env={"EXCHANGE_URL": recorded,
                                       "EXCHANGE_TRUST": str(pinned)})
        assert refused.returncode == 3, refused.stderr
        assert f"the server says its public URL is {forged}" in refused.stderr
        assert f"the verified directory records {recorded}" in refused.stderr
        assert "moved to" not in refused.stderr
        assert _rows(deployment.data_dir, "evidence") == evidence
        assert _rows(deployment.data_dir, "upload_sessions") == sessions
    finally:
        deployment.processes[0].stop()
        aside.rename(deployment.data_dir / "trust.json")
        _serve(world, port)

    # The requests signed while the forged URL was claimed stand in the log: named.
    audited = world.cli("auditor", "audit", "verify", "--json", "--state",
                        str(tmp_path / "mirror"), check=False)
    assert audited.returncode == 3, audited.stdout + audited.stderr
    findings = json.loads(audited.stdout)["findings"]
    assert findings and all(forged in json.dumps(f) for f in findings), findings
