"""What every client command shares: connection options, opening the client, exit codes.

Options and their environment twins: ``--url`` (``EXCHANGE_URL``),
``--keystore`` (``EXCHANGE_KEYSTORE``), ``--passphrase-file``
(``EXCHANGE_PASSPHRASE_FILE``), ``--passphrase-command``
(``EXCHANGE_PASSPHRASE_COMMAND``; or ``EXCHANGE_PASSPHRASE``, or a prompt),
``--log-key`` (``EXCHANGE_LOG_KEY``), ``--state-dir`` (``EXCHANGE_STATE_DIR``;
``--state`` is kept as a hidden alias); then ``~/.config/exchange/config.json``.
When ``exchange agent`` holds the keystore's identity, no passphrase is read
and no Argon2 runs: the agent signs and unwraps. Library errors become one
sentence plus hints, with exit 3 for failed verification and 4 for key problems.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from exchange.cli import _ui
from exchange.cli._keystore import add_insecure_keystore_option
from exchange.cli._ui import JSON_SCHEMA_VERSION, CliError, ExitCode, print_json
from exchange.client.agent import agent_identity
from exchange.client.config import load_client_config, read_anchor
from exchange.client.connect import AgentLookup, open_identity
from exchange.client.custody import complete_pending
from exchange.client.errors import ClientError, KeyProblem, ServerRefused, VerificationFailed
from exchange.client.session import Client
from exchange.client.witnessing import load_witness_policy
from exchange.crypto.keys import ParticipantIdentity

__all__ = [
    "JSON_SCHEMA_VERSION",
    "ProgressBar",
    "add_connection_options",
    "client_error",
    "client_session",
    "iso_time",
    "load_identity",
    "open_client",
    "print_json",
    "run_client",
    "unlock_keystore",
]
from exchange.terminal import printable

T = TypeVar("T")

CONNECTION_HELP = """\
settings: flags first, then their EXCHANGE_* twins (and EXCHANGE_PASSPHRASE),
then $XDG_CONFIG_HOME/exchange/config.json (keys url, keystore, passphrase_file,
trust, state_dir); the trust anchor names the witnesses whose quorum every checkpoint
needs (--witness-policy FILE / $EXCHANGE_WITNESS_POLICY overrides it); a running
'exchange agent' spares the passphrase"""


def add_connection_options(parser: argparse.ArgumentParser, *, state_alias: bool = True) -> None:
    """Add the connection options (shown in the help epilog with their twins).

    ``state_alias`` adds the old spelling ``--state`` of ``--state-dir``, hidden.
    """
    group = parser.add_argument_group("connection")
    group.add_argument("--url", help="server URL ($EXCHANGE_URL)")
    group.add_argument("--keystore", help="your keystore file ($EXCHANGE_KEYSTORE)")
    add_passphrase_options(group)
    group.add_argument("--trust", help="the pinned trust anchor file, trust.json, from your "
                       "administrator ($EXCHANGE_TRUST)")
    group.add_argument("--log-key", help=argparse.SUPPRESS)
    group.add_argument("--state-dir", help="local state directory ($EXCHANGE_STATE_DIR)")
    group.add_argument("--witness-policy", metavar="FILE",
                       help="witness policy: accept only checkpoints a quorum of these "
                            "witnesses cosigned ($EXCHANGE_WITNESS_POLICY)")
    if state_alias:
        group.add_argument("--state", dest="state_dir", help=argparse.SUPPRESS)


def add_passphrase_options(group: Any) -> None:
    """Add ``--passphrase-file`` and ``--passphrase-command`` (keystore passphrase sources)."""
    group.add_argument("--passphrase-file", help="file holding the keystore passphrase "
                       "($EXCHANGE_PASSPHRASE_FILE; or $EXCHANGE_PASSPHRASE)")
    group.add_argument("--passphrase-command", metavar="COMMAND",
                       help="command printing the passphrase, e.g. 'pass show exchange' "
                            "($EXCHANGE_PASSPHRASE_COMMAND)")
    add_insecure_keystore_option(group)


def client_parser(
    subparsers: Any, name: str, help_text: str, *examples: str, aliases: list[str] | None = None
) -> argparse.ArgumentParser:
    """Add a client command ``name`` with its help, examples and the connection options."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=epilog(*examples),
        aliases=aliases or [])
    add_connection_options(parser)
    return parser


def epilog(*examples: str) -> str:
    """Return a client command's epilog: exit statuses, connection options, examples."""
    return _ui.epilog(*examples).replace("\n\nexamples:", "\n\n" + CONNECTION_HELP +
                                         "\n\nexamples:", 1)


def _identity(path: Path, *, passphrase_file: str | None, passphrase_command: str | None,
              use_agent: bool, allow_insecure: bool = False,
              agent: AgentLookup = agent_identity) -> ParticipantIdentity:
    def passphrase() -> str:
        return _ui.read_passphrase(
            "EXCHANGE_PASSPHRASE", confirm=False, passphrase_file=passphrase_file,
            command=passphrase_command, command_env=_ui.PASSPHRASE_COMMAND_ENV)

    try:
        return open_identity(path, passphrase, use_agent=use_agent, warn=_ui.warning,
                             allow_insecure=allow_insecure, agent=agent)
    except KeyProblem as err:
        raise CliError(str(err), *err.hints, code=ExitCode.KEY_PROBLEM) from None


def unlock_keystore(path: Path, *, passphrase_file: str | None,
                    passphrase_command: str | None,
                    allow_insecure: bool = False) -> ParticipantIdentity:
    """Return the identity in the keystore at ``path``, asking for its passphrase."""
    return _identity(path, passphrase_file=passphrase_file,
                     passphrase_command=passphrase_command, use_agent=False,
                     allow_insecure=allow_insecure)


def load_identity(path: Path, *, passphrase_file: str | None,
                  passphrase_command: str | None,
                  allow_insecure: bool = False,
                  agent: AgentLookup = agent_identity) -> ParticipantIdentity:
    """Return the keystore's identity: through the agent when it holds it, else unlocked here.

    Only the keystore's public part is read to ask the agent, so with an agent
    running a command costs no passphrase and no Argon2 run.
    """
    return _identity(path, passphrase_file=passphrase_file,
                     passphrase_command=passphrase_command, use_agent=True,
                     allow_insecure=allow_insecure, agent=agent)


def open_client(args: argparse.Namespace, *, agent: AgentLookup = agent_identity) -> Client:
    """Return a :class:`Client` for the options in ``args`` (must run inside an event loop).

    ``agent`` finds the agent's identity for the keystore (see ``open_identity``).
    """
    config = load_client_config({
        "url": args.url, "keystore": args.keystore, "passphrase_file": args.passphrase_file,
        "log_key": args.log_key, "state_dir": args.state_dir, "trust": args.trust,
    })
    if not config.url:
        raise CliError("no server URL", "pass --url or set EXCHANGE_URL", code=ExitCode.USAGE)
    if config.keystore is None:
        raise CliError("no keystore", "pass --keystore or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    identity = load_identity(
        config.keystore,
        passphrase_file=str(config.passphrase_file) if config.passphrase_file else None,
        passphrase_command=getattr(args, "passphrase_command", None),
        allow_insecure=getattr(args, "allow_insecure_keystore", False), agent=agent)
    return Client(identity, config.url, anchor=read_anchor(config),
                  state_dir=config.state_dir(identity.id), warn=_ui.warning,
                  witness_policy=load_witness_policy(getattr(args, "witness_policy", None)))


def client_error(err: ClientError) -> CliError:
    """Return the CLI error (message, hints, exit status) for a library error."""
    code = ExitCode.ERROR
    if isinstance(err, VerificationFailed):
        code = ExitCode.VERIFICATION_FAILED
    elif isinstance(err, KeyProblem):
        code = ExitCode.KEY_PROBLEM
    elif isinstance(err, ServerRefused):
        if err.status == 401:
            code = ExitCode.KEY_PROBLEM
        elif err.slug in ("blob-corrupt", "hash-mismatch"):
            code = ExitCode.VERIFICATION_FAILED
        elif err.slug == "evidence-erased":
            code = ExitCode.ERASED
    return CliError(str(err), *err.hints, code=code)


async def client_session(args: argparse.Namespace, work: Callable[[Client], Awaitable[T]], *,
                         agent: AgentLookup = agent_identity) -> T:
    """Open the client, check the log, complete custody records, run ``work(client)``, close.

    Library errors become :class:`CliError`. The whole of a client command
    after parsing: :func:`run_client` runs it on a fresh event loop, and the
    agent on its own when it answers a command itself (``_agent_commands``).
    """
    try:
        client = open_client(args, agent=agent)
        try:
            # Every command first checks the log is consistent with what we saw before,
            # and completes custody records an earlier pull left without a receipt.
            await client.checkpoint()
            if await complete_pending(client):
                _ui.info("completed custody records that were missing a receipt")
            return await work(client)
        finally:
            await client.close()
    except ClientError as err:
        raise client_error(err) from None


def run_client(args: argparse.Namespace, work: Callable[[Client], Awaitable[T]]) -> T:
    """Run :func:`client_session` for ``args`` and ``work`` on a fresh event loop."""
    return asyncio.run(client_session(args, work))


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(label: str, done: int, total: int, elapsed_s: float, width: int) -> str:
    """Return one progress line that fits in ``width - 1`` columns (never wraps).

    The numbers (done/total, rate, time left) come first in priority: the
    bar shrinks, then the label is shortened with an ellipsis, so an
    80-column terminal always shows the rate and the time left.
    """
    rate = done / elapsed_s if elapsed_s > 0 else 0.0
    left = _duration((total - done) / rate) if rate > 0 and total >= done else "?"
    numbers = f"{_size(done)}/{_size(total)} {_size(rate)}/s {left} left"
    room = max(width - 1, 20)
    bar_width = min(20, room - len(numbers) - 3 - 12)  # keep 12 columns for the label
    bar = ""
    if bar_width >= 5:
        filled = int(bar_width * done / total) if total else bar_width
        bar = f"[{'#' * filled}{'.' * (bar_width - filled)}] "
    label_room = room - len(numbers) - len(bar) - 1
    if len(label) > label_room:
        label = label[:max(label_room - 1, 0)] + "…" if label_room > 1 else ""
    return f"{label} {bar}{numbers}"[:room]


class ProgressBar:
    """One-line progress (label, bar, sizes, rate, time left) redrawn in place on stderr.

    Shown only when stderr is a terminal. Each redraw returns to the line
    start, draws at most ``width - 1`` columns and clears the rest, so a
    narrow terminal never wraps it into new lines; messages printed meanwhile
    (retries) first clear the line (see ``_ui.clear_progress``). ``finish``
    ends the line with a newline.
    """

    def __init__(self, label: str, *, enabled: bool) -> None:
        self.label = printable(label, 40)  # a decrypted file name: the uploader's text
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        width = shutil.get_terminal_size((80, 24)).columns
        line = progress_line(self.label, done, total, now - self.start, width)
        _ui.draw_progress(line)
        self.drawn = True

    def finish(self) -> None:
        """End the bar's line (once)."""
        if self.enabled and self.drawn:
            _ui.end_progress()
            self.drawn = False


def iso_time(epoch_s: object) -> str | None:
    """Return a Unix time as an ISO 8601 UTC string (``2025-01-31T12:00:00Z``), None if unknown."""
    if not isinstance(epoch_s, int) or isinstance(epoch_s, bool) or epoch_s <= 0:
        return None
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
