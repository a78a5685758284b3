"""Saying out loud that the client is waiting for the server (one wording for every retry).

Uploads, downloads and feeds retry a lost server with exponential back-off;
without a word, a minute of retries looks like a hang. Each retry passes
through :func:`announce_retry`, which goes to the client's warning callback
(the CLI prints it on stderr, above any progress line).
"""

from __future__ import annotations

import aiohttp

from exchange.client.session import Client

__all__ = ["announce_retry", "backoff_s", "retry_reason"]

MAX_BACKOFF_S = 30.0


def backoff_s(failures: int, *, base_s: float = 0.25) -> float:
    """Return the wait before retry number ``failures`` (exponential, capped at 30 s)."""
    return float(min(MAX_BACKOFF_S, base_s * 2.0 ** failures))


def retry_reason(err: BaseException) -> str:
    """Return a short, lowercase reason for a failed exchange with the server."""
    if isinstance(err, TimeoutError):
        return "server not answering"
    if isinstance(err, aiohttp.ClientResponseError | aiohttp.ServerDisconnectedError):
        return "server went away"
    if isinstance(err, ConnectionError | aiohttp.ClientConnectionError):
        return "server unreachable"
    status = getattr(err, "status", None)
    return f"server error {status}" if isinstance(status, int) else "server unreachable"


def announce_retry(client: Client, err: BaseException, *, doing: str, delay_s: float,
                   attempt: int, attempts: int | None) -> None:
    """Warn that ``doing`` failed with ``err`` and is retried in ``delay_s`` seconds."""
    limit = f" of {attempts}" if attempts is not None else ""
    client.warn(f"{retry_reason(err)} while {doing}, retrying in {delay_s:.0f} s "
                f"(attempt {attempt + 1}{limit})")
