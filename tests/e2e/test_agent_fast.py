"""The agent answers ``files CASE`` and ``case list`` itself: same bytes and status, or not at all.

Against the real server of ``world``, with the prosecutor's agent running:
each whitelisted command gives, through the fast path
(:func:`exchange.cli.fast.try_fast`, what ``exchange`` runs first), exactly
the stdout, stderr and exit status of the full CLI (``exchange.cli.main``);
the fast path steps aside (the CLI runs as before) for other settings, other
options, a changed config file, an older protocol or no agent; and after the
operator edits the database, the agent-served listing refuses exactly as the
CLI does.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from exchange import __version__
from exchange.cli._agent_commands import PACKAGE, code_stamp
from exchange.cli.fast import config_env, current_umask
from exchange.client.agent import AgentError, agent_request
from tests.e2e.conftest import World, new_case

NOT_SERVED = 99  # try_fast returned None: the normal path would have run
_FAST = ("import sys; from exchange.cli.fast import try_fast; "
         f"code = try_fast(sys.argv[1:]); sys.exit({NOT_SERVED} if code is None else code)")
_FULL = "import sys; from exchange.cli.main import main; sys.exit(main(sys.argv[1:]))"


@dataclass
class Served:
    """The prosecutor's environment with a running agent, and a case with two files."""

    env: dict[str, str]
    sock: Path
    case_id: str
    evidence: tuple[str, str]


def _python(code: str, env: dict[str, str], *args: str,
            umask: int = -1) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True,
                          timeout=120, check=False, stdin=subprocess.DEVNULL, umask=umask)


def _fast(env: dict[str, str], *args: str, umask: int = -1) -> subprocess.CompletedProcess[bytes]:
    return _python(_FAST, env, *args, umask=umask)


def _start_agent(env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "exchange", "agent", "start"], env=env,
                          capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL, start_new_session=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def served(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The prosecutor's agent, started on the environment the commands run with."""
    base = Path(tempfile.mkdtemp(prefix="xf-"))  # AF_UNIX paths are short
    sock = base / "agent" / "agent.sock"
    env = {**world.env("prosecutor"), "EXCHANGE_AGENT_SOCK": str(sock)}
    _start_agent(env)
    try:
        case_id = new_case(world, "Operation Fast Path")
        files = tmp_path_factory.mktemp("fast-evidence")
        (files / "ledger.txt").write_text("first\n")
        (files / "photo.jpg").write_bytes(b"\xff\xd8" + bytes(2000))
        first = world.cli("prosecutor", "upload", case_id, str(files / "ledger.txt"),
                          extra_env={"EXCHANGE_AGENT_SOCK": str(sock)}).stdout.strip()
        second = world.cli("prosecutor", "upload", case_id, str(files / "photo.jpg"),
                           "--handling", "H1", "--handling-note", "court only",
                           extra_env={"EXCHANGE_AGENT_SOCK": str(sock)}).stdout.strip()
        yield Served(env=env, sock=sock, case_id=case_id, evidence=(first, second))
    finally:
        with contextlib.suppress(AgentError):
            agent_request({"op": "stop"}, path=sock)
        shutil.rmtree(base, ignore_errors=True)


def _same_as_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``args`` through the fast path, then the full CLI; assert identical results.

    A refusal names the audit index the server logged it under, one more each
    time: that number is the only difference allowed.
    """
    fast = _fast(env, *args)
    assert fast.returncode != NOT_SERVED, f"the agent did not answer {args}"
    full = _python(_FULL, env, *args)
    assert (fast.stdout, _logged(fast.stderr), fast.returncode) == (
        full.stdout, _logged(full.stderr), full.returncode), args
    return fast


def _logged(stderr: bytes) -> bytes:
    return re.sub(rb"logged at audit index \d+", b"logged at audit index N", stderr)


def test_agent_answers_exactly_as_the_cli(served: Served) -> None:
    env, case_id = served.env, served.case_id
    listing = _same_as_cli(env, "files", case_id)
    assert listing.returncode == 0
    assert b"ledger.txt" in listing.stdout and b"HANDLING H1" in listing.stdout
    as_json = _same_as_cli(env, "files", "--json", case_id)
    assert {e["evidence_id"] for e in json.loads(as_json.stdout)["evidence"]} == set(
        served.evidence)
    _same_as_cli(env, "files", case_id, "--json")
    cases = _same_as_cli(env, "case", "list")
    assert case_id.encode() in cases.stdout and b"Operation Fast Path" in cases.stdout
    _same_as_cli(env, "case", "list", "--json")
    unknown = _same_as_cli(env, "files", "case-00000000000000000000000000")
    assert unknown.returncode != 0 and b"error" in unknown.stderr
    # The real entry point takes the fast path: the listing came without importing aiohttp.
    entry = subprocess.run([sys.executable, "-X", "importtime", "-m", "exchange", "case",
                            "list"], env=env, capture_output=True, text=True, timeout=120,
                           check=False, stdin=subprocess.DEVNULL)
    assert entry.returncode == 0 and entry.stdout.encode() == cases.stdout
    assert "aiohttp" not in entry.stderr and "exchange.agent_socket" in entry.stderr


def test_fast_path_steps_aside_unless_everything_matches(served: Served, world: World) -> None:
    env, case_id = served.env, served.case_id
    for args in (("files", case_id, "--deliveries"), ("case", "list", "--url", env["EXCHANGE_URL"]),
                 ("case", "show", case_id), ("files", "--js", case_id), ("files", "../etc")):
        assert _fast(env, *args).returncode == NOT_SERVED, args
    for extra in ({"EXCHANGE_STATE_DIR": str(world.base / "elsewhere")},
                  {"EXCHANGE_WITNESS_WAIT_S": "3"}, {"HOME": str(world.base)}):
        assert _fast({**env, **extra}, "case", "list").returncode == NOT_SERVED, extra
    mine = current_umask()  # the agent's (started from here); custody files take the umask
    assert _fast(env, "case", "list", umask=mine ^ 0o007).returncode == NOT_SERVED
    # The config file changed since the agent started: it resolves other settings now.
    config = Path(env["XDG_CONFIG_HOME"]) / "exchange" / "config.json"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(json.dumps({"passphrase_file": "/nonexistent"}))
    try:
        assert _fast(env, "case", "list").returncode == NOT_SERVED
    finally:
        config.unlink()
    assert _fast(env, "case", "list").returncode == 0
    # The agent itself refuses what the fast path would never send: another command, an
    # older protocol, settings it was not started with.
    settings = config_env(env)
    request = {"op": "run", "protocol": 1, "version": __version__, "argv": ["case", "list"],
               "cwd": "/", "env": settings, "umask": current_umask()}
    assert agent_request(request, path=served.sock)["code"] == 0
    for change in ({"argv": ["case", "create", "--title", "x"]}, {"protocol": 0},
                   {"argv": ["files", "/etc/passwd"]},
                   {"env": {**settings, "EXCHANGE_STATE_DIR": "/tmp"}}):
        with pytest.raises(AgentError, match="agent refused"):
            agent_request({**request, **change}, path=served.sock)


def test_without_an_agent_the_cli_runs_as_before(served: Served, world: World) -> None:
    base = Path(tempfile.mkdtemp(prefix="xg-"))
    env = {**world.env("prosecutor"), "EXCHANGE_AGENT_SOCK": str(base / "agent" / "s")}
    try:
        _start_agent(env)
        assert _fast(env, "case", "list").returncode == 0
        agent_request({"op": "stop"}, path=base / "agent" / "s")
        assert _fast(env, "case", "list").returncode == NOT_SERVED
        done = subprocess.run([sys.executable, "-m", "exchange", "case", "list"], env=env,
                              capture_output=True, timeout=120, check=False)
        assert done.returncode == 0 and served.case_id.encode() in done.stdout  # the keystore
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_agent_refuses_a_tampered_listing_as_the_cli_does(served: Served, world: World) -> None:
    _same_as_cli(served.env, "files", served.case_id)  # verified and warm before the edit
    first, second = served.evidence
    database = world.deployment.data_dir / "exchange.sqlite3"
    swap = ("UPDATE evidence SET sealed_manifest = CASE id WHEN ? THEN "
            "(SELECT sealed_manifest FROM evidence WHERE id = ?) ELSE "
            "(SELECT sealed_manifest FROM evidence WHERE id = ?) END WHERE id IN (?, ?)")
    with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
        assert db.execute(swap, (first, second, first, first, second)).rowcount == 2
    try:
        refused = _same_as_cli(served.env, "files", served.case_id)
        assert refused.returncode == 3, refused.stderr
        assert b"differs from the signed manifest" in refused.stderr
    finally:
        with contextlib.closing(sqlite3.connect(database, timeout=30)) as db, db:
            db.execute(swap, (first, second, first, first, second))


def test_an_agent_whose_code_changed_on_disk_steps_aside(tmp_path: Path) -> None:
    """The stamp the agent compares at each request moves with any module's size or time."""
    module = tmp_path / "pkg" / "cli.py"
    module.parent.mkdir()
    module.write_text("x = 1\n")
    (tmp_path / "pkg" / "notes.txt").write_text("not code\n")
    stamp = code_stamp(tmp_path / "pkg")
    assert code_stamp(tmp_path / "pkg") == stamp
    (tmp_path / "pkg" / "notes.txt").write_text("still not code\n")
    assert code_stamp(tmp_path / "pkg") == stamp
    os.utime(module, ns=(10**18, 10**18))
    assert code_stamp(tmp_path / "pkg") != stamp
    assert len(code_stamp(PACKAGE)) == 64
