"""``exchange server init`` and ``exchange serve``: create a server's data directory, run it.

``server init`` creates the data directory (0700), ``server.json``, the log's
signing key (``log.key``, 0600, a C2SP signed-note Ed25519 key named after the
origin), the database, the log's first entries (``log.init`` at index 0, the
first administrator's ``participant.enrol`` at index 1, both server-originated)
and a first checkpoint, then prints the log's verifier key on stdout: auditors
pin it. ``serve`` runs the server (see ``exchange.transport.server``). The
operations commands (``backup``, ``restore``, ``check``, ``migrate``,
``log-key``) live in :mod:`exchange.cli.server_admin_cmd`.
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
from exchange.audit.witness_policy import PolicyError, WitnessPolicy
from exchange.cli import _ui, server_admin_cmd
from exchange.cli._ui import CliError, ExitCode
from exchange.config import (
    CONFIG_FILE,
    ConfigError,
    ServerConfig,
    load_config,
    parse_witness_flag,
    write_config_file,
)
from exchange.crypto.anchor import AnchorAdmin, AnchorError, TrustAnchor
from exchange.crypto.keys import PublicBundle, parse_bundle
from exchange.errors import ExchangeError
from exchange.keyfiles import write_secret_file
from exchange.ops.rollback import LogRolledBack, record_published
from exchange.service.participants import (
    bundle_record,
    enrolment_details,
    participant_record,
)
from exchange.service.policy import Role
from exchange.service.statements import TRUST_FILE
from exchange.storage.metadata import Transaction
from exchange.storage.open_blobs import close_blob_store, open_blob_store
from exchange.storage.s3_blobs import S3BlobStore
from exchange.transport.server import (
    LOG_KEY_FILE,
    PublicUrlMismatch,
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
        "server", help="set up, back up, restore, check and upgrade a server",
        description="Set up and look after an exchange server: create it, back it up, "
                    "restore and check it, upgrade its database, show its log key.",
        epilog=_ui.epilog(
            "exchange server init --data-dir /srv/exchange --origin exchange.example/v1/audit "
            "--admin admin.bundle.json",
            "exchange server backup --data-dir /srv/exchange -o /backup/exchange.tar",
            "exchange server check --data-dir /srv/exchange",
        ),
    )
    commands = server.add_subparsers(dest="server_command", metavar="COMMAND", required=True)
    init = commands.add_parser(
        "init", help="create the data directory, database, log key and first administrator",
        description="Create a server: data directory, database, log signing key, log.init "
                    "and the first administrators' enrolment. Writes the trust anchor "
                    "(DATA_DIR/trust.json) that every participant pins once, out of band, and "
                    "prints the log's verifier key.",
        epilog=_ui.epilog(
            "exchange server init --data-dir /srv/exchange --origin exchange.example/v1/audit "
            "--admin admin.bundle.json",
            "AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... exchange server init "
            "--data-dir /srv/exchange --origin exchange.example/log --admin admin.bundle.json "
            "--database postgresql://db/exchange --blob-store s3://evidence/exchange "
            "--s3-endpoint https://rgw.example:7480",
        ),
    )
    init.add_argument("--data-dir", required=True, type=Path, help="the new data directory")
    init.add_argument("--origin", required=True,
                      help="the log's origin line (also the log key's name); C2SP tlog-tiles "
                           "recommends the log's URL prefix without the scheme: "
                           "HOST/v1/audit")
    init.add_argument("--admin", required=True, type=Path, action="append",
                      help="public bundle of a first administrator (repeat for several); "
                           "they are named in the trust anchor")
    init.add_argument("--witness", action="append", metavar="NAME=VKEY@URL", default=[],
                      help="a witness every participant requires (repeat); named in the "
                           "trust anchor. 'exchange witness init' prints the line")
    init.add_argument("--witness-quorum", type=int, default=None,
                      help="how many witnesses must cosign a checkpoint (default: all named)")
    init.add_argument("--admin-quorum", type=int, default=1,
                      help="how many administrators must sign an administrative statement "
                           "(default 1)")
    init.add_argument("--organisation", default="", help="the administrator's organisation")
    init.add_argument("--country", default="", help="the administrator's country")
    init.add_argument("--database", default=os.environ.get("EXCHANGE_DATABASE_URL"),
                      help="postgresql:// url (default: $EXCHANGE_DATABASE_URL, else the "
                           "embedded SQLite file in the data directory)")
    init.add_argument("--blob-store", default=os.environ.get("EXCHANGE_BLOB_STORE"),
                      help="s3://BUCKET/PREFIX: keep evidence blobs in an S3-compatible object "
                           "store (default: $EXCHANGE_BLOB_STORE, else the data directory); "
                           "the bucket is created if missing")
    init.add_argument("--s3-endpoint", default=os.environ.get("EXCHANGE_S3_ENDPOINT"),
                      help="the object store's URL, e.g. https://rgw.example:7480 (default: "
                           "$EXCHANGE_S3_ENDPOINT, else AWS)")
    init.add_argument("--s3-region", default=os.environ.get("EXCHANGE_S3_REGION"),
                      help="the object store's region ($EXCHANGE_S3_REGION; default us-east-1)")
    init.add_argument("--s3-credentials-file", type=Path,
                      default=os.environ.get("EXCHANGE_S3_CREDENTIALS_FILE"),
                      help="file (mode 0600) with two lines: access key, secret key; without "
                           "it $AWS_ACCESS_KEY_ID and $AWS_SECRET_ACCESS_KEY are used. "
                           "Credentials are never given as flag values")
    init.set_defaults(func=_init)
    server_admin_cmd.register(commands)

    run = subparsers.add_parser(
        "serve", help="run the server",
        description="Run the exchange server until SIGTERM (which drains in-flight requests). "
                    "Options override server.json and their EXCHANGE_* environment twins.",
        epilog=_ui.epilog(
            "exchange serve --data-dir /srv/exchange",
            "exchange serve --data-dir /srv/exchange --port 0",
            "exchange serve --data-dir /srv/exchange --witness-quorum 2 "
            "--witness om.nl=witness.om.nl+8d66cf3f+BA...@https://witness.om.nl "
            "--witness gba.de=witness.gba.de+1b2c3d4e+BA...@https://witness.gba.de "
            "--witness eurojust=witness.eurojust.eu+5f6a7b8c+BA...@https://witness.eurojust.eu",
            "exchange serve --data-dir /srv/exchange --metrics-port 9464",
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
    run.add_argument("--witness", action="append", metavar="NAME=VKEY@URL",
                     help="a witness to collect checkpoint cosignatures from (repeatable; "
                          "VKEY and URL as printed by 'exchange witness init'; "
                          "$EXCHANGE_WITNESSES, space-separated; or \"witnesses\" in "
                          "server.json, in the witness policy's JSON shape)")
    run.add_argument("--witness-quorum", type=int, metavar="K",
                     help="cosignatures a checkpoint needs before it is served "
                          "($EXCHANGE_WITNESS_QUORUM; default: every witness); use the "
                          "quorum of the participants' witness policy")
    run.add_argument("--metrics-port", type=int,
                     help="serve Prometheus metrics at http://127.0.0.1:PORT/metrics "
                          "(0 = any free port, printed when ready)")
    run.add_argument("--metrics-host", default="127.0.0.1",
                     help="address of the metrics listener (default 127.0.0.1)")
    run.add_argument("--accept-rollback", action="store_true",
                     help="start although the log is older than the checkpoint this data "
                          "directory last published (after restoring a backup on purpose); "
                          "the decision is recorded in the audit log and in "
                          "rollback-decisions.jsonl")
    run.set_defaults(func=_serve)


def _read_bundle(path: Path) -> PublicBundle:
    try:
        data = path.read_bytes()[: _MAX_BUNDLE_FILE_BYTES + 1]
    except OSError as err:
        raise CliError(f"cannot read bundle {str(path)!r}: {_ui.os_reason(err)}") from None
    return parse_bundle(data)


def _init(args: argparse.Namespace) -> int:
    data_dir: Path = args.data_dir
    if any((data_dir / name).exists() for name in (CONFIG_FILE, LOG_KEY_FILE, TRUST_FILE)):
        raise CliError(f"{str(data_dir)!r} holds a server already",
                       "use 'exchange serve --data-dir ...' to run it")
    bundles = [_read_bundle(path) for path in args.admin]
    values: dict[str, Any] = {"origin": args.origin}
    if args.database:
        values["database_url"] = args.database
    for key in ("blob_store", "s3_endpoint", "s3_region", "s3_credentials_file"):
        if getattr(args, key):
            values[key] = str(getattr(args, key))
    seed = os.urandom(32)
    try:
        signer = Ed25519Signer(args.origin, seed)
    except VerifierKeyError as err:
        raise CliError(f"origin {args.origin!r} cannot name a log key: {err}") from None
    try:
        witnesses = [parse_witness_flag(text) for text in args.witness]
        policy = WitnessPolicy(witnesses=tuple(witnesses),
                               quorum=args.witness_quorum or len(witnesses)) if witnesses else None
        anchor = TrustAnchor(
            origin=args.origin, log_key=signer.verifier().vkey(),
            admins=tuple(AnchorAdmin(b, args.organisation, args.country) for b in bundles),
            admin_quorum=args.admin_quorum,
            witness_policy=policy.to_json() if policy is not None else None)
        if policy is not None:
            values["witnesses"] = policy.to_json()
    except (AnchorError, ConfigError, PolicyError) as err:
        raise CliError(f"cannot make the trust anchor: {err}") from None
    checked: dict[str, Any] = {
        k: Path(v) if k == "s3_credentials_file" else v
        for k, v in values.items() if k != "witnesses"}
    ServerConfig(data_dir=data_dir, **checked)  # validate before touching the disk
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    write_config_file(data_dir, values)
    write_secret_file(data_dir / LOG_KEY_FILE,
                      (encode_signer_key(args.origin, seed) + "\n").encode("ascii"))
    # Created, never overwritten: a trust.json already there is not ours to replace.
    with (data_dir / TRUST_FILE).open("xb") as handle:
        handle.write(anchor.encode())
    config = load_config(data_dir, environ={})
    asyncio.run(_bootstrap(config, signer, anchor))
    print(anchor.log_key)
    names = ", ".join(repr(b.id) for b in bundles)
    _ui.info(f"server created in {str(data_dir)!r}; first administrator(s) {names}")
    _ui.info(f"trust anchor: {str(data_dir / TRUST_FILE)!r}, fingerprint {anchor.fingerprint}")
    _ui.info("give that file to every participant; each one compares its fingerprint with "
             "you by phone ('exchange trust show FILE'), then pins it (--trust FILE or "
             "EXCHANGE_TRUST)")
    _ui.info("keep log.key secret and backed up: it signs the audit log's checkpoints")
    return 0


async def _bootstrap(config: ServerConfig, signer: Ed25519Signer, anchor: TrustAnchor) -> None:
    if config.blob_store is not None:
        await _prepare_bucket(config)
    store = await open_store(config, checkpoint_signer(signer))
    try:
        if await store.tree_size() != 0:
            raise CliError("the database holds an audit log already",
                           "give a new database with --database, or run 'exchange serve'")
        async with store.transaction("server_init") as tx:
            await tx.append_audit(lambda index, prev, time: log_init_entry(
                time=time, origin=config.origin, log_key=anchor.log_key,
                anchor=anchor.fingerprint))
            for admin in anchor.admins:
                await _enrol_genesis(tx, admin)
        checkpoint = await store.publish_checkpoint()
        record_published(config.data_dir, checkpoint, signer.verifier())
    finally:
        await store.close()


async def _enrol_genesis(tx: Transaction, admin: AnchorAdmin) -> None:
    """Record an anchor administrator (server-originated: the anchor is its statement)."""
    bundle = admin.bundle
    details = enrolment_details(bundle, role=Role.ADMIN.value, organisation=admin.organisation,
                                country=admin.country)
    details["genesis"] = True

    def enrol(index: int, prev: bytes, time: str) -> AuditEntry:
        return AuditEntry(
            index=index, time=time, actor=UNKNOWN_ACTOR, actor_key="",
            action=PARTICIPANT_ENROL, case=None, object=bundle.id, outcome="ok",
            reason=None, request=None, details=details, prev=prev,
        )

    appended = await tx.append_audit(enrol)
    await tx.add_participant(participant_record(
        bundle, role=Role.ADMIN.value, organisation=admin.organisation, country=admin.country,
        enrolled_at=int(time.time()), enrolment_index=appended.index,
    ))
    await tx.put_participant_bundle(bundle_record(bundle, appended.index))


async def _prepare_bucket(config: ServerConfig) -> None:
    """Create the bucket if missing, so a wrong endpoint or key fails here, not at upload."""
    blobs = await open_blob_store(
        config.data_dir, config.blob_store, s3_endpoint=config.s3_endpoint,
        s3_region=config.s3_region, s3_credentials_file=config.s3_credentials_file)
    try:
        if isinstance(blobs, S3BlobStore):
            await blobs.ensure_bucket()
    except ExchangeError as err:
        raise CliError(f"the blob store {config.blob_store!r} is not usable: {err}",
                       "check --s3-endpoint and the credentials") from None
    finally:
        await close_blob_store(blobs)


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        "database_url": args.database, "host": args.host, "port": args.port,
        "public_url": args.public_url, "tls_cert": args.tls_cert, "tls_key": args.tls_key,
        "witnesses": args.witness, "witness_quorum": args.witness_quorum,
    }
    config = load_config(args.data_dir, overrides=overrides)
    try:
        asyncio.run(serve(config, accept_rollback=args.accept_rollback,
                          metrics_port=args.metrics_port, metrics_host=args.metrics_host))
    except LogRolledBack as err:
        raise CliError(
            f"refusing to start: {err}",
            "participants and auditors who saw the newer checkpoint will refuse this log "
            "(exit 3); restore a newer backup if you have one",
            "to continue from this older state on purpose, start once with --accept-rollback "
            "(recorded in the audit log and in rollback-decisions.jsonl) and tell every "
            "participant (README: 'Restoring a backup')",
            code=ExitCode.VERIFICATION_FAILED,
        ) from None
    except PublicUrlMismatch as err:
        raise CliError(
            f"refusing to start: {err}",
            f"start with --public-url {err.logged} (and the host and port that serve it), or "
            "first record the new URL with 'exchange server move --public-url URL' "
            "(README: 'Moving a server')",
            code=ExitCode.USAGE,
        ) from None
    return 0
