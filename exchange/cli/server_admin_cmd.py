"""``exchange server backup|restore|check|sweep|migrate|log-key``: running a server for years.

Registered under ``exchange server`` by :mod:`exchange.cli.server_cmd`. Each
command works on a data directory (and its database) and needs no running
server; ``backup`` is safe while one runs. The work itself lives in
:mod:`exchange.ops`; this module parses, prints and maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from pathlib import Path
from typing import Any

from exchange.audit.note import (
    Ed25519Signer,
    Ed25519Verifier,
    VerifierKeyError,
    parse_verifier_key,
)
from exchange.cli import _ui
from exchange.cli._client_common import client_parser, run_client
from exchange.cli._ui import CliError, ExitCode
from exchange.client import admin
from exchange.client.session import Client
from exchange.config import ConfigError, ServerConfig, check_public_url, load_config
from exchange.crypto.anchor import parse_anchor
from exchange.errors import ExchangeError
from exchange.ops.backup import BackupError, make_backup, restore_backup
from exchange.ops.check import check_server
from exchange.ops.logkey import Rotation, RotationError, read_rotations, rotate_log_key
from exchange.ops.schema_status import schema_status
from exchange.service.statements import TRUST_FILE
from exchange.storage.sqlite_store import DATABASE_NAME
from exchange.transport.server import (
    checkpoint_signer,
    encode_signer_key,
    load_log_signer,
    open_store,
    sweep_once,
)

__all__ = ["register"]

_DATABASE_HELP = "postgresql:// url (default: server.json, then $EXCHANGE_DATABASE_URL)"


def _add_data_dir(parser: argparse.ArgumentParser, *, database: bool = True) -> None:
    parser.add_argument("--data-dir", required=True, type=Path, help="the data directory")
    if database:
        parser.add_argument("--database", help=_DATABASE_HELP)


def register(commands: Any) -> None:
    """Add the operations commands to the ``exchange server`` command group."""
    backup = commands.add_parser(
        "backup", help="write a consistent backup archive (safe while serving)",
        description="Write one archive holding a consistent snapshot of the database (SQLite "
                    "online backup, or pg_dump of one PostgreSQL snapshot), every blob the "
                    "snapshot's evidence names (each hashed against its address on the way) "
                    "and server.json. The log's signing key (log.key) is included only with "
                    "--include-keys: keep such an archive as secret as the server. Safe while "
                    "the server runs.",
        epilog=_ui.epilog(
            "exchange server backup --data-dir /srv/exchange -o /backup/exchange-$(date +%F).tar",
            "exchange server backup --data-dir /srv/exchange -o full.tar --include-keys --json",
        ),
    )
    _add_data_dir(backup)
    backup.add_argument("-o", "--output", required=True, type=Path,
                        help="the new archive file (never overwritten)")
    backup.add_argument("--include-keys", action="store_true",
                        help="also put log.key (the log's signing key) in the archive")
    backup.add_argument("--json", action="store_true", help="print what the archive holds")
    backup.set_defaults(func=_backup)

    restore = commands.add_parser(
        "restore", help="restore a backup archive into a new data directory",
        description="Check every member of a backup archive against its manifest and every "
                    "blob against its address, then create the data directory from it. The "
                    "target must be new or empty (an existing published-checkpoint file is "
                    "kept: the server then refuses to start on a log older than the one it "
                    "published). A PostgreSQL backup needs --database, an existing empty "
                    "database. Then run 'exchange server check' and 'exchange serve'.",
        epilog=_ui.epilog(
            "exchange server restore /backup/exchange-2026-12-01.tar --data-dir /srv/exchange",
            "exchange server restore pg.tar --data-dir /srv/exchange "
            "--database postgresql://exchange@db/exchange_restored",
        ),
    )
    restore.add_argument("archive", type=Path, metavar="ARCHIVE", help="the backup archive")
    restore.add_argument("--data-dir", required=True, type=Path,
                         help="the data directory to create")
    restore.add_argument("--database", help="postgresql:// url of an empty database "
                                            "(PostgreSQL backups only)")
    restore.add_argument("--json", action="store_true", help="print what was restored")
    restore.set_defaults(func=_restore)

    check = commands.add_parser(
        "check", help="check a data directory: blobs, evidence, audit log",
        description="Read everything and report what is wrong: the schema is current, every "
                    "audit entry up to the latest checkpoint verifies (chain, Merkle root, "
                    "checkpoint signature, request signatures), the log extends the last "
                    "published checkpoint, every blob hashes to its address and every "
                    "evidence record has its blob. Reads only. Exit 3 when a problem is found.",
        epilog=_ui.epilog(
            "exchange server check --data-dir /srv/exchange",
            "exchange server check --data-dir /srv/exchange --log-key "
            "'exchange.example.org/log+0e18fe1b+AZnI…' --json",
        ),
    )
    _add_data_dir(check)
    check.add_argument("--log-key", help="the log's verifier key (default: from log.key)")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=_check)

    sweep = commands.add_parser(
        "sweep", help="enforce the cases' retention policies now",
        description="Erase every item its case's retention policy (a signed case.policy "
                    "statement) makes due: its blob, its sealed manifest and, once every item "
                    "of an old key epoch is erased, that epoch's envelopes (crypto-shredding). "
                    "Each erasure is an audit entry naming the item and the policy. A case "
                    "under legal hold is skipped. The server does this every 10 minutes; "
                    "this runs it once (safe while the server runs).",
        epilog=_ui.epilog("exchange server sweep --data-dir /srv/exchange --json"),
    )
    _add_data_dir(sweep)
    sweep.add_argument("--json", action="store_true", help="print what was done as JSON")
    sweep.set_defaults(func=_sweep)

    migrate = commands.add_parser(
        "migrate", help="bring the database schema up to this release",
        description="Apply the schema migrations this release has and the database lacks, in "
                    "one transaction. 'exchange serve' does the same at start-up; run this "
                    "first to upgrade at a time you choose, or with --dry-run to see what "
                    "would run. Take a backup before upgrading.",
        epilog=_ui.epilog(
            "exchange server migrate --data-dir /srv/exchange --dry-run",
            "exchange server migrate --data-dir /srv/exchange",
        ),
    )
    _add_data_dir(migrate)
    migrate.add_argument("--dry-run", action="store_true",
                         help="only list the pending migrations")
    migrate.add_argument("--json", action="store_true", help="print the status as JSON")
    migrate.set_defaults(func=_migrate)

    log_key = commands.add_parser(
        "log-key", help="the audit log's verifier key",
        description="Show the audit log's verifier key, which participants and auditors pin, "
                    "and rotate it.",
        epilog=_ui.epilog("exchange server log-key show --data-dir /srv/exchange"),
    )
    log_key_commands = log_key.add_subparsers(dest="log_key_command", metavar="COMMAND",
                                              required=True)
    show = log_key_commands.add_parser(
        "show", help="print the log's verifier key (name+id+key) on stdout",
        description="Print the verifier key of the log's signing key in force (data-dir/"
                    "log.key, or the newest rotated key) on stdout, as 'server init' did: give "
                    "it to participants and auditors over a channel you trust. --history also "
                    "lists the keys it replaced and the audit entry of each rotation.",
        epilog=_ui.epilog("exchange server log-key show --data-dir /srv/exchange",
                          "exchange server log-key show --history --data-dir /srv/exchange"),
    )
    _add_data_dir(show, database=False)
    show.add_argument("--history", action="store_true",
                      help="also list earlier keys and the audit entry of each rotation")
    show.add_argument("--json", action="store_true", help="print the key and history as JSON")
    show.set_defaults(func=_log_key_show)
    rotate = log_key_commands.add_parser(
        "rotate", help="replace the log's signing key (server stopped)",
        description="Generate a new log signing key (a new file log.key.N; earlier key files "
                    "are kept and never changed) and introduce it with a checkpoint note "
                    "signed by both the old and the new key, logged as the audit entry "
                    "log.key_rotate. Clients and auditors accept the new key only through "
                    "that note, then require it. Run it with the server stopped: no process "
                    "may sign with the old key after the transition. Logs with witnesses are "
                    "not rotated yet (the witnesses would need the new key first).",
        epilog=_ui.epilog("exchange server log-key rotate --data-dir /srv/exchange",
                          "exchange server log-key rotate --data-dir /srv/exchange --json"),
    )
    _add_data_dir(rotate)
    rotate.add_argument("--json", action="store_true", help="print the transition as JSON")
    rotate.set_defaults(func=_log_key_rotate)

    move = client_parser(
        commands, "move",
        "record a new public URL for the server (administrators; a signed server.url "
        "statement). From the entry that logs it, requests must be signed for the new URL: "
        "then restart the server with --public-url URL (and the host and port that serve "
        "it). Clients that verify the statement follow; participants update --url.",
        "exchange server move --public-url https://exchange.new.example",
        "exchange server move --public-url https://exchange.new.example --json",
    )
    move.add_argument("--public-url", required=True, metavar="URL",
                      help="the new public URL: scheme://host[:port], no path")
    move.add_argument("--json", action="store_true", help="print the result as JSON")
    move.set_defaults(func=_move)


def _config(args: argparse.Namespace) -> ServerConfig:
    overrides = {"database_url": getattr(args, "database", None)}
    return load_config(args.data_dir, overrides=overrides)


def _log_verifier(data_dir: Path, vkey: str | None) -> Ed25519Verifier:
    if vkey is not None:
        try:
            verifier = parse_verifier_key(vkey)
        except VerifierKeyError as err:
            raise CliError(f"invalid --log-key: {err}", code=ExitCode.USAGE) from None
        if not isinstance(verifier, Ed25519Verifier):
            raise CliError("--log-key must be an Ed25519 log key", code=ExitCode.USAGE)
        return verifier
    try:
        return load_log_signer(data_dir).verifier()
    except FileNotFoundError:
        raise CliError(f"no log.key in {str(data_dir)!r}",
                       "give the verifier key with --log-key", code=ExitCode.KEY_PROBLEM) from None


def _rotations(data_dir: Path) -> list[Rotation]:
    try:
        return read_rotations(data_dir)
    except RotationError as err:
        raise CliError(str(err), code=ExitCode.VERIFICATION_FAILED) from None


def _log_key_show(args: argparse.Namespace) -> int:
    current = _log_verifier(args.data_dir, None).vkey()
    rotations = _rotations(args.data_dir) if args.history or args.json else []
    if args.json:
        _ui.print_json({"log_key": current, "rotations": [
            {"index": r.index, "old_key": r.old_key, "new_key": r.new_key} for r in rotations]})
        return ExitCode.OK
    print(current)
    for rotation in rotations:
        print(f"  replaced {rotation.old_key} at audit entry {rotation.index}")
    return ExitCode.OK


def _log_key_rotate(args: argparse.Namespace) -> int:
    config = _config(args)
    old = load_log_signer(config.data_dir)
    anchor_file = config.data_dir / TRUST_FILE
    if anchor_file.exists() and parse_anchor(anchor_file.read_bytes()).has_witnesses:
        raise CliError("this log has witnesses: rotating its key is not supported yet",
                       "the witnesses would refuse checkpoints of a key they do not know",
                       code=ExitCode.USAGE)
    seed = os.urandom(32)
    new = Ed25519Signer(old.name, seed)

    async def rotate() -> Rotation:
        store = await open_store(config, checkpoint_signer(new))
        try:
            return await rotate_log_key(config.data_dir, store, old, new,
                                        encode_signer_key(old.name, seed))
        finally:
            await store.close()

    try:
        rotation = asyncio.run(rotate())
    except ExchangeError as err:
        raise CliError(f"log-key rotation failed: {err}") from None
    if args.json:
        _ui.print_json({"log_key": rotation.new_key, "old_key": rotation.old_key,
                        "index": rotation.index, "key_file": rotation.key_file})
        return ExitCode.OK
    _ui.info(f"new log key in {rotation.key_file}, introduced at audit entry {rotation.index} "
             "by a note both keys signed; start the server again")
    print(rotation.new_key)
    return ExitCode.OK


def _move(args: argparse.Namespace) -> int:
    try:
        url = check_public_url(args.public_url)
    except ConfigError as err:
        raise CliError(f"invalid --public-url: {err}", code=ExitCode.USAGE) from None

    async def work(client: Client) -> int:
        result = await admin.move_server(client, url)
        index = result.get("audit_index")
        if args.json:
            _ui.print_json({"server_url": url, "audit_index": index})
            return 0
        _ui.info(f"recorded {url} as the server's public URL (statement at audit index "
                 f"{index}); requests must now be signed for it")
        _ui.info(f"restart the server with: exchange serve --public-url {url} ...; "
                 f"participants set --url / EXCHANGE_URL to {url}")
        return 0

    return run_client(args, work)


def _backup(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        report = asyncio.run(make_backup(config, args.output, include_keys=args.include_keys))
    except FileExistsError:
        raise CliError(f"{str(args.output)!r} exists already", "choose a new file name") from None
    except BackupError as err:
        raise CliError(str(err), "no archive was written") from None
    if args.json:
        _ui.print_json(report.to_json())
    _ui.info(f"wrote {str(args.output)!r}: {report.dialect} schema {report.schema_version}, "
             f"{report.tree_size} audit entries, {report.blobs} blobs "
             f"({report.blob_bytes} bytes)" + (", with log.key" if report.keys else
                                                ", without log.key"))
    return ExitCode.OK


def _restore(args: argparse.Namespace) -> int:
    try:
        report = restore_backup(args.archive, args.data_dir, database_url=args.database)
    except BackupError as err:
        raise CliError(str(err), f"nothing was written to {str(args.data_dir)!r}") from None
    if args.json:
        _ui.print_json(report.to_json())
    _ui.info(f"restored {report.tree_size} audit entries and {report.blobs} blobs into "
             f"{str(args.data_dir)!r}")
    if not report.keys:
        _ui.warning(f"the archive holds no log.key: copy the log's signing key to "
                    f"{str(args.data_dir / 'log.key')!r} (mode 0600) before 'exchange serve'")
    _ui.info(f"next: exchange server check --data-dir {args.data_dir}")
    return ExitCode.OK


def _check(args: argparse.Namespace) -> int:
    config = _config(args)
    verifier = _log_verifier(args.data_dir, args.log_key)
    report = asyncio.run(check_server(config, verifier))
    if args.json:
        _ui.print_json(report.to_json())
    else:
        _ui.info(f"schema version {report.schema_version}; {report.entries} audit entries "
                 f"verified up to the checkpoint of size {report.checkpoint_size} "
                 f"({report.unsigned_entries} newer, not yet signed)")
        _ui.info(f"{report.blobs} blobs hashed ({report.blob_bytes} bytes), {report.evidence} "
                 f"evidence records, {report.unreferenced_blobs} blobs named by no evidence")
        if report.rollback is not None:
            _ui.warning(f"{report.rollback}; 'exchange serve' will refuse to start unless "
                        "told --accept-rollback")
        for problem in report.problems:
            _ui.error(problem)
    if not report.ok:
        hint = ("upgrade first: exchange server migrate --data-dir DIR" if report.outdated_schema
                else "restore the damaged parts from a backup ('exchange server restore')")
        raise CliError(f"{len(report.problems)} problem(s) found", hint,
                       code=ExitCode.VERIFICATION_FAILED)
    _ui.info("no errors were found")
    return ExitCode.OK


def _sweep(args: argparse.Namespace) -> int:
    report = asyncio.run(sweep_once(_config(args)))
    if args.json:
        _ui.print_json(report.to_json())
    else:
        _ui.info(f"{len(report.erased)} item(s) erased, {len(report.shredded)} epoch(s) "
                 f"shredded, {report.blobs_deleted} blob(s) deleted")
        for case_id, error in report.failed:
            _ui.error(f"case {case_id}: not enforced: {error}")
    return ExitCode.ERROR if report.failed else ExitCode.OK


async def _apply_migrations(config: ServerConfig) -> None:
    store = await open_store(config, None)  # opening applies what is pending
    await store.close()


def _migrate(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        before = asyncio.run(schema_status(config))
    except ExchangeError as err:
        raise CliError(str(err)) from None
    if args.json and (args.dry_run or before.current):
        _ui.print_json({**before.to_json(), "applied": []})
    _ui.info(before.describe())
    if not (config.data_dir / TRUST_FILE).exists():
        _ui.warning("this data directory predates signed statements (no trust.json): its "
                    "enrolments, keys and cases were never signed by the participants, and no "
                    "statement can be made up for them afterwards. Clients refuse such a log; "
                    "'exchange audit verify' reports its trust-relevant entries as unsigned. "
                    "Start a new log with 'exchange server init' and re-enrol participants.")
    if before.current or args.dry_run:
        if not before.current:
            _ui.info("dry run: nothing was changed")
        return ExitCode.OK
    if not (config.database_url or (config.data_dir / DATABASE_NAME).exists()):
        raise CliError(f"no database in {str(config.data_dir)!r}",
                       "use 'exchange server init' for a new server")
    asyncio.run(_apply_migrations(config))
    after = asyncio.run(schema_status(config))
    applied = [f"{m.version:04d}_{m.name}" for m in before.pending]
    if args.json:
        _ui.print_json({**after.to_json(), "applied": applied})
    _ui.info(f"applied {', '.join(applied)}; {after.describe()}")
    return ExitCode.OK

