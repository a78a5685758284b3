"""The witness HTTP server: ``POST /add-checkpoint`` (C2SP tlog-witness v1.0.0) over aiohttp.

Thin: parse and check with ``exchange.witness.protocol``, run the
stored-state check and update atomically in ``exchange.witness.state``, then
answer with the cosignature line. Answers follow the spec: 200
``text/plain`` cosignature lines, 409 ``text/x.tlog.size`` with the stored
size; other refusals are RFC 9457 problem+json (as the exchange server's)
with the spec's status code. Every request is logged as one structlog event.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

import structlog
from aiohttp import web

from exchange.audit.checkpoint import Checkpoint
from exchange.audit.note import CosignatureSigner, Ed25519Verifier
from exchange.errors import ExchangeError
from exchange.logsetup import configure_logging
from exchange.transport.problems import (
    error_response,
    http_exception_response,
    internal_error_response,
)
from exchange.witness.protocol import (
    MAX_BODY_BYTES,
    SIZE_CONTENT_TYPE,
    WitnessProtocolError,
    check_extension,
    cosign,
    open_request,
    parse_request,
)
from exchange.witness.state import WitnessState

__all__ = ["ADD_CHECKPOINT_PATH", "build_app", "serve"]

ADD_CHECKPOINT_PATH = "/add-checkpoint"
_log = structlog.get_logger(__name__)
_STATE = web.AppKey("witness_state", WitnessState)
_SIGNER = web.AppKey("witness_signer", CosignatureSigner)
_LOGS = web.AppKey("witness_logs", Mapping[str, Sequence[Ed25519Verifier]])
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _refusal(err: WitnessProtocolError) -> web.Response:
    if err.http_status == 409 and err.stored_size is not None:
        response = web.Response(status=409, body=f"{err.stored_size}\n".encode("ascii"))
        response.headers["Content-Type"] = SIZE_CONTENT_TYPE
        return response
    return error_response(err)


async def add_checkpoint(request: web.Request) -> web.StreamResponse:
    """POST /add-checkpoint: cosign a checkpoint that consistently extends the last one."""
    origin = "-"
    try:
        body = await request.read()
        parsed = parse_request(body)
        checkpoint: Checkpoint = open_request(parsed, request.app[_LOGS])
        origin = checkpoint.origin
        await request.app[_STATE].update(
            origin, lambda stored: check_extension(stored, parsed, checkpoint),
            size=checkpoint.size, root=checkpoint.root, note=parsed.note)
        answer = cosign(checkpoint, request.app[_SIGNER])
    except WitnessProtocolError as err:
        _log.info("add_checkpoint_refused", status=err.http_status, reason=err.problem_type,
                  origin=origin[:120], detail=str(err)[:200])
        return _refusal(err)
    _log.info("checkpoint_cosigned", origin=origin[:120], tree_size=checkpoint.size,
              old_size=parsed.old)
    response = web.Response(body=answer)
    response.headers["Content-Type"] = "text/plain; charset=utf-8"
    return response


@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; never leak a traceback."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return http_exception_response(exc)
    except ExchangeError as err:  # the state database failed: 5xx, logged
        _log.error("add_checkpoint_failed", error=type(err).__name__, detail=str(err)[:200])
        return error_response(err)
    except Exception as err:  # the boundary of the process
        _log.error("internal_error", error=type(err).__name__)
        return internal_error_response()


def build_app(state: WitnessState, signer: CosignatureSigner,
              logs: Sequence[Ed25519Verifier]) -> web.Application:
    """Return the witness application for ``logs`` (origin = each log key's name)."""
    app = web.Application(middlewares=[_problems], client_max_size=MAX_BODY_BYTES + 1)
    by_origin: dict[str, list[Ed25519Verifier]] = {}
    for key in logs:
        by_origin.setdefault(key.name, []).append(key)
    app[_STATE] = state
    app[_SIGNER] = signer
    app[_LOGS] = by_origin
    app.router.add_post(ADD_CHECKPOINT_PATH, add_checkpoint)
    return app


async def serve(data_dir: Path, signer: CosignatureSigner, logs: Sequence[Ed25519Verifier],
                *, host: str, port: int, ready: Callable[[str], None] | None = None) -> None:
    """Run the witness until SIGTERM/SIGINT; print ``exchange: witness serving on URL``."""
    configure_logging()
    state = WitnessState.open(data_dir)
    try:
        runner = web.AppRunner(build_app(state, signer, logs), access_log=None,
                               handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        bound = int(runner.addresses[0][1])
        url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        print(f"exchange: witness serving on {url}", file=sys.stderr, flush=True)
        if ready is not None:
            ready(url)
        _log.info("witness_started", url=url, cosigner=signer.name,
                  logs=sorted({key.name for key in logs}))
        await stop.wait()
        _log.info("witness_stopping")
        with contextlib.suppress(Exception):
            await runner.cleanup()
    finally:
        state.close()

