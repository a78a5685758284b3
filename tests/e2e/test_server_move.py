"""Moving a server to a new URL, end to end: real server processes, the real CLI.

Another spelling of the same server (``localhost`` for ``127.0.0.1``) is
refused with an error that says so, not a keystore hint. The administrator
records the move (``exchange server move``); a client still on the old URL
follows once it verifies the statement, and its state folder serves the new
URL too; the server refuses to start under a URL the log does not record;
after the restart on the new URL, ``audit verify`` passes over entries
signed for the old URL before the move and for the new one after it.
"""

from __future__ import annotations

import socket
from pathlib import Path

from exchange.client.config import state_dir_for
from tests.e2e.conftest import World, new_case
from tests.ops.test_readme_operations import shell_block
from tests.server_harness import ServerProcess


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_move_the_server_and_verify_the_log(world: World, tmp_path: Path) -> None:
    deployment = world.deployment
    old_url = deployment.url
    case_id = new_case(world, "Operation Moving Day", "prosecutor2")  # entries before the move

    # Another spelling of the same server: named as such, exit 1, no keystore hint.
    other = world.cli("prosecutor", "case", "list", check=False,
                      extra_env={"EXCHANGE_URL": old_url.replace("127.0.0.1", "localhost")})
    assert other.returncode == 1, other.stderr
    assert "signed for another URL of this server" in other.stderr
    assert old_url in other.stderr and "keystore" not in other.stderr

    new_url = f"http://127.0.0.1:{_free_port()}"
    # The README's first step, with this test's URL.
    readme = shell_block("Moving a server")
    assert readme[0].startswith("exchange server move --public-url https://exchange.new.example")
    moved = world.cli("admin", "server", "move", "--public-url", new_url, "--json")
    assert f'"server_url": "{new_url}"' in moved.stdout

    # Still reachable at the old address: the prosecutor's client follows, verified.
    followed = world.cli("prosecutor", "case", "list")
    assert case_id in followed.stdout
    assert f"the server moved to {new_url}" in followed.stderr
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
    world.cli("prosecutor2", "pull", case_id, "--dest", str(tmp_path / "pulled"))
    assert (tmp_path / "pulled" / case_id / upload.name).read_bytes() == upload.read_bytes()

    verified = world.cli("auditor", "audit", "verify", "--state", str(tmp_path / "mirror"),
                         check=False)
    assert verified.returncode == 0, verified.stdout + verified.stderr
