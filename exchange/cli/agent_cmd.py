"""``exchange agent start|stop|status|lock``: unlock a keystore once, like ``ssh-agent``.

``start`` asks for the passphrase here (or takes it from the usual sources),
runs Argon2id once, then leaves a background process holding the identity
(see :mod:`exchange.client.agent_server`). Every client command then finds it
at the socket and signs and unwraps through it instead of unlocking the
keystore again. The agent also answers ``exchange files CASE`` and ``exchange
case list`` itself, warm, when they run with the settings it was started with
(:mod:`exchange.cli.fast`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._agent_commands import AgentCommands
from exchange.cli._client_common import add_passphrase_options, print_json, unlock_keystore
from exchange.cli._ui import CliError, ExitCode
from exchange.client.agent import (
    AGENT_SOCK_ENV,
    AgentError,
    AgentUnavailable,
    agent_request,
    agent_socket_path,
)
from exchange.client.agent_server import AgentServer, harden_process, prepare_socket_dir
from exchange.client.config import load_client_config

__all__ = ["register"]

DEFAULT_IDLE_TIMEOUT_S = 1800  # gpg-agent forgets after 10 min; a working session is longer
IDLE_ENV = "EXCHANGE_AGENT_IDLE_TIMEOUT"


def _socket(args: argparse.Namespace) -> Path:
    return Path(args.socket) if args.socket else agent_socket_path()


def _start(args: argparse.Namespace) -> int:
    config = load_client_config({"keystore": args.keystore,
                                 "passphrase_file": args.passphrase_file})
    if config.keystore is None:
        raise CliError("no keystore", "pass --keystore or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    idle = args.idle_timeout if args.idle_timeout is not None else float(
        os.environ.get(IDLE_ENV) or DEFAULT_IDLE_TIMEOUT_S)
    if idle <= 0:
        raise CliError("--idle-timeout must be positive", code=ExitCode.USAGE)
    path = _socket(args)
    try:
        prepare_socket_dir(path)
    except FileExistsError:
        raise CliError(f"an agent already runs at {str(path)!r}",
                       "stop it first with 'exchange agent stop'") from None
    except AgentError as err:
        raise CliError(str(err), code=ExitCode.KEY_PROBLEM) from None
    identity = unlock_keystore(
        config.keystore,
        passphrase_file=str(config.passphrase_file) if config.passphrase_file else None,
        passphrase_command=args.passphrase_command)
    # The fast path: `files CASE` and `case list` answered here, with the settings of
    # this environment and working directory (exchange.cli._agent_commands).
    server = AgentServer([identity], path, idle_timeout_s=idle, commands=AgentCommands())
    if args.foreground:
        harden_process()
        _ui.info(f"agent holds {identity.id!r} at {path} (idle timeout {idle:g} s; ctrl-c "
                 "to stop)")
        asyncio.run(server.serve())
        return 0
    pid = _daemonise(server)
    _ui.info(f"agent started (pid {pid}) holding {identity.id!r}; idle timeout {idle:g} s")
    if args.socket:
        print(f"{AGENT_SOCK_ENV}={path}; export {AGENT_SOCK_ENV};")
    return 0


def _daemonise(server: AgentServer) -> int:
    """Fork the agent into the background; return its pid once it listens."""
    read_end, write_end = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the agent
        os.close(read_end)
        code = 0
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            harden_process()

            def ready() -> None:
                os.write(write_end, b"ok")
                os.close(write_end)

            asyncio.run(server.serve(on_ready=ready))
        except BaseException as err:
            code = 1
            try:
                os.write(write_end, f"error: {err}".encode()[:500])
                os.close(write_end)
            except OSError:
                pass
        os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read()
    if answer != b"ok":
        os.waitpid(pid, 0)
        raise CliError(f"the agent did not start: {answer.decode(errors='replace') or 'died'}")
    return pid


def _request(args: argparse.Namespace, op: str) -> dict[str, Any] | None:
    try:
        return agent_request({"op": op}, path=_socket(args))
    except AgentUnavailable:
        return None
    except AgentError as err:
        raise CliError(str(err), code=ExitCode.KEY_PROBLEM) from None


def _stop(args: argparse.Namespace) -> int:
    if _request(args, "stop") is None:
        _ui.info("no agent is running")
        return 1
    _ui.info("agent stopped: the unlocked keys are gone from memory")
    return 0


def _status(args: argparse.Namespace) -> int:
    answer = _request(args, "list")
    if answer is None:
        if args.json:
            print_json({"running": False, "socket": str(_socket(args))})
        else:
            _ui.info(f"no agent is running at {_socket(args)}")
        return 1
    held = answer.get("identities")
    identities: list[Any] = held if isinstance(held, list) else []
    ids = [str(i.get("id")) for i in identities if isinstance(i, dict)]
    if args.json:
        print_json({"running": True, "socket": str(_socket(args)), "pid": answer.get("pid"),
                    "identities": ids, "idle_timeout_s": answer.get("idle_timeout_s")})
    else:
        print(f"agent pid {answer.get('pid')} at {_socket(args)}; idle timeout "
              f"{answer.get('idle_timeout_s')} s; holds {', '.join(ids) or 'nothing'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``agent`` and its subcommands to the ``exchange`` command."""
    agent = subparsers.add_parser(
        "agent", help="unlock your keystore once and keep it in a local agent",
        description="A local agent (like ssh-agent) holds your unlocked identity in memory "
        "and signs and decrypts for your own commands over a Unix socket only your user "
        "can use; the private keys never leave it. Commands use it when it runs and "
        "otherwise unlock the keystore themselves. The agent also answers 'exchange files "
        "CASE' and 'exchange case list' (with or without --json) itself, already warm and "
        "verifying the server exactly as the command would, when they run with the same "
        "settings as 'agent start' (EXCHANGE_* variables, HOME, XDG directories, config "
        "file) and no option other than --json; otherwise the command runs as usual. The "
        "socket is $EXCHANGE_AGENT_SOCK or $XDG_RUNTIME_DIR/exchange-agent/agent.sock "
        "(else /tmp/exchange-agent-UID/).",
        epilog=_ui.epilog("exchange agent start --keystore alice.keystore",
                          "exchange agent status", "exchange agent stop"))
    sub = agent.add_subparsers(dest="agent_command", metavar="SUBCOMMAND", required=True)
    start = sub.add_parser("start", help="unlock the keystore and start the agent",
                           description="unlock the keystore (one Argon2 run) and keep it in a "
                           "background agent until stop, lock or the idle timeout; the agent "
                           "keeps this environment's settings to answer 'files CASE' and "
                           "'case list' itself",
                           epilog=_ui.epilog("exchange agent start --keystore alice.keystore "
                                             "--idle-timeout 3600"))
    start.add_argument("--keystore", help="your keystore file ($EXCHANGE_KEYSTORE)")
    add_passphrase_options(start)
    start.add_argument("--idle-timeout", type=float, metavar="SECONDS",
                       help=f"forget the keys after this long without use (${IDLE_ENV}; "
                            f"default {DEFAULT_IDLE_TIMEOUT_S})")
    start.add_argument("--foreground", action="store_true",
                       help="stay in the foreground (for a service manager)")
    start.set_defaults(func=_start)
    for name, help_text, func in (
            ("stop", "stop the agent (the keys are forgotten)", _stop),
            ("lock", "forget the unlocked keys now (same as stop)", _stop),
            ("status", "say whether an agent runs and whom it holds", _status)):
        cmd = sub.add_parser(name, help=help_text, description=help_text,
                             epilog=_ui.epilog(f"exchange agent {name}"))
        if name == "status":
            cmd.add_argument("--json", action="store_true", help="print a JSON object")
        cmd.set_defaults(func=func)
    for cmd in (start, *[p for n, p in sub.choices.items() if n != "start"]):
        cmd.add_argument("--socket", help=f"agent socket path (${AGENT_SOCK_ENV})")
