"""``exchange demo``: the README's main job, the whole evidence story against a local server.

The story lives in ``exchange.demo`` (server set-up in ``exchange.demo_server``);
this module parses the options, maps failures to exit statuses (a failed
check is 3, as any failed verification), and with ``--keep`` says how to
point the CLI at the kept data.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from exchange.cli import _ui
from exchange.cli._client_common import client_error
from exchange.cli._ui import CliError, ExitCode
from exchange.cli.ui_cmd import serve
from exchange.client.errors import ClientError
from exchange.demo import (
    CC,
    DEFAULT_KEYS_DIR,
    DEMO_PASSPHRASE,
    DemoFailed,
    DemoResult,
    DemoSetupError,
    run_demo,
)
from exchange.demo_server import DemoServerError
from exchange.ui.demo import demo_settings, reopen_server

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add ``exchange demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="run the evidence-exchange story with the demo identities",
        description=(
            "Start a throwaway exchange server on this machine (embedded SQLite, "
            "127.0.0.1, any free port) and run one case end to end with the demo "
            "identities shipped in the package: enrolment with fingerprint checks, a case "
            "with members, "
            "an encrypted upload, a verified pull with its chain-of-custody record, a "
            "member removed and the case key rotated, the removed member refused, and the "
            "auditor's verification, report and offline receipt. Every step is printed in "
            "plain language and checked; the exit status is 0 only if every check held. "
            "The server is stopped at the end (also on Ctrl-C)."
        ),
        epilog=_ui.epilog("exchange demo", "exchange demo --keep ./demo-data"),
    )
    parser.add_argument(
        "--keys", type=Path, default=DEFAULT_KEYS_DIR,
        help="folder with the demo keystores and bundles (default: the ones shipped in the "
             "package)",
    )
    parser.add_argument(
        "--keep", type=Path, metavar="DIR",
        help="keep the server's data and the participants' files in DIR (new or empty) "
             "and print how to explore them with the CLI",
    )
    parser.add_argument(
        "--ui", action="store_true",
        help="afterwards, open the demo world in the graphical interface (exchange ui) with "
             "every demo identity; ctrl-c to stop",
    )
    parser.add_argument("--no-browser", action="store_true",
                        help="with --ui: only print the interface's address")
    parser.set_defaults(func=run)


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # run the demo's finally blocks: stop the server, remove files


def run(args: argparse.Namespace) -> int:
    """Run the demo; a failed check, server or client error becomes a CliError."""
    previous = signal.signal(signal.SIGTERM, _terminate)
    scratch = Path(tempfile.mkdtemp(prefix="exchange-demo-ui-")) \
        if args.ui and args.keep is None else None
    try:
        result = run_demo(args.keys, keep=args.keep or scratch)
        if args.ui:
            _open_ui(result, args.keys, open_browser=not args.no_browser)
    except DemoFailed as err:
        raise CliError(str(err), "this is a bug: please report it with the output above",
                       code=ExitCode.VERIFICATION_FAILED) from None
    except DemoSetupError as err:
        raise CliError(str(err), "run the demo from a clone of the repository, or pass "
                       "--keys DIR; give --keep a new folder", code=ExitCode.USAGE) from None
    except DemoServerError as err:
        raise CliError(str(err), *[f"server: {line}" for line in err.log[-10:]]) from None
    except ClientError as err:
        raise client_error(err) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.keep is not None:
        _explore(result, args.keys)
    return int(ExitCode.OK)


def _open_ui(result: DemoResult, keys: Path, *, open_browser: bool) -> None:
    """Serve the demo world in the local UI until interrupted, then stop its server."""
    print("\nOpening the demo world in the graphical interface (ctrl-c to stop).", flush=True)
    server = reopen_server(result, keys)
    try:
        serve(demo_settings(result, keys, server.url), port=0, open_browser=open_browser)
    finally:
        server.stop()


def _explore(result: DemoResult, keys: Path) -> None:
    q = shlex.quote
    keystore = (keys / f"{CC}.keystore").resolve()
    # The same URL as during the demo: every logged request was signed for it, and
    # another one would be a different server to clients and to 'audit verify'.
    url = urlsplit(result.url)
    lines = [
        "",
        f"The data is kept in {result.base}. To explore it with the CLI, in two terminals:",
        f"    exchange serve --data-dir {q(str(result.data_dir))} --host {url.hostname} "
        f"--port {url.port}",
        f"    export EXCHANGE_URL={result.url}",
        f"    export EXCHANGE_TRUST={q(str(result.data_dir / 'trust.json'))}",
        f"    export EXCHANGE_KEYSTORE={q(str(keystore))}",
        f"    export EXCHANGE_PASSPHRASE={DEMO_PASSPHRASE}",
        "    export EXCHANGE_ALLOW_INSECURE_KEYSTORE=1  # demo keys: world-readable in a clone",
        f"    export EXCHANGE_STATE_DIR={q(str(result.base / 'cli-state'))}",
        "    exchange case list",
        f"    exchange files {result.case_id}",
        "    exchange audit report --update "
        f"--keystore {q(str((keys / 'auditor-01.keystore').resolve()))}",
    ]
    if result.receipt_path is not None:
        lines.append(f"    exchange audit check {q(str(result.receipt_path))}")
    print("\n".join(lines))
    sys.stdout.flush()
