"""What every client command shares: connection options, opening the client, exit codes.

Options and their environment twins: ``--url`` (``EXCHANGE_URL``),
``--keystore`` (``EXCHANGE_KEYSTORE``), ``--passphrase-file``
(``EXCHANGE_PASSPHRASE_FILE``; or ``EXCHANGE_PASSPHRASE``, or a prompt),
``--log-key`` (``EXCHANGE_LOG_KEY``), ``--state-dir`` (``EXCHANGE_STATE_DIR``);
then ``~/.config/exchange/config.json``. Library errors become one sentence
plus hints, with exit 3 for failed verification and 4 for key problems.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from exchange.cli import _ui
from exchange.cli._keystore import add_insecure_keystore_option, read_keystore
from exchange.cli._ui import CliError, ExitCode
from exchange.client.config import load_client_config
from exchange.client.errors import ClientError, KeyProblem, ServerRefused, VerificationFailed
from exchange.client.session import Client
from exchange.crypto.keystore import KeystoreError, open_keystore
from exchange.terminal import printable

__all__ = ["ProgressBar", "add_connection_options", "client_error", "open_client",
           "run_client"]

T = TypeVar("T")

CONNECTION_HELP = """\
settings: flags first, then their EXCHANGE_* twins (and EXCHANGE_PASSPHRASE),
then $XDG_CONFIG_HOME/exchange/config.json (keys url, keystore, passphrase_file,
log_key, state_dir)"""


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add the connection options (shown in the help epilog with their twins)."""
    group = parser.add_argument_group("connection")
    group.add_argument("--url", help="server URL ($EXCHANGE_URL)")
    group.add_argument("--keystore", help="your keystore file ($EXCHANGE_KEYSTORE)")
    group.add_argument("--passphrase-file", help="file holding the keystore passphrase "
                       "($EXCHANGE_PASSPHRASE_FILE; or $EXCHANGE_PASSPHRASE)")
    group.add_argument("--log-key", help="the audit log's verifier key ($EXCHANGE_LOG_KEY)")
    group.add_argument("--state-dir", help="local state directory ($EXCHANGE_STATE_DIR)")
    add_insecure_keystore_option(group)


def client_parser(
    subparsers: Any, name: str, help_text: str, *examples: str
) -> argparse.ArgumentParser:
    """Add a client command ``name`` with its help, examples and the connection options."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help_text, description=help_text, epilog=epilog(*examples))
    add_connection_options(parser)
    return parser


def epilog(*examples: str) -> str:
    """Return a client command's epilog: exit statuses, connection options, examples."""
    return _ui.epilog(*examples).replace("\n\nexamples:", "\n\n" + CONNECTION_HELP +
                                         "\n\nexamples:", 1)


def open_client(args: argparse.Namespace) -> Client:
    """Return a :class:`Client` for the options in ``args`` (must run inside an event loop)."""
    config = load_client_config({
        "url": args.url, "keystore": args.keystore, "passphrase_file": args.passphrase_file,
        "log_key": args.log_key, "state_dir": args.state_dir,
    })
    if not config.url:
        raise CliError("no server URL", "pass --url or set EXCHANGE_URL", code=ExitCode.USAGE)
    if config.keystore is None:
        raise CliError("no keystore", "pass --keystore or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    data = read_keystore(config.keystore, allow_insecure=args.allow_insecure_keystore)
    passphrase = _ui.read_passphrase(
        "EXCHANGE_PASSPHRASE", confirm=False,
        passphrase_file=str(config.passphrase_file) if config.passphrase_file else None)
    try:
        identity = open_keystore(data, passphrase)
    except KeystoreError as err:
        raise CliError(f"cannot open keystore {str(config.keystore)!r}: {err}",
                       "check the passphrase", code=ExitCode.KEY_PROBLEM) from None
    return Client(identity, config.url, log_key=config.log_key,
                  state_dir=config.state_dir(identity.id), warn=_ui.warning)


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
    return CliError(str(err), *err.hints, code=code)


def run_client(args: argparse.Namespace, work: Callable[[Client], Awaitable[T]]) -> T:
    """Open the client, run ``work(client)`` on a fresh event loop, close; map errors."""

    async def main() -> T:
        client = open_client(args)
        try:
            # Every command first checks the log is consistent with what we saw before.
            await client.checkpoint()
            return await work(client)
        finally:
            await client.close()

    try:
        return asyncio.run(main())
    except ClientError as err:
        raise client_error(err) from None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class ProgressBar:
    """A one-line progress bar with rate and ETA on stderr, only when it is a terminal."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self.label = printable(label, 40)  # a decrypted file name: the uploader's text
        self.enabled = enabled and sys.stderr.isatty()
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last < 0.2 and done < total:
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        eta = (total - done) / rate if rate > 0 else 0
        width = 24
        filled = int(width * done / total) if total else width
        sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{_size(done)}/{_size(total)} {_size(rate)}/s eta {eta:4.0f}s ")
        sys.stderr.flush()

    def finish(self) -> None:
        """End the bar's line."""
        if self.enabled and self.last:
            sys.stderr.write("\n")
            sys.stderr.flush()


def existing_file(text: str) -> Path:
    """argparse type: a path that must be a regular file."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file")
    return path
