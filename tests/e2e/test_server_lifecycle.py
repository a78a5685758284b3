"""A server's lifecycle end to end: a move, a log-key rotation, a hostile key swap.

Real server processes and the real CLI, one server for the module (the tests
run in this order and each continues the previous one's log).

Moving: another spelling of the same server (``localhost`` for ``127.0.0.1``)
is refused with an error that says so, not a keystore hint. The administrator
records the move (``exchange server move``); a client still on the old URL
follows once it verifies the statement, and its state folder serves the new
URL too; the server refuses to start under a URL the log does not record;
after the restart, ``audit verify`` passes over entries signed for the old
URL before the move and for the new one after it.

Rotating: the README's steps (``exchange server log-key rotate``, server
stopped); clients that pinned the old key learn the new one from the
dual-signed transition and carry on; ``audit verify`` (with a mirror made
before the rotation) and ``server check`` pass.

Hostile: the operator puts a fresh key in place of the key in force, with no
transition: the CLI refuses the log (exit 3) and ``audit verify`` names the
checkpoint.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from exchange.client.config import state_dir_for
from exchange.ops.logkey import current_key_file
from exchange.ops.rollback import GUARD_FILE
from exchange.ports import unused_port
from exchange.transport.server import encode_signer_key
from tests.e2e.conftest import World
from tests.e2e.test_json_outputs import _valid
from tests.ops.test_readme_operations import bash, shell_block
from tests.server_harness import ServerProcess


def _mirror(world: World) -> Path:
    """The auditor's audit mirror, kept from one test to the next."""
    return world.base / "auditor-mirror"


def test_move_the_server_and_verify_the_log(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    old_url = deployment.url  # the cast's enrolments were signed for it: entries before the move

    # Another spelling of the same server: named as such, exit 1, no keystore hint.
    other = world.cli("prosecutor", "case", "list", check=False,
                      extra_env={"EXCHANGE_URL": old_url.replace("127.0.0.1", "localhost")})
    assert other.returncode == 1, other.stderr
    assert "signed for another URL of this server" in other.stderr
    assert old_url in other.stderr and "keystore" not in other.stderr

    new_url = f"http://127.0.0.1:{unused_port()}"
    # The README's first step, with this test's URL.
    readme = shell_block("Moving a server")
    assert readme[0].startswith("exchange server move --public-url https://exchange.new.example")
    moved = world.cli("admin", "server", "move", "--public-url", new_url, "--json")
    assert _valid("server-move", moved.stdout)["server_url"] == new_url

    # Still reachable at the old address: the prosecutor's client follows, verified.
    followed = world.cli("prosecutor", "case", "create", "--title", "Operation Moving Day")
    assert f"the server moved to {new_url}" in followed.stderr
    case_id = followed.stdout.strip()
    world.cli("prosecutor", "case", "add-member", case_id, "prosecutor2")
    state_root = world.state_dir("prosecutor")
    link = state_dir_for(state_root, new_url, "prosecutor")
    assert link.is_symlink() and link.resolve() == state_dir_for(
        state_root, old_url, "prosecutor").resolve()

    # Restart: the old URL is refused (the log records the new one), the new one serves.
    deployment.processes[0].stop()
    port = new_url.rsplit(":", 1)[1]
    refused = world.cli("admin", "serve", "--data-dir", str(deployment.data_dir), "--port", "0",
                        check=False)
    assert refused.returncode == 2 and f"--public-url {new_url}" in refused.stderr
    deployment.processes[0] = ServerProcess(deployment.data_dir, extra_args=["--port", port])
    assert deployment.url == new_url

    upload = tmp_path / "after-the-move.bin"
    upload.write_bytes(b"moved" * 1000)
    world.cli("prosecutor", "upload", case_id, str(upload))  # its state folder, by the link

    verified = world.cli("auditor", "audit", "verify", "--state", str(_mirror(world)),
                         check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def _restart(world: World, port: str) -> None:
    """Start the server again on the same port (so on the same URL as every logged request)."""
    world.deployment.processes[0] = ServerProcess(world.deployment.data_dir,
                                                  extra_args=["--port", port])


def test_rotation_keeps_clients_and_the_verifier_going(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    port = deployment.url.rsplit(":", 1)[1]
    mirror = _mirror(world)  # made before the rotation: remembers a checkpoint of the old key
    old_key = deployment.log_vkey
    # The README's steps, as written (systemctl stands for stopping and starting the server).
    steps = shell_block("Rotating the log key")
    assert steps[0] == "systemctl stop exchange" and steps[-1] == "systemctl start exchange"
    deployment.processes[0].stop()
    bash(steps[1:-1], {"/srv/exchange": str(deployment.data_dir)})
    _restart(world, port)
    shown = _valid("server-log-key-show", world.cli(
        "admin", "server", "log-key", "show", "--json", "--data-dir",
        str(deployment.data_dir)).stdout)
    assert shown["log_key"] != old_key
    assert shown["rotations"] == [{"index": shown["rotations"][0]["index"], "old_key": old_key,
                                   "new_key": shown["log_key"]}]

    listed = world.cli("prosecutor", "case", "list")
    assert "the log's key changed" in listed.stderr
    case_id = re.findall(r"case-[0-9a-z]+", listed.stdout)[0]
    after = tmp_path / "after.bin"
    after.write_bytes(b"after" * 500)
    world.cli("prosecutor", "upload", case_id, str(after))
    world.cli("prosecutor2", "pull", case_id, "--dest", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / case_id / "after.bin").read_bytes() == after.read_bytes()
    verified = world.cli("auditor", "audit", "verify", "--state", str(mirror), check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    # A backup with the keys holds the whole key history: the restored copy checks clean.
    archive, restored = tmp_path / "backup.tar", tmp_path / "restored"
    world.cli("admin", "server", "backup", "--data-dir", str(deployment.data_dir), "-o",
              str(archive), "--include-keys")
    world.cli("admin", "server", "restore", str(archive), "--data-dir", str(restored))
    checked = world.cli("admin", "server", "check", "--data-dir", str(restored), check=False)
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
