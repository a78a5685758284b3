"""Talking to the key agent's Unix socket with the standard library only.

Split from :mod:`exchange.client.agent` so that the CLI's fast path
(:mod:`exchange.cli.fast`) can ask a running agent to answer a read-only
command *before* anything heavy (aiohttp, the crypto stack) is imported: this
module and :mod:`exchange.errors` import nothing but the standard library.
:mod:`exchange.client.agent` re-exports every name here.

Wire protocol: one JSON object per line each way; an answer carries
``"ok": true`` or ``"ok": false, "error": ...``.
"""

from __future__ import annotations

import json
import os
import socket
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange.errors import ExchangeError

__all__ = [
    "AGENT_SOCK_ENV",
    "MAX_LINE_BYTES",
    "RUN_OP",
    "AgentError",
    "AgentUnavailable",
    "agent_request",
    "agent_socket_path",
    "check_private_dir",
]

AGENT_SOCK_ENV = "EXCHANGE_AGENT_SOCK"
MAX_LINE_BYTES = 1024 * 1024  # stanzas and signature bases are a few KiB
_TIMEOUT_S = 10.0
#: The request of the CLI's fast path: the agent runs a read-only command itself.
RUN_OP = "run"


class AgentError(ExchangeError):
    """The agent answered with an error, or its socket is not safe to use."""


class AgentUnavailable(AgentError):
    """No agent listens at the socket (the caller falls back to the keystore)."""


def agent_socket_path(env: Mapping[str, str] | None = None) -> Path:
    """Return the agent socket path: ``$EXCHANGE_AGENT_SOCK``, else a per-user runtime path.

    The default is ``$XDG_RUNTIME_DIR/exchange-agent/agent.sock`` when that
    directory is set (it is private to the user by systemd), else
    ``/tmp/exchange-agent-<uid>/agent.sock``.
    """
    env = os.environ if env is None else env
    if env.get(AGENT_SOCK_ENV):
        return Path(env[AGENT_SOCK_ENV])
    runtime = env.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "exchange-agent" / "agent.sock"
    return Path("/tmp") / f"exchange-agent-{os.getuid()}" / "agent.sock"  # noqa: S108


def check_private_dir(directory: Path) -> None:
    """Return ``None`` if ``directory`` is a real directory of ours with mode 0700, else raise.

    Another user who owns (or can write to) the socket's directory could put
    their own agent there and answer for our identity, so the client refuses it.
    """
    try:
        info = directory.lstat()
    except FileNotFoundError:
        raise AgentUnavailable(f"no agent directory {str(directory)!r}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise AgentError(f"agent directory {str(directory)!r} is not a directory")
    if info.st_uid != os.getuid():
        raise AgentError(f"agent directory {str(directory)!r} belongs to uid {info.st_uid}, "
                         f"not to you (uid {os.getuid()})")
    if stat.S_IMODE(info.st_mode) & 0o077:
        raise AgentError(f"agent directory {str(directory)!r} has mode "
                         f"{stat.S_IMODE(info.st_mode):04o}, expected 0700")


def agent_request(request: dict[str, Any], *, path: Path | None = None,
                  timeout_s: float = _TIMEOUT_S,
                  limit: int = MAX_LINE_BYTES) -> dict[str, Any]:
    """Send one request to the agent and return its answer (``ok`` true).

    Raises :class:`AgentUnavailable` when no agent listens, :class:`AgentError`
    when the socket's directory is unsafe, the agent refuses, or its answer
    is longer than ``limit`` bytes.
    """
    path = agent_socket_path() if path is None else path
    check_private_dir(path.parent)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as err:
            raise AgentUnavailable(f"no agent at {str(path)!r}: {err.strerror}") from None
        sock.sendall(json.dumps(request).encode("utf-8") + b"\n")
        line = _read_line(sock, limit)
    except OSError as err:
        raise AgentError(f"agent at {str(path)!r} failed: {err}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(line)
    except ValueError:
        raise AgentError("the agent's answer is not JSON") from None
    if not isinstance(answer, dict):
        raise AgentError("the agent's answer is not a JSON object")
    if answer.get("ok") is not True:
        raise AgentError(f"the agent refused: {str(answer.get('error', 'no reason'))[:200]}")
    return answer


def _read_line(sock: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        data = sock.recv(65536)
        if not data:
            break
        chunks.append(data)
        size += len(data)
        if b"\n" in data or size > limit:
            break
    line, _, _ = b"".join(chunks).partition(b"\n")
    if size > limit:
        raise AgentError("the agent's answer is too long")
    return line
