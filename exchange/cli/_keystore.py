"""Reading a keystore in the CLI: its mode and Argon2id cost checked before any prompt.

Shared by the client commands and the offline ``age`` commands, so it imports
nothing of the network client.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.crypto.keystore import KeystoreError, KeystoreTooWeak
from exchange.keyfiles import ALLOW_INSECURE_ENV, InsecureKeyFile, read_keystore_file

__all__ = ["add_insecure_keystore_option", "keystore_refusal", "read_keystore"]


def add_insecure_keystore_option(parser: argparse._ActionsContainer) -> None:
    """Add ``--allow-insecure-keystore`` (a keystore others can read is refused otherwise)."""
    parser.add_argument("--allow-insecure-keystore", action="store_true",
                        help="use a keystore that group or others can read (refused "
                             f"otherwise; ${ALLOW_INSECURE_ENV}=1)")


def keystore_refusal(path: Path, err: InsecureKeyFile | KeystoreError) -> CliError:
    """Return the CLI error (exit 4, with the way out) for a keystore refused before use."""
    if isinstance(err, InsecureKeyFile):
        return CliError(str(err), code=ExitCode.KEY_PROBLEM)
    if isinstance(err, KeystoreTooWeak):
        return CliError(f"keystore {str(path)!r}: {err}",
                        f"re-encrypt it with current parameters: exchange key upgrade {path}",
                        code=ExitCode.KEY_PROBLEM)
    return CliError(f"cannot open keystore {str(path)!r}: {err}", code=ExitCode.KEY_PROBLEM)


def read_keystore(path: Path, *, allow_insecure: bool) -> bytes:
    """Return the keystore file's bytes, checked (mode, Argon2 cost) before any prompt.

    See :func:`exchange.keyfiles.read_keystore_file`; each refusal is a key
    problem (exit 4) with the way out as a hint.
    """
    try:
        return read_keystore_file(path, allow_insecure=allow_insecure, warn=_ui.warning)
    except (InsecureKeyFile, KeystoreError) as err:
        raise keystore_refusal(path, err) from None
    except (OSError, ValueError) as err:
        reason = _ui.os_reason(err) if isinstance(err, OSError) else str(err)
        raise CliError(f"cannot read keystore {str(path)!r}: {reason}",
                       code=ExitCode.KEY_PROBLEM) from None
