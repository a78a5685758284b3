"""``exchange agent``: unlock once, use from every command, private socket, idle timeout.

Against the real server of ``world``: with the agent holding the identity,
commands run with no passphrase source at all (so the keystore cannot have
been unlocked by them), uploads sign and pulls unwrap through the agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.client.agent import AgentError, agent_request
from tests.e2e.conftest import World

NOBODY = 65534


@pytest.fixture
def sock() -> Iterator[Path]:
    """A short socket path (AF_UNIX paths are limited to 107 bytes) in a fresh directory."""
    base = Path(tempfile.mkdtemp(prefix="xa-"))
    path = base / "agent" / "agent.sock"
    try:
        yield path
    finally:
        with contextlib.suppress(AgentError):
            agent_request({"op": "stop"}, path=path)
        shutil.rmtree(base, ignore_errors=True)


def _agent_env(world: World, name: str, sock: Path) -> dict[str, str]:
    env = world.env(name)
    env["EXCHANGE_AGENT_SOCK"] = str(sock)
    return env


def _exchange(env: dict[str, str], *args: str,
              unset: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in env.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "exchange", *args], env=env, text=True,
                          capture_output=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, start_new_session=True)


def _wait_gone(path: Path, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not path.exists():
            return True
        time.sleep(0.1)
    return False


def test_agent_unlocks_once_and_every_command_uses_it(world: World, sock: Path,
                                                      tmp_path: Path) -> None:
    env = _agent_env(world, "prosecutor", sock)
    started = _exchange(env, "agent", "start")
    assert started.returncode == 0, started.stderr
    assert "agent started" in started.stderr
    assert stat.S_IMODE(sock.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    status = json.loads(_exchange(env, "agent", "status", "--json").stdout)
    assert status["running"] and status["identities"] == ["prosecutor"]

    # No passphrase anywhere and no terminal: only the agent can sign these requests.
    no_secret = ("EXCHANGE_PASSPHRASE",)
    created = _exchange(env, "case", "create", "--title", "Agent case", unset=no_secret)
    assert created.returncode == 0, created.stderr
    case_id = created.stdout.strip()
    assert _exchange(env, "case", "add-member", case_id, "coordinator",
                     unset=no_secret).returncode == 0
    listed = _exchange(env, "case", "list", "--json", unset=no_secret)
    assert listed.returncode == 0, listed.stderr
    assert case_id in listed.stdout and "Agent case" in listed.stdout  # title unwrapped
    evidence = tmp_path / "ledger.txt"
    evidence.write_text("signed through the agent\n")
    up = _exchange(env, "upload", case_id, str(evidence), unset=no_secret)
    assert up.returncode == 0, up.stderr
    dest = tmp_path / "dest"
    pulled = _exchange(env, "pull", case_id, "--dest", str(dest), unset=no_secret)
    assert pulled.returncode == 0, pulled.stderr
    assert (dest / case_id / "ledger.txt").read_text() == "signed through the agent\n"

    stopped = _exchange(env, "agent", "stop")
    assert stopped.returncode == 0 and not sock.exists()
    after = _exchange(env, "case", "list", unset=no_secret)
    assert after.returncode == 2 and "no terminal" in after.stderr


def test_agent_for_another_keystore_is_not_used(world: World, sock: Path) -> None:
    env = _agent_env(world, "coordinator", sock)
    assert _exchange(env, "agent", "start").returncode == 0
    other = _agent_env(world, "prosecutor", sock)
    done = _exchange(other, "case", "list", unset=("EXCHANGE_PASSPHRASE",))
    assert done.returncode == 2  # fell back to the keystore, which needs a passphrase


def test_agent_forgets_after_idle_timeout(world: World, sock: Path) -> None:
    env = _agent_env(world, "prosecutor", sock)
    started = _exchange(env, "agent", "start", "--idle-timeout", "1.5")
    assert started.returncode == 0, started.stderr
    assert _wait_gone(sock, 10.0), "the agent outlived its idle timeout"
    assert _exchange(env, "agent", "status").returncode == 1


def test_client_refuses_an_agent_directory_others_can_enter(world: World, sock: Path) -> None:
    sock.parent.mkdir(mode=0o755)
    sock.parent.chmod(0o755)
    env = _agent_env(world, "prosecutor", sock)
    done = _exchange(env, "agent", "start")
    assert done.returncode == 4 and "expected 0700" in done.stderr


def _connect_as(uid: int, path: Path) -> dict[str, object]:
    """Return the agent's answer to ``list`` from a forked child running as ``uid``."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 0
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                raw.settimeout(10)
                raw.connect(str(path))
                raw.sendall(b'{"op": "list"}\n')
                os.write(write_end, raw.makefile("rb").readline())
        except BaseException as err:
            os.write(write_end, json.dumps({"child_error": repr(err)}).encode())
            code = 1
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    answer: dict[str, object] = json.loads(data)
    return answer


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another uid")
def test_agent_refuses_a_peer_of_another_uid(world: World, sock: Path) -> None:
    """Even with the directory and socket opened up by mistake, SO_PEERCRED stops a stranger."""
    env = _agent_env(world, "prosecutor", sock)
    assert _exchange(env, "agent", "start").returncode == 0
    sock.parent.parent.chmod(0o711)
    sock.parent.chmod(0o711)
    sock.chmod(0o666)
    try:
        answer = _connect_as(NOBODY, sock)
    finally:
        sock.parent.chmod(0o700)  # so the fixture's client can stop the agent
    assert answer.get("ok") is False, answer
    assert f"uid {NOBODY} may not use this agent" in str(answer["error"])
    assert "identities" not in answer


def test_client_commands_take_the_passphrase_from_a_command(world: World, sock: Path,
                                                            tmp_path: Path) -> None:
    secret = tmp_path / "pass"
    secret.write_text(world.env("prosecutor")["EXCHANGE_PASSPHRASE"] + "\n")
    env = {**_agent_env(world, "prosecutor", sock),
           "EXCHANGE_PASSPHRASE_COMMAND": f"cat {secret}"}
    done = _exchange(env, "case", "list", "--json", unset=("EXCHANGE_PASSPHRASE",))
    assert done.returncode == 0, done.stderr


def _raw(path: Path, line: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
        raw.settimeout(10)
        raw.connect(str(path))
        raw.sendall(line)
        answer: dict[str, object] = json.loads(raw.makefile("rb").readline())
    return answer


def test_agent_answers_malformed_requests_with_errors_and_keeps_serving(
    world: World, sock: Path,
) -> None:
    env = _agent_env(world, "prosecutor", sock)
    assert _exchange(env, "agent", "start").returncode == 0
    for line in (b"not json\n", b"[1, 2]\n", b'{"op": "export"}\n',
                 b'{"op": "sign", "id": "prosecutor", "data": "!!"}\n',
                 b'{"op": "sign", "id": "someone-else", "data": ""}\n',
                 b'{"op": "unwrap", "id": "prosecutor", "kind": "x25519", "stanzas": 7}\n',
                 b'{"op": "unwrap", "id": "prosecutor", "kind": "scrypt", "stanzas": []}\n'):
        answer = _raw(sock, line)
        assert answer["ok"] is False and answer["error"], (line, answer)
    # No answer ever carries key material; the agent still serves.
    listed = agent_request({"op": "list"}, path=sock)
    assert "AGE-SECRET-KEY" not in json.dumps(listed)
    assert [i["id"] for i in listed["identities"]] == ["prosecutor"]
