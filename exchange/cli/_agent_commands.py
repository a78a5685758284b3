"""The agent's side of the CLI's fast path: it runs ``files CASE`` and ``case list`` itself.

:mod:`exchange.cli.fast` sends the command line, the settings variables and
the working directory. The agent answers only when the command is one of the
whitelisted read-only shapes and the settings are exactly its own (those it
was started with, still resolving to the same configuration); then it parses
the command with the CLI's own parser, runs the CLI's own command body
(``agent_work`` of the parsed command) through :func:`client_session`, the
code every client command runs, with the identity it holds, and returns what
that printed on stdout and stderr and the exit status :func:`failure_status`
gives. So the server is checked exactly as by the CLI (signed statements,
manifests, log proofs) and the verified state goes to the same state
directory.

An agent whose code changed on disk since it started (an upgrade) refuses
too: it would run the old code (:func:`code_stamp`).

What a request cannot do: choose a path (files read and written are those of
the agent's configuration; the case id is a plain word, see ``fast_command``),
run any other command, or act as another keystore (the keystore named by the
configuration must be one the agent holds, checked as the CLI checks it).
Anything else is refused, and the CLI then runs the command itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from exchange import __version__
from exchange.cli import _ui
from exchange.cli._client_common import client_session
from exchange.cli._ui import CliError
from exchange.cli.fast import ANSWER_LIMIT, PROTOCOL, config_env, current_umask, fast_command
from exchange.cli.main import build_parser, failure_status
from exchange.client.config import ClientConfig, load_client_config
from exchange.client.errors import ClientError
from exchange.client.witnessing import POLICY_ENV
from exchange.crypto.keys import ParticipantIdentity, PublicBundle
from exchange.errors import ExchangeError

__all__ = ["PACKAGE", "AgentCommands", "code_stamp"]


#: The installed package: the code the agent runs and the code the CLI would run.
PACKAGE = Path(__file__).resolve().parent.parent


def code_stamp(package: Path) -> str:
    """Return a digest of the names, sizes and modification times of ``package``'s modules.

    An agent started before an upgrade (or an edit of a development install)
    runs the old code, which could print otherwise than the new CLI: the
    agent compares this stamp with the one taken at its start and refuses
    when it changed. About 1 ms for the package's 200 modules.
    """
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(directory, name)
            with contextlib.suppress(OSError):
                info = os.stat(path)
                digest.update(f"{path}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class _Refused(Exception):
    """This request is for the CLI itself to run (the reason goes back to it)."""


class AgentCommands:
    """Answer the fast path's ``run`` requests with the settings of this process.

    Built in the process that starts the agent, so the settings it keeps are
    those of ``exchange agent start``'s environment and working directory (the
    command code reads ``os.environ``, which stays this process's own).
    """

    def __init__(self) -> None:
        self._env = config_env(os.environ)
        self._cwd = os.getcwd()
        self._umask = current_umask()
        self._config = self._resolve()
        self._code = code_stamp(PACKAGE)
        self._lock = asyncio.Lock()
        # Built once (importing the command modules now, not on the first request); a
        # parser is not changed by parsing, and build_parser only looks at the first word.
        self._parsers = {word: build_parser([word]) for word in ("files", "case")}

    @staticmethod
    def _resolve() -> ClientConfig | None:
        try:
            return load_client_config()
        except ClientError:
            return None  # the CLI reports a broken config file itself

    def refusal(self, request: Mapping[str, Any]) -> str | None:
        """Return why this process may not answer ``request`` (None: it may)."""
        if request.get("protocol") != PROTOCOL or request.get("version") != __version__:
            return f"another protocol or version (the agent runs {__version__})"
        if code_stamp(PACKAGE) != self._code:
            return "the program changed on disk since the agent started (restart the agent)"
        argv = request.get("argv")
        if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv) or (
                fast_command(argv) is None):
            return "not a command the agent answers"
        if request.get("env") != self._env or request.get("umask") != self._umask:
            return "other settings than the agent's (environment, umask)"
        config = self._resolve()
        if config is None or config != self._config:
            return "other settings than the agent's (config file)"
        if self._cwd_matters(config) and request.get("cwd") != self._cwd:
            return "another working directory, and a setting is a relative path"
        return None

    def _cwd_matters(self, config: ClientConfig) -> bool:
        paths = [config.keystore, config.trust, config.passphrase_file, config.state_root,
                 self._env.get(POLICY_ENV)]
        return any(p is not None and not os.path.isabs(p) for p in paths)

    async def __call__(self, request: dict[str, Any],
                       identities: Mapping[str, ParticipantIdentity]) -> dict[str, Any]:
        """Return the answer to a ``run`` request: exit status and output, or a refusal."""
        reason = self.refusal(request)
        if reason is not None:
            return {"ok": False, "error": reason}
        argv: list[str] = request["argv"]  # checked by refusal(): a whitelisted shape
        async with self._lock:  # record_output swaps sys.stdout: one command at a time
            try:
                with _ui.record_output() as transcript:
                    code = await self._run(self._parsers[argv[0]], argv, identities)
            except _Refused as err:
                return {"ok": False, "error": str(err)}
            except Exception as err:  # a bug: the CLI runs the command and shows it
                return {"ok": False, "error": f"failed: {type(err).__name__}"}
        if sum(len(text) for _, text in transcript) > ANSWER_LIMIT // 2:
            return {"ok": False, "error": "the output is too long to send"}
        return {"ok": True, "code": code, "output": transcript}

    @staticmethod
    async def _run(parser: argparse.ArgumentParser, argv: list[str],
                   identities: Mapping[str, ParticipantIdentity]) -> int:
        try:
            args = parser.parse_args(argv)
        except CliError as err:
            raise _Refused(f"the command line does not parse: {err.message}") from None
        work = getattr(args, "agent_work", None)
        if work is None:
            raise _Refused("not a command the agent answers")

        def held(bundle: PublicBundle) -> ParticipantIdentity:
            for identity in identities.values():
                if identity.public_bundle().fingerprint == bundle.fingerprint:
                    return identity
            raise _Refused("the configured keystore is not the one the agent holds")

        try:
            return int(await client_session(args, work(args), agent=held))
        except (CliError, ExchangeError, OSError) as err:
            return failure_status(err)
