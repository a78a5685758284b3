"""Log-key rotation end to end, and a hostile key swap: real server, real CLI.

The administrator stops the server and runs ``exchange server log-key
rotate``; clients that pinned the old key learn the new one from the
dual-signed transition and carry on, and ``audit verify`` (with a mirror made
before the rotation) passes. Then a hostile operator puts a fresh key in
place of the key in force, with no transition: the CLI refuses the log
(exit 3) and ``audit verify`` names the checkpoint.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from exchange.ops.logkey import current_key_file
from exchange.ops.rollback import GUARD_FILE
from exchange.transport.server import encode_signer_key
from tests.e2e.conftest import World, new_case
from tests.ops.test_readme_operations import bash, shell_block
from tests.server_harness import ServerProcess


def _restart(world: World, port: str) -> None:
    """Start the server again on the same port (so on the same URL as every logged request)."""
    world.deployment.processes[0] = ServerProcess(world.deployment.data_dir,
                                                  extra_args=["--port", port])


def test_rotation_keeps_clients_and_the_verifier_going(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    port = deployment.url.rsplit(":", 1)[1]
    case_id = new_case(world, "Operation New Key", "prosecutor2")
    first = tmp_path / "before.bin"
    first.write_bytes(b"before" * 500)
    world.cli("prosecutor", "upload", case_id, str(first))
    mirror = tmp_path / "mirror"
    world.cli("auditor", "audit", "verify", "--state", str(mirror))  # remembers the old key's

    old_key = world.cli("admin", "server", "log-key", "show", "--data-dir",
                        str(deployment.data_dir)).stdout.strip()
    # The README's steps, as written (systemctl stands for stopping and starting the server).
    steps = shell_block("Rotating the log key")
    assert steps[0] == "systemctl stop exchange" and steps[-1] == "systemctl start exchange"
    deployment.processes[0].stop()
    bash(steps[1:-1], {"/srv/exchange": str(deployment.data_dir)})
    _restart(world, port)
    shown = json.loads(world.cli("admin", "server", "log-key", "show", "--json", "--data-dir",
                                 str(deployment.data_dir)).stdout)
    assert shown["log_key"] != old_key
    assert shown["rotations"] == [{"index": shown["rotations"][0]["index"], "old_key": old_key,
                                   "new_key": shown["log_key"]}]

    listed = world.cli("prosecutor", "case", "list")
    assert case_id in listed.stdout and "the log's key changed" in listed.stderr
    after = tmp_path / "after.bin"
    after.write_bytes(b"after" * 500)
    world.cli("prosecutor", "upload", case_id, str(after))
    world.cli("prosecutor2", "pull", case_id, "--dest", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / case_id / "after.bin").read_bytes() == after.read_bytes()
    verified = world.cli("auditor", "audit", "verify", "--state", str(mirror), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    checked = world.cli("admin", "server", "check", "--data-dir", str(deployment.data_dir),
                        check=False)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_swapped_log_key_is_refused_and_named(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    port = deployment.url.rsplit(":", 1)[1]
    deployment.processes[0].stop()
    # The operator's forgery: a fresh key in place of the one in force, the guard moved
    # aside so that the server starts; no transition signed by the old key.
    key_file = current_key_file(deployment.data_dir)
    key_file.write_text(encode_signer_key(world.deployment.anchor.origin, bytes(range(32)))
                        + "\n")
    (deployment.data_dir / GUARD_FILE).rename(tmp_path / GUARD_FILE)
    _restart(world, port)
    world.cli("prosecutor2", "case", "list", check=False)  # grows the log: a new checkpoint
    time.sleep(1.5)

    refused = world.cli("prosecutor", "case", "list", check=False)
    assert refused.returncode == 3, refused.stderr
    assert "does not verify under the pinned log key" in refused.stderr
    audited = world.cli("auditor", "audit", "verify", "--state", str(tmp_path / "mirror"),
                        check=False)
    assert audited.returncode == 3, audited.stdout + audited.stderr
    assert "does not verify under the pinned log key" in audited.stderr
