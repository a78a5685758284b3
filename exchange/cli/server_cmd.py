"""``exchange server init`` and ``exchange serve``: create a server's data directory, run it.

``server init`` creates the data directory (0700), ``server.json``, the log's
signing key (``log.key``, 0600, a C2SP signed-note Ed25519 key named after the
origin), the database, the log's first entries (``log.init`` at index 0, the
first administrator's ``participant.enrol`` at index 1, both server-originated)
and a first checkpoint, then prints the log's verifier key on stdout: auditors
pin it. ``serve`` runs the server (see ``exchange.transport.server``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from pathlib import Path
from typing import Any

from exchange.audit.entry import PARTICIPANT_ENROL, UNKNOWN_ACTOR, AuditEntry, log_init_entry
from exchange.audit.note import Ed25519Signer, VerifierKeyError
from exchange.cli import _ui
from exchange.cli._ui import CliError
from exchange.config import CONFIG_FILE, ServerConfig, load_config, write_config_file
from exchange.crypto.keys import PublicBundle, parse_bundle
from exchange.keyfiles import write_secret_file
from exchange.service.participants import (
    bundle_record,
    enrolment_details,
    participant_record,
)
from exchange.service.policy import Role
from exchange.transport.server import (
    LOG_KEY_FILE,
    checkpoint_signer,
    encode_signer_key,
    open_store,
    serve,
)

__all__ = ["register"]

_MAX_BUNDLE_FILE_BYTES = 64 * 1024


def register(subparsers: Any) -> None:
    """Add ``server init`` and ``serve`` to the command parser."""
    server = subparsers.add_parser(
        "server", help="set up a server's data directory",
        description="Set up an exchange server.",
        epilog=_ui.epilog(
            "exchange server init --data-dir /srv/exchange --origin exchange.example/v1/audit "
            "--admin admin.bundle.json",
        ),
    )
    commands = server.add_subparsers(dest="server_command", metavar="COMMAND", required=True)
    init = commands.add_parser(
        "init", help="create the data directory, database, log key and first administrator",
        description="Create a server: data directory, database, log signing key, log.init "
                    "and the first administrator's enrolment. Prints the log's verifier key.",
        epilog=_ui.epilog(
            "exchange server init --data-dir /srv/exchange --origin exchange.example/v1/audit "
            "--admin admin.bundle.json",
        ),
    )
    init.add_argument("--data-dir", required=True, type=Path, help="the new data directory")
    init.add_argument("--origin", required=True,
                      help="the log's origin line (also the log key's name); C2SP tlog-tiles "
                           "recommends the log's URL prefix without the scheme: "
                           "HOST/v1/audit")
    init.add_argument("--admin", required=True, type=Path,
                      help="public bundle of the first administrator")
    init.add_argument("--organisation", default="", help="the administrator's organisation")
    init.add_argument("--country", default="", help="the administrator's country")
    init.add_argument("--database", default=os.environ.get("EXCHANGE_DATABASE_URL"),
                      help="postgresql:// url (default: $EXCHANGE_DATABASE_URL, else the "
                           "embedded SQLite file in the data directory)")
    init.set_defaults(func=_init)

    run = subparsers.add_parser(
        "serve", help="run the server",
        description="Run the exchange server until SIGTERM (which drains in-flight requests). "
                    "Options override server.json and their EXCHANGE_* environment twins.",
        epilog=_ui.epilog(
            "exchange serve --data-dir /srv/exchange",
            "exchange serve --data-dir /srv/exchange --port 0",
        ),
    )
    run.add_argument("--data-dir", required=True, type=Path, help="the data directory")
    run.add_argument("--database", help="postgresql:// url ($EXCHANGE_DATABASE_URL)")
    run.add_argument("--host", help="address to listen on ($EXCHANGE_HOST; default 127.0.0.1)")
    run.add_argument("--port", type=int,
                     help="port ($EXCHANGE_PORT; default 8443; 0 = any free port)")
    run.add_argument("--public-url",
                     help="URL clients use, which signatures cover ($EXCHANGE_PUBLIC_URL)")
    run.add_argument("--tls-cert", help="certificate chain file ($EXCHANGE_TLS_CERT)")
    run.add_argument("--tls-key", help="private key file ($EXCHANGE_TLS_KEY)")
    run.set_defaults(func=_serve)


def _read_bundle(path: Path) -> PublicBundle:
    try:
        data = path.read_bytes()[: _MAX_BUNDLE_FILE_BYTES + 1]
    except OSError as err:
        raise CliError(f"cannot read bundle {str(path)!r}: {_ui.os_reason(err)}") from None
    return parse_bundle(data)


def _init(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if (data_dir / CONFIG_FILE).exists() or (data_dir / LOG_KEY_FILE).exists():
        raise CliError(f"{str(data_dir)!r} holds a server already",
                       "use 'exchange serve --data-dir ...' to run it")
    bundle = _read_bundle(args.admin)
    values: dict[str, Any] = {"origin": args.origin}
    if args.database:
        values["database_url"] = args.database
    seed = os.urandom(32)
    try:
        signer = Ed25519Signer(args.origin, seed)
    except VerifierKeyError as err:
        raise CliError(f"origin {args.origin!r} cannot name a log key: {err}") from None
    ServerConfig(data_dir=data_dir, **values)  # validate before touching the disk
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    write_config_file(data_dir, values)
    write_secret_file(data_dir / LOG_KEY_FILE,
                      (encode_signer_key(args.origin, seed) + "\n").encode("ascii"))
    config = load_config(data_dir, environ={})
    asyncio.run(_bootstrap(config, signer, bundle, organisation=args.organisation,
                           country=args.country))
    vkey = signer.verifier().vkey()
    print(vkey)
    _ui.info(f"server created in {str(data_dir)!r}; first administrator {bundle.id!r}")
    _ui.info("keep log.key secret and backed up: it signs the audit log's checkpoints")
    return 0


async def _bootstrap(
    config: ServerConfig, signer: Ed25519Signer, bundle: PublicBundle, *, organisation: str,
    country: str,
) -> None:
    store = await open_store(config, checkpoint_signer(signer))
    try:
        if await store.tree_size() != 0:
            raise CliError("the database holds an audit log already",
                           "give a new database with --database, or run 'exchange serve'")
        vkey = signer.verifier().vkey()
        details = enrolment_details(bundle, role=Role.ADMIN.value, organisation=organisation,
                                    country=country)
        async with store.transaction("server_init") as tx:
            await tx.append_audit(lambda index, prev, time: log_init_entry(
                time=time, origin=config.origin, log_key=vkey))

            def enrol(index: int, prev: bytes, time: str) -> AuditEntry:
                return AuditEntry(
                    index=index, time=time, actor=UNKNOWN_ACTOR, actor_key="",
                    action=PARTICIPANT_ENROL, case=None, object=bundle.id, outcome="ok",
                    reason=None, request=None, details=details, prev=prev,
                )

            appended = await tx.append_audit(enrol)
            await tx.add_participant(participant_record(
                bundle, role=Role.ADMIN.value, organisation=organisation, country=country,
                enrolled_at=int(time.time()),
                enrolment_index=appended.index,
            ))
            await tx.put_participant_bundle(bundle_record(bundle, appended.index))
        await store.publish_checkpoint()
    finally:
        await store.close()


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "database_url": args.database, "host": args.host, "port": args.port,
        "public_url": args.public_url, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
    }
    config = load_config(args.data_dir, overrides=overrides)
    asyncio.run(serve(config))
    return 0
