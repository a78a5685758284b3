"""The key agent process: unlocked identities in memory, private-key operations on request.

Theory of operation. The socket lives in a directory of mode 0700 owned by
the user; on top of that every connection's peer credentials (``SO_PEERCRED``)
must name the agent's own uid, so even a process that can reach the socket
(root, a badly set directory) is refused unless it runs as the agent's user
(root may of course read any memory anyway). The agent answers the requests
of :mod:`exchange.client.agent` by signing or unwrapping, never by returning
a key; with ``commands`` it also answers the CLI's fast path (a whitelisted
read-only command run here, on the agent's own settings). It exits after
``idle_timeout_s`` without a request, on ``stop``, or on SIGTERM/SIGINT, and
removes its socket. The process asks the kernel not to
dump its memory (``PR_SET_DUMPABLE`` 0, no core files), which also keeps
other processes of the same user from attaching to it with ptrace.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from exchange.agent_socket import RUN_OP
from exchange.client.agent import MAX_LINE_BYTES, check_private_dir, decode_stanzas
from exchange.crypto.age import AgeError
from exchange.crypto.keys import ParticipantIdentity

__all__ = ["AgentServer", "Commands", "harden_process", "prepare_socket_dir"]

_PR_SET_DUMPABLE = 4  # <linux/prctl.h>


def harden_process() -> None:
    """Keep the agent's memory out of core dumps and away from same-user ptrace (Linux)."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def prepare_socket_dir(path: Path) -> None:
    """Create the socket's directory (mode 0700) or check an existing one; remove a dead socket.

    Raises ``FileExistsError`` when an agent already answers at ``path``.
    """
    directory = path.parent
    with contextlib.suppress(FileExistsError):
        directory.mkdir(mode=0o700, parents=True)
    check_private_dir(directory)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except ConnectionRefusedError:
            # A socket left by an agent that died: ours (the directory is ours) and dead.
            if path.is_socket():
                path.unlink()
        else:
            raise FileExistsError(f"an agent already listens at {str(path)!r}")
        finally:
            probe.close()


def peer_uid(sock: socket.socket) -> int:
    """Return the uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


#: Answers a ``run`` request (a read-only command the agent runs itself) with the
#: identities the agent holds; supplied by the CLI (``exchange.cli._agent_commands``).
Commands = Callable[[dict[str, Any], Mapping[str, ParticipantIdentity]],
                    Awaitable[dict[str, Any]]]


class AgentServer:
    """Serve private-key operations for ``identities`` on the Unix socket ``path``.

    With ``commands``, also ``run`` requests: the agent answers whitelisted
    read-only commands itself (the CLI's fast path, ``exchange.cli.fast``).
    """

    def __init__(self, identities: Sequence[ParticipantIdentity], path: Path, *,
                 idle_timeout_s: float, log: Callable[[str], None] | None = None,
                 commands: Commands | None = None) -> None:
        self._identities = {identity.id: identity for identity in identities}
        self._commands = commands
        self.path = path
        self.idle_timeout_s = idle_timeout_s
        self._last = time.monotonic()
        self._stop = asyncio.Event()
        self._log = log or (lambda _text: None)

    async def serve(self, *, on_ready: Callable[[], None] | None = None) -> None:
        """Listen until stopped or idle for ``idle_timeout_s``; remove the socket after."""
        old_umask = os.umask(0o177)  # the socket file itself: 0600
        try:
            server = await asyncio.start_unix_server(self._handle, path=str(self.path),
                                                     limit=MAX_LINE_BYTES + 1)
        finally:
            os.umask(old_umask)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            loop.add_signal_handler(signum, self._stop.set)
        try:
            if on_ready is not None:
                on_ready()
            while not self._stop.is_set():
                left = self._last + self.idle_timeout_s - time.monotonic()
                if left <= 0:
                    self._log("idle timeout: forgetting the keys and exiting")
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=min(left, 1.0))
        finally:
            server.close()
            self._identities.clear()
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # Read the (bounded) request before answering, so a refused client gets its
            # answer rather than a broken pipe; nothing in it is looked at before the check.
            try:
                line = await reader.readuntil(b"\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                line = b""
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid != os.getuid():
                self._log(f"refused a connection from uid {uid}")
                await self._answer(writer, {"ok": False, "error": f"uid {uid} may not use "
                                            f"this agent (it belongs to uid {os.getuid()})"})
                return
            if not line:
                await self._answer(writer, {"ok": False, "error": "request too long or cut"})
                return
            self._last = time.monotonic()
            await self._answer(writer, await self._respond(line))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    @staticmethod
    async def _answer(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
        writer.write(json.dumps(answer).encode("utf-8") + b"\n")
        await writer.drain()

    async def _respond(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "request is not a JSON object"}
        if request.get("op") == RUN_OP:
            if self._commands is None:
                return {"ok": False, "error": "this agent answers no commands"}
            answer = await self._commands(request, self._identities)
            self._last = time.monotonic()  # a command's time counts as use, not idleness
            return answer
        return self._dispatch(request)

    def _dispatch(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "list":
            return {"ok": True, "pid": os.getpid(), "idle_timeout_s": self.idle_timeout_s,
                    "identities": [i.public_bundle().to_json_obj()
                                   for i in self._identities.values()]}
        if op == "stop":
            self._stop.set()
            return {"ok": True}
        identity = self._identities.get(str(request.get("id")))
        if identity is None:
            return {"ok": False, "error": f"no identity {str(request.get('id'))[:80]!r}"}
        try:
            if op == "sign":
                data = base64.b64decode(str(request.get("data", "")), validate=True)
                signature = identity.signing_key.sign(data).signature
                return {"ok": True, "signature": base64.b64encode(signature).decode("ascii")}
            if op == "unwrap":
                return self._unwrap(identity, request)
        except ValueError as err:
            return {"ok": False, "error": f"bad request: {str(err)[:200]}"}
        return {"ok": False, "error": f"unknown op {str(op)[:40]!r}"}

    @staticmethod
    def _unwrap(identity: ParticipantIdentity, request: dict[str, Any]) -> dict[str, Any]:
        kind = request.get("kind")
        key = identity.age_identity if kind == "x25519" else (
            identity.pq_identity if kind == "hybrid" else None)
        if key is None:
            return {"ok": False, "error": f"no {str(kind)[:20]!r} identity"}
        stanzas = decode_stanzas(request.get("stanzas"))
        try:
            file_key = key.unwrap(stanzas)
        except AgeError as err:
            return {"ok": True, "header_error": str(err)[:200]}
        return {"ok": True,
                "file_key": None if file_key is None else base64.b64encode(file_key).decode()}
