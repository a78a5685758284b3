"""The CLI's fast path: a running agent answers ``files CASE`` and ``case list`` itself.

Why: a fresh Python process that imports the client stack (aiohttp, the
crypto modules) spends about half a second before it sends a request, so the
everyday read-only commands could not finish in 200 ms. The agent
(``exchange agent start``) is already a warm process holding the identity;
this module, which imports only the standard library (and
:mod:`exchange.agent_socket`), runs first, and when the command line is
exactly one the agent may answer it sends the command to the agent, prints
the agent's stdout and stderr as they were written and exits with its status.

The agent runs the very same command code (``exchange.cli._agent_commands``):
same settings, same verification of signed statements, manifests and log
proofs, same state directory, same formatting. Nothing here decides anything
about trust. Any doubt falls back silently to the normal path, so only the
speed differs: no agent, an unsafe socket directory, a command line other
than the whitelisted shapes, another protocol or version, settings
(``EXCHANGE_*`` variables, ``HOME``, the XDG directories, the umask, the
working directory when a setting is a relative path) other than the agent's own, a
keystore the agent does not hold, or any error talking to it. Passphrase
variables are never sent.
"""

from __future__ import annotations  # (and no typing import: 4 ms of the fast path)

import os
import sys
from collections.abc import Mapping, Sequence

from exchange import __version__

__all__ = [
    "PROTOCOL",
    "config_env",
    "current_umask",
    "fast_command",
    "main",
    "silence_stdout",
    "try_fast",
]

#: Bumped whenever the request or the answer changes shape (an older agent then refuses).
PROTOCOL = 1
#: A listing of many thousand files is a few MiB; more is answered by the normal path.
ANSWER_LIMIT = 64 * 1024 * 1024
#: The agent talks to the server (and may wait for witness cosignatures) before it answers.
TIMEOUT_S = 120.0
#: Variables besides EXCHANGE_* that change what these commands do (config and state
#: directories, the TLS trust store).
_OTHER_ENV = ("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "SSL_CERT_FILE", "SSL_CERT_DIR")
_CASE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


def _plain_id(word: str) -> bool:
    """Whether ``word`` can only be a case id to argparse (no option, no path, no oddity)."""
    return 0 < len(word) <= 128 and word[0] not in "-." and set(word) <= _CASE_CHARS


def fast_command(argv: Sequence[str]) -> str | None:
    """Return ``"files"`` or ``"case list"`` if ``argv`` is exactly that command, else None.

    The accepted shapes are ``files CASE``, ``files CASE --json``, ``files
    --json CASE``, ``case list`` and ``case list --json``: no connection
    option, no other option, no abbreviation, nothing argparse could read
    another way.
    """
    words = list(argv)
    if words[:2] == ["case", "list"] and words[2:] in ([], ["--json"]):
        return "case list"
    if words[:1] == ["files"]:
        rest = words[1:]
        if "--json" in rest:
            rest.remove("--json")
        if len(rest) == 1 and _plain_id(rest[0]):
            return "files"
    return None


def config_env(environ: Mapping[str, str]) -> dict[str, str]:
    """Return the variables that decide a command's settings (passphrase ones left out).

    Every ``EXCHANGE_*`` variable but the passphrase sources (secrets) and the
    agent's own (which agent, its idle timeout), and :data:`_OTHER_ENV`.
    """
    return {name: value for name, value in environ.items()
            if (name.startswith("EXCHANGE_") and "PASSPHRASE" not in name
                and not name.startswith("EXCHANGE_AGENT_")) or name in _OTHER_ENV}


def current_umask() -> int:
    """Return the process's umask (it decides the mode of files a command creates)."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def silence_stdout() -> None:
    """Point stdout at /dev/null after its reader went away (e.g. ``| head``)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def try_fast(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> int | None:
    """Have the agent run ``argv``; print its output and return its exit status.

    Returns None (nothing printed) when the normal path must run instead.
    """
    if fast_command(argv) is None:
        return None
    # Imported here: every other command goes straight to the full CLI without it.
    from exchange.agent_socket import RUN_OP, AgentError, agent_request  # noqa: PLC0415

    environ = os.environ if environ is None else environ
    try:
        answer = agent_request({"op": RUN_OP, "protocol": PROTOCOL, "version": __version__,
                                "argv": list(argv), "env": config_env(environ),
                                "cwd": os.getcwd(), "umask": current_umask()},
                               timeout_s=TIMEOUT_S, limit=ANSWER_LIMIT)
    except (AgentError, OSError):
        return None
    found = _transcript(answer)
    if found is None:
        return None
    code, output = found
    try:
        for stream, text in output:
            target = sys.stdout if stream == "out" else sys.stderr
            target.write(text)
            target.flush()
    except BrokenPipeError:
        silence_stdout()
        return 1
    return code


def _transcript(answer: dict[str, object]) -> tuple[int, list[tuple[str, str]]] | None:
    """Return the exit status and ``(stream, text)`` pieces of an answer; None if malformed."""
    code, output = answer.get("code"), answer.get("output")
    if not (isinstance(code, int) and not isinstance(code, bool) and 0 <= code <= 255
            and isinstance(output, list)):
        return None
    pieces: list[tuple[str, str]] = []
    for item in output:
        if not (isinstance(item, list) and len(item) == 2 and item[0] in ("out", "err")
                and isinstance(item[1], str)):
            return None
        pieces.append((item[0], item[1]))
    return code, pieces


def main() -> int:
    """The ``exchange`` command: the agent's answer when it may give one, else the full CLI."""
    try:
        code = try_fast(sys.argv[1:])
    except KeyboardInterrupt:
        print("exchange: interrupted", file=sys.stderr)  # as the full CLI says it
        return 130
    if code is not None:
        return code
    from exchange.cli.main import main as full_main  # noqa: PLC0415 - the slow path only

    return full_main()
