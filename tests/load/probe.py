"""The load test's latency probe: one unhurried client in its own process.

The 100 simulated clients share one Python process, so when that process is
busy (encrypting, hashing, verifying) its own event loop delays every
response it times: their latencies mix client and server. The probe has
nothing else to do: every ``--interval-ms``, on a fixed schedule (a slow
answer does not delay the next request, so slow periods are sampled as
often as fast ones), it sends one small signed read, alternating two kinds,
and times it to the response headers, until the Unix time ``--until``
(the end of the load, so no idle tail is measured):

* ``GET /v1/audit/checkpoint``, a read the server answers without an audit
  entry (unlogged);
* ``GET /v1/cases`` (``case.list``), a read the server answers only after
  its audit entry is in the log (through the group commit), the way every
  listing and case view is answered (logged). The load test enrols the
  probe as a coordinator in no case, so the answer is a 200 and stays small
  (an administrator's case list would be refused).

Small reads are mostly logged, so a probe of unlogged reads alone would
leave the group commit out of the figure. The requests are recorded by the
load test's own trace hooks (:func:`tests.load.accounting.trace_config`), so
a logged request's ``Exchange-Audit-Index`` is reported and the load test's
one-entry-per-request accounting counts the probe's entries too.
It prints one JSON object: ``{"requests": [...]}``, one
:class:`~tests.load.accounting.RequestRecord` (actor, kind, status,
latency_s, audit_index; status 0 when no response came) per request.

    python -m tests.load.probe URL PUBLIC_URL KEYSTORE --until UNIX_TIME [--interval-ms M]

The probe raises its own scheduling priority when it may (``nice`` -10; the
load test runs it on the clients' core, beside the 100 busy clients): it
stands for a client on a machine of its own, so its figures are the
server's latency, not the wait for its own core.

The keystore is a cheap test keystore (passphrase :data:`PASSPHRASE`, not a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import sys
import time
from pathlib import Path

import aiohttp

from exchange.crypto.keystore import open_keystore
from exchange.transport.client import SignedSession
from tests.load.accounting import RequestLog, RequestRecord, trace_config
from tests.load.schedule import fixed_schedule

PASSPHRASE = "load probe, not secret"
#: The probe's two small reads, sent in turn: unlogged, then logged (``case.list``).
PATHS = ("/v1/audit/checkpoint", "/v1/cases")


async def probe(url: str, public_url: str, keystore: Path, until: float,
                interval_s: float) -> list[RequestRecord]:
    """Send one read per interval, alternating :data:`PATHS`, until the Unix time ``until``.

    Requests start on a fixed schedule, each in its own task, and the probe
    waits for all of them before returning their records. A request that gets
    no response is recorded (status 0) and the probe goes on, so one lost
    connection does not hide the rest of the run.
    """
    identity = open_keystore(keystore.read_bytes(), PASSPHRASE)
    log = RequestLog()
    log.recording = True

    async def read(session: SignedSession, path: str) -> None:
        try:
            async with await session.request("GET", path) as response:
                await response.read()
        except (aiohttp.ClientError, TimeoutError):
            pass  # recorded with status 0 by the trace hooks

    async with aiohttp.ClientSession(trace_configs=[trace_config(log, identity.id)]) as http, \
            SignedSession(public_url, identity, connect_url=url, session=http) as session:
        sent: list[asyncio.Task[None]] = []
        for due, path in zip(fixed_schedule(until, interval_s), itertools.cycle(PATHS)):
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            sent.append(asyncio.create_task(read(session, path)))
        await asyncio.gather(*sent)
    return log.records


def _raise_priority() -> None:
    """Run ahead of the busy clients on the same core, when allowed (see the module notes)."""
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, -10)


def main(argv: list[str] | None = None) -> int:
    """Run the probe and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("url")
    parser.add_argument("public_url")
    parser.add_argument("keystore", type=Path)
    parser.add_argument("--until", type=float, required=True,
                        help="Unix time at which to stop sending")
    parser.add_argument("--interval-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("the probe only talks to 127.0.0.1")
    _raise_priority()
    records = asyncio.run(probe(args.url, args.public_url, args.keystore, args.until,
                                args.interval_ms / 1000))
    sys.stdout.write(json.dumps({"requests": [dataclasses.asdict(r) for r in records]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
