"""The ``exchange`` command: a small dispatcher over command modules.

Each command module exposes ``register(subparsers)``, adding its parsers and
setting ``func`` (``Namespace -> int``) as the handler. This is the only place
that turns exceptions into messages and exit codes (see ``_ui.ExitCode``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from exchange import __version__
from exchange.cli import (
    _ui,
    age_cmd,
    audit_cmd,
    case_cmd,
    demo_cmd,
    keys_cmd,
    server_cmd,
    transfer_cmd,
)
from exchange.cli._ui import CliError, ExitCode
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

__all__ = ["build_parser", "main"]

# Later issues append their modules here (server, case, upload, pull, audit, ...).
COMMAND_MODULES = (
    age_cmd, keys_cmd, demo_cmd, server_cmd, case_cmd, transfer_cmd, audit_cmd,
)


def build_parser() -> _ui.ArgumentParser:
    """Return the top-level parser with every command module registered."""
    parser = _ui.ArgumentParser(
        prog=_ui.PROG,
        description="End-to-end encrypted evidence exchange: offline tools.",
        epilog=_ui.epilog(
            "exchange age keygen -o key.txt",
            "exchange keygen --id alice.fr -o alice.keystore --bundle-out alice.bundle.json",
            "exchange key show alice.keystore",
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        module.register(subparsers)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``) and return the exit status."""
    try:
        args = build_parser().parse_args(argv)
        code: int = args.func(args)
        return code
    except CliError as err:
        _report(err.message, err.hints)
        return err.code
    except ExchangeError as err:
        code, hints = _classify(err)
        _report(str(err) or type(err).__name__, hints)
        return code
    except KeyboardInterrupt:
        _ui.error("interrupted")
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `| head`); silence the flush at interpreter exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ExitCode.ERROR
    except OSError as err:
        where = f" {err.filename!r}" if err.filename else ""
        _report(f"i/o error{where}: {_ui.os_reason(err)}", ())
        return ExitCode.ERROR


if __name__ == "__main__":
    sys.exit(main())
