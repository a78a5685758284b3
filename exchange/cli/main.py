"""The ``exchange`` command: a small dispatcher over command modules.

Each command module exposes ``register(subparsers)``, adding its parsers and
setting ``func`` (``Namespace -> int``) as the handler. This is the only place
that turns exceptions into messages and exit codes (see ``_ui.ExitCode``).

Command modules are imported only when their command runs: the server and
client modules pull in aiohttp and friends (about a second and 50 MiB), which
``exchange age decrypt`` or ``exchange key show`` must not pay for. The table
below names every top-level command, its module and its one-line help; a new
command module adds its commands here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from exchange import __version__
from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.cli.fast import silence_stdout
from exchange.crypto.age import (
    ArmorError,
    HeaderError,
    HeaderMacError,
    NoIdentityMatch,
    PayloadError,
)
from exchange.crypto.envelope import EnvelopeMismatch
from exchange.crypto.keys import BundleError
from exchange.crypto.keystore import KeystoreError
from exchange.crypto.manifest import ManifestMismatch, ManifestSignatureError
from exchange.errors import ExchangeError

__all__ = ["build_parser", "failure_status", "main"]

# command -> (module under exchange.cli, one-line help shown by `exchange --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "age": ("age_cmd", "encrypt, decrypt and make keys in the standard age v1 format"),
    "keygen": ("keys_cmd", "create a participant keystore (signing + age keys)"),
    "key": ("keys_cmd", "inspect keystores and public bundles"),
    "server": ("server_cmd", "set up, back up, restore, check and upgrade a server"),
    "serve": ("server_cmd", "run the server"),
    "agent": ("agent_cmd", "unlock your keystore once and keep it in a local agent"),
    "enrol": ("case_cmd", "enrol a participant from its public bundle (admin)"),
    "case": ("case_cmd", "create, list and manage cases"),
    "participant": ("participant_cmd", "list, suspend, reinstate participants, change keys, roles"),
    "trust": ("participant_cmd", "show a trust anchor and its fingerprint (compare it by phone)"),
    "upload": ("transfer_cmd", "encrypt, sign and upload evidence files to a case"),
    "files": ("transfer_cmd", "list a case's evidence with decrypted names"),
    "pull": ("transfer_cmd", "download, verify and keep evidence (--watch to follow)"),
    "custody": ("custody_cmd", "complete and verify chain-of-custody records"),
    "audit": ("audit_cmd", "verify the audit log, report who did what, offline receipts"),
    "witness": ("witness_cmd", "run a C2SP tlog-witness that cosigns the log's checkpoints"),
    "demo": ("demo_cmd", "run the evidence-exchange story with the demo identities"),
    "ui": ("ui_cmd", "open the local graphical interface in your browser"),
    "completion": ("docs_cmd", "print a shell completion script (bash or zsh)"),
    "manpage": ("docs_cmd", "write the man pages (exchange.1, exchange-COMMAND.1) to a folder"),
}


# Other spellings accepted for a command (registered as argparse aliases by its module).
ALIASES = {"enroll": "enrol"}


def _command_word(argv: Sequence[str]) -> str | None:
    """Return the command named in ``argv`` (its first non-option word), if any."""
    for word in argv:
        if not word.startswith("-"):
            return ALIASES.get(word, word)
    return None


def build_parser(argv: Sequence[str] = ()) -> _ui.ArgumentParser:
    """Return the top-level parser for ``argv``.

    Only the module of the command named in ``argv`` is imported and
    registered; the other commands get a light stub with their help line, so
    ``exchange --help`` lists them all. With no ``argv``, every module is
    registered (for tools and tests that want the whole parser).
    """
    parser = _ui.ArgumentParser(
        prog=_ui.PROG,
        description="End-to-end encrypted evidence exchange: server, client, audit, offline tools.",
        epilog=_ui.epilog(
            "exchange age keygen -o key.txt",
            "exchange keygen --id alice.fr -o alice.keystore --bundle-out alice.bundle.json",
            "exchange key show alice.keystore",
            "exchange agent start --keystore alice.keystore",
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    word = _command_word(argv) if argv else None
    wanted = {COMMANDS[word][0]} if word in COMMANDS else (
        {module for module, _ in COMMANDS.values()} if not argv else set())
    registered: set[str] = set()
    for name, (module, help_text) in COMMANDS.items():
        if module in wanted:
            if module not in registered:
                importlib.import_module(f"exchange.cli.{module}").register(subparsers)
                registered.add(module)
        else:
            subparsers.add_parser(name, help=help_text)
    return parser


def _classify(err: ExchangeError) -> tuple[ExitCode, tuple[str, ...]]:
    if isinstance(err, NoIdentityMatch):
        return ExitCode.KEY_PROBLEM, ("is the file encrypted to one of these identities?",)
    if isinstance(err, KeystoreError):
        return ExitCode.KEY_PROBLEM, ()
    if isinstance(
        err,
        HeaderMacError | PayloadError | ManifestMismatch | ManifestSignatureError
        | EnvelopeMismatch,
    ):
        return ExitCode.VERIFICATION_FAILED, ("the data was altered, damaged or truncated",)
    if isinstance(err, ArmorError | HeaderError):
        return ExitCode.ERROR, ("is this an age file?",)
    if isinstance(err, BundleError):
        return ExitCode.ERROR, ()
    return ExitCode.ERROR, ()


def _report(message: str, hints: Sequence[str]) -> None:
    _ui.error(message)
    for text in hints:
        _ui.hint(text)


def failure_status(err: CliError | ExchangeError | OSError) -> int:
    """Print ``err`` as the CLI reports it (message, hints) and return its exit status.

    The one mapping from errors to messages and codes, shared by :func:`main`
    and the agent answering a command itself (``exchange.cli._agent_commands``).
    """
    if isinstance(err, CliError):
        _report(err.message, err.hints)
        return err.code
    if isinstance(err, ExchangeError):
        code, hints = _classify(err)
        _report(str(err) or type(err).__name__, hints)
        return code
    where = f" {err.filename!r}" if err.filename else ""
    _report(f"i/o error{where}: {_ui.os_reason(err)}", ())
    return ExitCode.ERROR


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        arguments = sys.argv[1:] if argv is None else list(argv)
        args = build_parser(arguments).parse_args(arguments)
        code: int = args.func(args)
        return code
    except (CliError, ExchangeError) as err:
        return failure_status(err)
    except KeyboardInterrupt:
        _ui.info("interrupted")  # the user asked for it: not an error
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the flush at interpreter exit.
        silence_stdout()
        return ExitCode.ERROR
    except OSError as err:
        return failure_status(err)


if __name__ == "__main__":
    sys.exit(main())
