"""``exchange ui``: the local graphical interface, on the client library (``exchange.ui``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import Any

from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.client.config import load_client_config, read_anchor
from exchange.client.errors import ClientError
from exchange.ui.server import run_ui
from exchange.ui.state import UiSettings

__all__ = ["register"]

IDLE_ENV = "EXCHANGE_UI_IDLE_LOCK_MIN"
PULL_DIR_ENV = "EXCHANGE_UI_PULL_DIR"


def register(subparsers: Any) -> None:
    """Add ``exchange ui``."""
    parser = subparsers.add_parser(
        "ui", help="open the local graphical interface in your browser",
        description=(
            "Start the exchange's graphical interface on this computer: a small web server "
            "bound to 127.0.0.1 on a free port, reachable only with the one-time address it "
            "prints (which it also opens in your browser). Your keystore is unlocked in the "
            "page and the keys stay in this program's memory; the interface locks itself "
            "when idle. Prosecutors manage cases and drop evidence files and folders, "
            "coordination centres watch and pull evidence live, auditors verify the log, "
            "administrators enrol participants. Stop it with Ctrl-C."),
        epilog=_ui.epilog("exchange ui",
                          "exchange ui --no-browser --keystore ~/.config/exchange/keystore.json")
        .replace("\n\nexamples:", "\n\nsettings: --url, --keystore, --log-key, --state-dir as "
                 "for every client command (EXCHANGE_URL, EXCHANGE_KEYSTORE, EXCHANGE_LOG_KEY, "
                 "EXCHANGE_STATE_DIR, then the config file)\n\nexamples:", 1))
    parser.add_argument("--url", help="server URL ($EXCHANGE_URL)")
    parser.add_argument("--keystore", action="append", metavar="FILE",
                        help="your keystore ($EXCHANGE_KEYSTORE); repeat to choose in the page")
    parser.add_argument("--trust", help="the pinned trust anchor file, trust.json "
                        "($EXCHANGE_TRUST)")
    parser.add_argument("--log-key", help=argparse.SUPPRESS)
    parser.add_argument("--state-dir", help="local state directory ($EXCHANGE_STATE_DIR)")
    parser.add_argument("--port", type=int, default=0,
                        help="port on 127.0.0.1 (default: any free port)")
    parser.add_argument("--no-browser", action="store_true",
                        help="only print the address, do not open a browser")
    parser.add_argument("--idle-lock-min", type=float,
                        help=f"lock after this many idle minutes (${IDLE_ENV}, default 15)")
    parser.add_argument("--pull-dir", default=os.environ.get(PULL_DIR_ENV),
                        help=f"default folder for pulled evidence (${PULL_DIR_ENV}, "
                             "default ~/exchange-evidence)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Start the interface and serve until interrupted."""
    try:
        config = load_client_config({"url": args.url, "keystore": None,
                                     "passphrase_file": None, "log_key": args.log_key,
                                     "state_dir": args.state_dir, "trust": args.trust})
        anchor = read_anchor(config)
    except ClientError as err:
        raise CliError(str(err), *err.hints, code=ExitCode.USAGE) from None
    keystores = [Path(k) for k in args.keystore or []] or \
        ([config.keystore] if config.keystore else [])
    if not config.url:
        raise CliError("no server URL", "pass --url or set EXCHANGE_URL", code=ExitCode.USAGE)
    if not keystores:
        raise CliError("no keystore", "pass --keystore or set EXCHANGE_KEYSTORE",
                       code=ExitCode.USAGE)
    try:
        idle_min = args.idle_lock_min if args.idle_lock_min is not None else \
            float(os.environ.get(IDLE_ENV, "15"))
    except ValueError:
        raise CliError(f"${IDLE_ENV} must be a number of minutes", code=ExitCode.USAGE) from None
    if not 0 <= args.port <= 65535 or not idle_min > 0:
        raise CliError("--port must be 0..65535 and --idle-lock-min positive",
                       code=ExitCode.USAGE)
    settings = UiSettings(
        url=config.url, anchor=anchor, keystores=tuple(keystores),
        state_root=config.state_root, idle_lock_s=idle_min * 60,
        pull_dir=Path(args.pull_dir or Path.home() / "exchange-evidence").expanduser())
    serve(settings, port=args.port, open_browser=not args.no_browser)
    return int(ExitCode.OK)


def serve(settings: UiSettings, *, port: int, open_browser: bool) -> None:
    """Run the interface, printing its address (stdout) and how to stop it (stderr)."""
    def ready(url: str) -> None:
        print(url, flush=True)
        _ui.info("interface ready at the address above (it carries a one-time secret: "
                 "do not share it); ctrl-c to stop")

    try:
        asyncio.run(run_ui(settings, port=port, open_browser=open_browser, on_ready=ready))
    except OSError as err:
        raise CliError(f"cannot start the interface: {_ui.os_reason(err)}") from None
    sys.stdout.flush()
