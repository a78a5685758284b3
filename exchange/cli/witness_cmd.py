"""``exchange witness init|serve``: create a witness's cosigner key, run the witness.

``init`` writes the key (0600) and prints, on stdout, the cosigner's verifier
key (line 1) and the JSON line of this witness for a witness policy (line 2);
the log operator adds ``--witness NAME=VKEY@URL`` to ``exchange serve`` and
the participants add the JSON line to their witness policy. ``serve`` runs
the C2SP tlog-witness endpoint ``<URL>/add-checkpoint`` for the given logs
(see ``exchange.witness.server``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path

from exchange.audit.note import Ed25519Verifier, NoteError, parse_verifier_key
from exchange.cli import _ui
from exchange.cli._ui import CliError, ExitCode
from exchange.witness.keys import create_cosigner_key, load_cosigner_key
from exchange.witness.server import serve

__all__ = ["register"]

_URL_PLACEHOLDER = "https://WITNESS-HOST:PORT"


def register(subparsers: argparse._SubParsersAction[_ui.ArgumentParser]) -> None:
    """Add the ``witness`` command group."""
    group = subparsers.add_parser(
        "witness", help="run a C2SP tlog-witness that cosigns the log's checkpoints",
        description="A witness cosigns a log's checkpoints only when each one consistently "
                    "extends the last it cosigned, so a server cannot show two parties two "
                    "different histories without the witnesses colluding. Run one per "
                    "partner organisation (e.g. each country's prosecution service).",
        epilog=_ui.epilog(
            "exchange witness init --name witness.om.nl -o witness.key",
            "exchange witness serve --data-dir /srv/witness --key witness.key "
            "--log 'exchange.example/log+1a2b3c4d+AQ...' --port 8450",
        ),
    )
    commands = group.add_subparsers(dest="witness_command", metavar="COMMAND", required=True)
    init = commands.add_parser(
        "init", help="create the witness's cosigner key",
        description="Create a cosigner key (Ed25519, tlog-cosignature type 0x04) in FILE "
                    "(mode 0600, never overwritten). Prints the verifier key, then the JSON "
                    "entry of this witness for the participants' witness policy.",
        epilog=_ui.epilog("exchange witness init --name witness.om.nl -o witness.key "
                          "--url https://witness.om.nl"),
    )
    init.add_argument("--name", required=True,
                      help="the key name (a schema-less URL is recommended, no spaces or '+')")
    init.add_argument("-o", "--output", required=True, type=Path, metavar="FILE",
                      help="the new key file")
    init.add_argument("--url", help="the witness's public URL, for the printed policy entry")
    init.set_defaults(func=run_init)

    serve = commands.add_parser(
        "serve", help="run the witness (POST <URL>/add-checkpoint)",
        description="Run the witness until SIGTERM. Keeps, per log origin, the checkpoint it "
                    "cosigned last in DIR/witness.sqlite3 and cosigns only consistent "
                    "extensions of it. Prints 'exchange: witness serving on URL' on stderr "
                    "once listening. Options have EXCHANGE_WITNESS_* twins.",
        epilog=_ui.epilog(
            "exchange witness serve --data-dir /srv/witness --key witness.key "
            "--log 'exchange.example/log+1a2b3c4d+AQ...' --port 8450"),
    )
    serve.add_argument("--data-dir", type=Path,
                       default=os.environ.get("EXCHANGE_WITNESS_DATA_DIR"),
                       help="state directory ($EXCHANGE_WITNESS_DATA_DIR)")
    serve.add_argument("--key", type=Path, default=os.environ.get("EXCHANGE_WITNESS_KEY"),
                       help="cosigner key file made by 'witness init' ($EXCHANGE_WITNESS_KEY)")
    serve.add_argument("--log", action="append", metavar="VKEY", default=None,
                       help="verifier key of a log to witness (repeatable; its name is the "
                            "log's origin; $EXCHANGE_WITNESS_LOGS, space-separated)")
    serve.add_argument("--host", default=os.environ.get("EXCHANGE_WITNESS_HOST", "127.0.0.1"),
                       help="address to listen on ($EXCHANGE_WITNESS_HOST; default 127.0.0.1)")
    serve.add_argument("--port", type=int,
                       default=int(os.environ.get("EXCHANGE_WITNESS_PORT", "8450")),
                       help="port ($EXCHANGE_WITNESS_PORT; default 8450; 0 = any free port)")
    serve.set_defaults(func=run_serve)


def run_init(args: argparse.Namespace) -> int:
    """``exchange witness init``: write the key, print the verifier key and policy entry."""
    try:
        signer = create_cosigner_key(args.output, args.name)
    except NoteError as err:
        raise CliError(f"--name {args.name!r} cannot name a key: {err}",
                       code=ExitCode.USAGE) from None
    except FileExistsError:
        raise CliError(f"{str(args.output)!r} exists already; keys are never overwritten",
                       code=ExitCode.USAGE) from None
    vkey = signer.verifier().vkey()
    url = args.url or _URL_PLACEHOLDER
    print(vkey)
    print(json.dumps({"name": args.name, "key": vkey, "url": url}))
    _ui.info(f"wrote {str(args.output)!r}; keep it secret and backed up: losing it means "
             "starting a new witness that every participant must pin again")
    _ui.info(f"the log operator adds: --witness {args.name}={vkey}@{url}")
    _ui.info("participants add the JSON line above to their witness policy")
    return ExitCode.OK


def _logs(values: list[str] | None) -> list[Ed25519Verifier]:
    texts = values or os.environ.get("EXCHANGE_WITNESS_LOGS", "").split()
    if not texts:
        raise CliError("no log to witness", "pass --log VKEY (the log's verifier key, printed "
                       "by 'exchange server init')", code=ExitCode.USAGE)
    logs = []
    for text in texts:
        try:
            key = parse_verifier_key(text)
        except NoteError as err:
            raise CliError(f"--log {text[:60]!r} is not a verifier key: {err}",
                           code=ExitCode.USAGE) from None
        if not isinstance(key, Ed25519Verifier):
            raise CliError(f"--log {text[:60]!r} is a cosigner key, not a log key (type 0x01)",
                           code=ExitCode.USAGE)
        logs.append(key)
    return logs


def run_serve(args: argparse.Namespace) -> int:
    """``exchange witness serve``: run until SIGTERM."""
    if args.data_dir is None or args.key is None:
        raise CliError("--data-dir and --key are required", code=ExitCode.USAGE)
    logs = _logs(args.log)
    try:
        signer = load_cosigner_key(args.key)
    except NoteError as err:
        raise CliError(f"{str(args.key)!r} is not a cosigner key: {err}",
                       code=ExitCode.KEY_PROBLEM) from None
    Path(args.data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
    asyncio.run(serve(Path(args.data_dir), signer, logs, host=args.host, port=args.port))
    return ExitCode.OK
