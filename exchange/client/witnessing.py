"""Client-side witness enforcement: accept a checkpoint only with its witness quorum.

The rule itself is pure (``exchange.audit.witness_policy.verify_witnessed``);
this module is its edge: where the policy comes from (``--witness-policy
FILE`` or ``$EXCHANGE_WITNESS_POLICY``, until the pinned trust anchor carries
it), and what a client does with a checkpoint that lacks the quorum. The
server publishes a checkpoint first and collects cosignatures in the
background, so a missing quorum is usually a matter of seconds: the client
fetches the checkpoint again for up to ``$EXCHANGE_WITNESS_WAIT_S`` seconds
(default :data:`DEFAULT_WAIT_S`), then refuses with
:class:`WitnessQuorumMissing` (exit status 3). An *invalid* cosignature from
a named witness is refused at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

from exchange.audit.checkpoint import Checkpoint
from exchange.audit.witness_policy import (
    PolicyError,
    WitnessPolicy,
    WitnessQuorumError,
    parse_policy,
    verify_witnessed,
)
from exchange.client.errors import ClientError, VerificationFailed
from exchange.errors import AuditError


class _Fetcher(Protocol):
    async def fetch(self, path: str) -> bytes: ...

__all__ = [
    "DEFAULT_WAIT_S",
    "POLICY_ENV",
    "WAIT_ENV",
    "WitnessQuorumMissing",
    "WitnessedFetcher",
    "check_witnessed",
    "covering",
    "load_witness_policy",
    "require_witnessed",
]

POLICY_ENV = "EXCHANGE_WITNESS_POLICY"
WAIT_ENV = "EXCHANGE_WITNESS_WAIT_S"
#: Cosignatures normally arrive within a few seconds of publication; 20 s rides out a
#: witness that restarts, and still tells a person quickly that something is wrong.
DEFAULT_WAIT_S = 20.0
_POLL_S = 1.0
_MAX_POLICY_FILE_BYTES = 64 * 1024


class WitnessQuorumMissing(VerificationFailed):
    """The checkpoint lacks the witness quorum of the policy (or a cosignature is invalid)."""

    problem_type = "witness-quorum-missing"


def load_witness_policy(path: str | Path | None = None, *,
                        environ: Mapping[str, str] | None = None) -> WitnessPolicy | None:
    """Return the policy in ``path`` (default ``$EXCHANGE_WITNESS_POLICY``); None if neither."""
    environ = os.environ if environ is None else environ
    source = path if path else environ.get(POLICY_ENV) or None
    if source is None:
        return None
    try:
        with open(source, "rb") as handle:
            data = handle.read(_MAX_POLICY_FILE_BYTES + 1)
    except OSError as err:
        raise ClientError(f"cannot read the witness policy {str(source)!r}: "
                          f"{err.strerror or err}") from None
    try:
        return parse_policy(data)
    except PolicyError as err:
        raise ClientError(f"the witness policy {str(source)!r} is invalid: {err}",
                          "ask your administrator for the policy file again") from None


def _wait_s(given: float | None) -> float:
    if given is not None:
        return given
    try:
        return float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_S))
    except ValueError:
        return DEFAULT_WAIT_S


def _refusal(err: WitnessQuorumError, waited_s: float) -> WitnessQuorumMissing:
    if err.invalid:
        return WitnessQuorumMissing(
            f"the server's checkpoint of size {err.size} carries an invalid cosignature from "
            f"witness {', '.join(err.invalid)}",
            "the checkpoint was altered after the witnesses signed it; keep it as evidence "
            "and tell your auditor")
    return WitnessQuorumMissing(
        f"the server's checkpoint of size {err.size} has {len(err.cosigned)} of the "
        f"{err.quorum} witness cosignatures the policy requires (missing: "
        f"{', '.join(err.missing) or '-'}), still after waiting {waited_s:.0f} s",
        "the witnesses may be down, or the server is showing you a history they refused "
        "to cosign (a split view): retry later, and compare views with another participant "
        "(exchange audit compare A B)")


def check_witnessed(note: bytes, log_key: str, policy: WitnessPolicy) -> Checkpoint:
    """Return the checkpoint in ``note`` if it meets ``policy`` (offline, no waiting).

    Raises :class:`WitnessQuorumMissing`, or :class:`VerificationFailed` when
    the log signature itself does not verify.
    """
    try:
        return verify_witnessed(note, log_key, policy).signed.checkpoint
    except WitnessQuorumError as err:
        raise _refusal(err, 0) from None
    except (AuditError, ValueError) as err:
        raise VerificationFailed(f"the checkpoint does not verify under the log key: "
                                 f"{str(err)[:200]}") from None


async def require_witnessed(note: bytes, log_key: str, policy: WitnessPolicy | None,
                            refetch: Callable[[], Awaitable[bytes]], *,
                            wait_s: float | None = None) -> bytes:
    """Return ``note``, or a newer note from ``refetch()``, that meets the witness quorum.

    With no policy, ``note`` is returned as is. A note whose log signature
    does not verify is returned too: the caller's own check reports that.
    Waits up to ``wait_s`` (default ``$EXCHANGE_WITNESS_WAIT_S`` or
    :data:`DEFAULT_WAIT_S`) for cosignatures, then raises
    :class:`WitnessQuorumMissing`.
    """
    if policy is None:
        return note
    wait_s = _wait_s(wait_s)
    started = time.monotonic()
    while True:
        try:
            verify_witnessed(note, log_key, policy)
            return note
        except WitnessQuorumError as err:
            waited = time.monotonic() - started
            if err.invalid or waited >= wait_s:
                raise _refusal(err, waited) from None
        except (AuditError, ValueError):
            return note
        await asyncio.sleep(_POLL_S)
        note = await refetch()


async def covering(index: int, checkpoint: Checkpoint,
                   fetch: Callable[[], Awaitable[Checkpoint]],
                   policy: WitnessPolicy | None) -> Checkpoint:
    """Return ``checkpoint``, or a newer accepted one, whose tree holds entry ``index``.

    With witnesses the served checkpoint trails the log by the time it takes
    to collect cosignatures, so an entry written a moment ago (a fresh
    enrolment, our own upload) may not be in it yet: wait for it (up to the
    same time as for cosignatures) instead of calling the entry unproven.
    Without a policy ``checkpoint`` is returned as is.
    """
    if policy is None:
        return checkpoint
    started = time.monotonic()
    while index >= checkpoint.size and time.monotonic() - started < _wait_s(None):
        await asyncio.sleep(_POLL_S)
        checkpoint = await fetch()
    return checkpoint


class WitnessedFetcher:
    """A log fetcher (``exchange.client.audit.LogFetcher``) whose checkpoint meets the policy.

    ``GET checkpoint`` answers go through :func:`require_witnessed`; every
    other path is passed through untouched.
    """

    def __init__(self, inner: _Fetcher, log_key: str, policy: WitnessPolicy | None) -> None:
        self.inner = inner
        self.log_key = log_key
        self.policy = policy

    def __repr__(self) -> str:
        return f"WitnessedFetcher({self.inner!r})"

    async def fetch(self, path: str) -> bytes:
        """Return the body of ``GET /v1/audit/<path>``; a checkpoint only with its quorum."""
        body = await self.inner.fetch(path)
        if path != "checkpoint":
            return body
        return await require_witnessed(body, self.log_key, self.policy,
                                       lambda: self.inner.fetch("checkpoint"))
