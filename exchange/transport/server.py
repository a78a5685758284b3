"""Running the server: open the stores, serve, publish checkpoints, drain on SIGTERM.

``serve(config)`` prints one line ``exchange: serving on URL`` on stderr
once the socket listens, after the start-up lines below (with the real port
when the configured port is 0); when a public URL is configured, the line
ends with ``(listening on URL)``.
SIGTERM or SIGINT stops accepting connections, lets in-flight requests finish
for ``shutdown_timeout_s``, then closes the metadata store. Several processes
may serve one PostgreSQL database and one data directory: the group commit
holds the log's lock, nonces are recorded in the database, and checkpoint
publication is idempotent per tree size.

Start-up checks, each announced on stderr before the ``serving on`` line:
the database schema (``exchange: database schema version N of M``, with the
migrations that ran), then the rollback guard (``exchange.ops.rollback``): a
log older than the last checkpoint this data directory published is refused
unless ``accept_rollback`` is given, and that decision is recorded. With a
metrics port, a second listener serves ``GET /metrics`` (Prometheus text) and
announces ``exchange: metrics on URL``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import dataclasses
import os
import signal
import ssl
import sys
from pathlib import Path

import structlog
from aiohttp import web

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.entry import LOG_ROLLBACK_ACCEPTED, UNKNOWN_ACTOR, AuditEntry, DetailValue
from exchange.audit.note import (
    SIG_ED25519,
    Ed25519Signer,
    Ed25519Verifier,
    encode_private_key,
    parse_signer_key,
)
from exchange.config import ServerConfig
from exchange.errors import ExchangeError, StorageError
from exchange.keyfiles import read_secret_file
from exchange.logsetup import configure_logging
from exchange.ops.logkey import current_key_file
from exchange.ops.rollback import (
    DECISIONS_FILE,
    LogRolledBack,
    find_rollback,
    record_decision,
    record_published,
)
from exchange.ops.schema_status import SchemaStatus, schema_status
from exchange.service import retention
from exchange.service.core import Service
from exchange.service.feed import shutdown as close_feeds
from exchange.service.statements import TRUST_FILE, load_anchor, replay
from exchange.storage.metadata import CheckpointSigner, MetadataStore
from exchange.storage.open_blobs import close_blob_store, open_blob_store
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport.app import build_app
from exchange.transport.looplag import watch_loop_lag
from exchange.transport.metrics import METRICS_PATH, Metrics, metrics_app
from exchange.transport.responsive import bulk_executor, freeze_startup_objects
from exchange.transport.routing import BASE_URL_KEY, INFLIGHT_KEY
from exchange.transport.witnesses import WITNESSES_KEY, WitnessCollector

__all__ = [
    "CHECKPOINT_INTERVAL_S",
    "LOG_KEY_FILE",
    "check_rollback",
    "checkpoint_signer",
    "encode_signer_key",
    "load_log_signer",
    "open_store",
    "serve",
]

LOG_KEY_FILE = "log.key"
#: Publish a checkpoint at most this often when the log grew (and on demand).
CHECKPOINT_INTERVAL_S = 1.0
#: How often the server enforces retention policies (``exchange server sweep`` runs it now).
RETENTION_SWEEP_S = 600.0
_log = structlog.get_logger(__name__)


def encode_signer_key(name: str, seed: bytes) -> str:
    """Return the signed-note private key string ``PRIVATE+KEY+name+hexid+base64(0x01 ‖ seed)``."""
    signer = Ed25519Signer(name, seed)
    return encode_private_key(name, signer.key_id, SIG_ED25519, seed)


def load_log_signer(data_dir: Path) -> Ed25519Signer:
    """Return the log's checkpoint signer: ``<data_dir>/log.key``, or the newest rotated key.

    After ``exchange server log-key rotate``, ``log-keys.jsonl`` names the
    key file that signs from then on (``exchange.ops.logkey``).
    """
    text = read_secret_file(current_key_file(data_dir)).decode("ascii").strip()
    return parse_signer_key(text)


def checkpoint_signer(signer: Ed25519Signer) -> CheckpointSigner:
    """Return the store's ``signer(size, root) -> note`` (origin = the log key's name)."""
    def sign(size: int, root: bytes) -> bytes:
        return sign_checkpoint(Checkpoint(origin=signer.name, size=size, root=root), signer)

    return sign


async def open_store(config: ServerConfig, signer: CheckpointSigner | None) -> MetadataStore:
    """Open (and migrate) the configured metadata store: PostgreSQL or the embedded SQLite."""
    if config.database_url is not None:
        return await PostgresStore.open(config.database_url, signer=signer)
    return await SqliteStore.open(config.data_dir, signer=signer)


def _ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
    return context


async def _publish_checkpoints(store: MetadataStore, data_dir: Path,
                               verifier: Ed25519Verifier,
                               witnesses: WitnessCollector | None = None) -> None:
    """Keep the published checkpoint within ``CHECKPOINT_INTERVAL_S`` of the log.

    Each new one is also remembered in the data directory (the rollback guard), and
    wakes the witness collector (which works in the background).
    """
    published = -1
    while True:
        try:
            size = await store.tree_size()
            if size != published:
                checkpoint = await store.publish_checkpoint()
                await asyncio.to_thread(record_published, data_dir, checkpoint, verifier)
                published = checkpoint.size
                if witnesses is not None:
                    witnesses.notify()
        except ExchangeError as err:  # database away: try again next round
            _log.warning("checkpoint_publish_failed", error=type(err).__name__)
        except OSError as err:  # the guard file could not be written: say so, keep serving
            _log.error("checkpoint_guard_write_failed", error=type(err).__name__)
        await asyncio.sleep(CHECKPOINT_INTERVAL_S)


async def _sweep_retention(service: Service, data_dir: Path) -> None:
    """Enforce the cases' retention policies every ``RETENTION_SWEEP_S`` (issue 19)."""
    while True:
        await asyncio.sleep(RETENTION_SWEEP_S)
        try:
            report = await retention.sweep(service, load_anchor(data_dir))
            if report.erased or report.shredded or report.blobs_deleted:
                _log.info("retention_sweep", erased=len(report.erased),
                          shredded=len(report.shredded), blobs=report.blobs_deleted)
            for case_id, _ in report.failed:
                _log.warning("retention_case_failed", case=case_id)
        except ExchangeError as err:  # database away: try again next round
            _log.warning("retention_sweep_failed", error=type(err).__name__)


async def sweep_once(config: ServerConfig) -> retention.SweepReport:
    """Run one retention sweep on ``config``'s data (``exchange server sweep``), then sign.

    Safe while a server runs (each erasure is its own transaction); the new
    entries are signed into a checkpoint at once, as at shutdown.
    """
    signer = load_log_signer(config.data_dir)
    store = await open_store(config, checkpoint_signer(signer))
    try:
        blobs = await open_blob_store(
            config.data_dir, config.blob_store, s3_endpoint=config.s3_endpoint,
            s3_region=config.s3_region, s3_credentials_file=config.s3_credentials_file)
        try:
            service = Service(store=store, blobs=blobs, config=config)
            report = await retention.sweep(service, load_anchor(config.data_dir))
        finally:
            await close_blob_store(blobs)
        await _final_checkpoint(store, config.data_dir, signer.verifier())
    finally:
        await store.close()
    return report


async def _final_checkpoint(store: MetadataStore, data_dir: Path,
                            verifier: Ed25519Verifier) -> None:
    """Sign the log as it is at shutdown, so no entry waits unsigned for the next start."""
    try:
        checkpoint = await store.publish_checkpoint()
        await asyncio.to_thread(record_published, data_dir, checkpoint, verifier)
    except (ExchangeError, OSError) as err:
        _log.warning("final_checkpoint_failed", error=type(err).__name__)


async def check_rollback(store: MetadataStore, data_dir: Path, verifier: Ed25519Verifier, *,
                         accept: bool) -> None:
    """Refuse (:class:`LogRolledBack`) a log older than the published one, unless ``accept``.

    Accepting records the decision (decisions file and operational log), then
    publishes the current checkpoint and makes it the guard's new reference.
    """
    rollback = await find_rollback(store, data_dir, verifier)
    if rollback is None:
        return
    if not accept:
        raise LogRolledBack(rollback.message())
    record = await asyncio.to_thread(record_decision, data_dir, rollback)
    _log.warning("log_rollback_accepted", **{k: v for k, v in record.items()
                                             if k != "published_checkpoint"})
    index = await log_decision(store, record)
    print(f"exchange: warning: {rollback.message()}; continuing as told by "
          f"--accept-rollback (recorded in {DECISIONS_FILE} and as audit entry {index})",
          file=sys.stderr, flush=True)
    checkpoint = await store.publish_checkpoint()
    await asyncio.to_thread(record_published, data_dir, checkpoint, verifier, replace=True)


async def log_decision(store: MetadataStore, record: dict[str, object]) -> int:
    """Append the accepted rollback to the log itself; return the entry's index.

    A server-originated ``log.rollback_accepted`` entry, first in the
    continued log, naming both trees and carrying the checkpoint that was
    given up: every auditor sees that the history was cut, where, and why.
    """
    details: dict[str, DetailValue] = {
        str(k): v for k, v in record.items()
        if isinstance(v, (str, int)) and k not in ("time", "published_checkpoint")}
    # A signed note has newlines, which entry details may not hold: base64 keeps it exact.
    details["published_checkpoint"] = base64.b64encode(
        str(record["published_checkpoint"]).encode("utf-8")).decode("ascii")

    def make(index: int, prev: bytes, time: str) -> AuditEntry:
        return AuditEntry(index=index, time=time, actor=UNKNOWN_ACTOR, actor_key="",
                          action=LOG_ROLLBACK_ACCEPTED, case=None, object=None, outcome="ok",
                          reason=None, request=None, details=details, prev=prev)

    async with store.transaction("rollback_decision") as tx:
        appended = await tx.append_audit(make)
    return appended.index


def _status_line(before: SchemaStatus) -> str:
    if before.current:
        return f"exchange: {before.describe()}"
    names = ", ".join(f"{m.version:04d}_{m.name}" for m in before.pending)
    return (f"exchange: database schema version {before.known} of {before.known} "
            f"({before.dialect}); migrated from version {before.version}: {names}")


async def _start_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(metrics_app(metrics), handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    bound = runner.addresses[0]
    print(f"exchange: metrics on http://{bound[0]}:{bound[1]}{METRICS_PATH}", file=sys.stderr,
          flush=True)
    return runner


async def _drain(runner: web.AppRunner, app: web.Application, timeout_s: float) -> None:
    """Stop listening, let in-flight requests finish (bodies still arriving), then close.

    aiohttp's own cleanup stops reading from every connection first, which
    would cut off a request whose body is still being uploaded; so we close
    the listening sockets and wait for the in-flight count to reach zero
    before handing over to it.
    """
    for site in list(runner.sites):
        await site.stop()
    inflight = app[INFLIGHT_KEY]
    if inflight.count:
        _log.info("draining_requests", in_flight=inflight.count)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(inflight.idle.wait(), timeout_s)
    await runner.cleanup()


class PublicUrlMismatch(ExchangeError):
    """The server would serve under another URL than the one its log records (a move)."""

    problem_type = "public-url-mismatch"

    def __init__(self, configured: str, logged: str) -> None:
        super().__init__(f"the log records {logged!r} as this server's public URL "
                         f"(a server.url statement), but it would serve as {configured!r}")
        self.logged = logged


async def logged_public_url(store: MetadataStore, data_dir: Path) -> str | None:
    """Return the public URL the newest ``server.url`` statement records, if any.

    Data directories made before statements existed have no trust anchor
    and so no recorded URL.
    """
    if not (Path(data_dir) / TRUST_FILE).exists():
        return None
    anchor = load_anchor(data_dir)
    try:
        async with store.transaction("public_url") as tx:
            state = await replay(tx, anchor)
    except StorageError as err:
        # Statements this server would never have accepted (an edited database): the
        # clients and the verifier name them; here they only mean no URL is known.
        _log.warning("directory_does_not_replay", error=str(err)[:300])
        return None
    return state.directory.server_url


#: glibc ``mallopt`` parameters and the values the server sets (see :func:`steady_heap`).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
HEAP_TRIM_BYTES = 16 * 1024 * 1024
HEAP_MMAP_BYTES = 4 * 1024 * 1024


def steady_heap() -> bool:
    """Keep freed heap memory for reuse instead of returning it at once; True if set.

    Why (issue 17, the server's CPU per byte uploaded): a PATCH body arrives
    as 64-256 KiB pieces that live until their batch is written and hashed.
    With glibc's sliding defaults the heap top is given back to the kernel
    and taken again every few MiB, and every page of it is faulted and
    zeroed anew: about 0.1 CPU-second per GiB. Up to ``HEAP_TRIM_BYTES`` of
    free heap stay mapped; blocks of ``HEAP_MMAP_BYTES`` and more are still
    mapped apart (and returned when freed). An operator's ``MALLOC_*``
    environment and non-glibc C libraries are left alone.
    """
    if any(name.startswith("MALLOC_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (AttributeError, OSError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, HEAP_MMAP_BYTES)
                and mallopt(_M_TRIM_THRESHOLD, HEAP_TRIM_BYTES))


async def serve(config: ServerConfig, *, accept_rollback: bool = False,
                metrics_port: int | None = None, metrics_host: str = "127.0.0.1") -> None:
    """Run the server until SIGTERM/SIGINT; see the module docstring."""
    configure_logging()
    steady_heap()
    # Hashing, writing and reading evidence run on the default executor, below the loop's
    # priority (exchange.transport.responsive).
    asyncio.get_running_loop().set_default_executor(bulk_executor())
    signer = load_log_signer(config.data_dir)
    verifier = signer.verifier()
    before = await schema_status(config)
    store = await open_store(config, checkpoint_signer(signer))
    blobs = await open_blob_store(
        config.data_dir, config.blob_store, s3_endpoint=config.s3_endpoint,
        s3_region=config.s3_region, s3_credentials_file=config.s3_credentials_file)
    metrics_runner: web.AppRunner | None = None
    lag_watcher: asyncio.Task[None] | None = None
    try:
        print(_status_line(before), file=sys.stderr, flush=True)
        _log.info("database_schema", **before.to_json())
        await check_rollback(store, config.data_dir, verifier, accept=accept_rollback)
        service = Service(store=store, blobs=blobs, config=config)
        app = build_app(service, base_url=config.base_url())
        witnesses = None
        if config.witnesses is not None:
            witnesses = WitnessCollector(store, config.witnesses)
            await witnesses.start()
            app[WITNESSES_KEY] = witnesses
        if metrics_port is not None:
            metrics = Metrics(service)
            app.middlewares.insert(0, metrics.middleware)  # outermost: sees final statuses
            metrics_runner = await _start_metrics(metrics, metrics_host, metrics_port)
            lag_watcher = asyncio.create_task(watch_loop_lag(metrics.loop_lag.observe),
                                              name="loop-lag")
        limits = config.limits
        runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=config.shutdown_timeout_s,
            access_log=None, max_line_size=limits.max_header_bytes,
            keepalive_timeout=limits.idle_timeout_s,
            max_field_size=limits.max_header_bytes,
        )
        await runner.setup()
        site = web.TCPSite(runner, config.host, config.port, ssl_context=_ssl_context(config),
                           reuse_address=True)
        await site.start()
        port = int(runner.addresses[0][1])
        base_url = config.base_url(port)
        logged = await logged_public_url(store, config.data_dir)
        if logged is not None and logged.rstrip("/") != base_url:
            # Every request would be signed for a URL the log does not record (the
            # verifier names each one); serve under the recorded URL or record a move.
            await runner.cleanup()
            raise PublicUrlMismatch(base_url, logged.rstrip("/"))
        app[BASE_URL_KEY][0] = base_url
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        publisher = asyncio.create_task(
            _publish_checkpoints(store, config.data_dir, verifier, witnesses), name="checkpoints")
        sweeper = asyncio.create_task(_sweep_retention(service, config.data_dir),
                                      name="retention")
        listening = ServerConfig.base_url(
            dataclasses.replace(config, public_url=None), port)
        line = f"exchange: serving on {base_url}"
        if listening != base_url:
            line += f" (listening on {listening})"
        print(line, file=sys.stderr, flush=True)
        frozen = freeze_startup_objects()  # what is alive now lives as long as the process
        _log.info("server_started", url=base_url, origin=config.origin, frozen_objects=frozen)
        await stop.wait()
        _log.info("server_stopping")
        for task in (publisher, sweeper):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if witnesses is not None:
            await witnesses.stop()
        # Open SSE feeds never finish on their own; close them so draining waits only for
        # real work (uploads, commits) instead of the whole shutdown timeout.
        close_feeds(service)
        await _drain(runner, app, config.shutdown_timeout_s)
        await _final_checkpoint(store, config.data_dir, verifier)
    finally:
        if lag_watcher is not None:
            lag_watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_watcher
        if metrics_runner is not None:
            await metrics_runner.cleanup()
        await close_blob_store(blobs)
        await store.close()
    _log.info("server_stopped")
