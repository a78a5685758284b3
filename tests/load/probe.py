"""The load test's latency probe: one unhurried client in its own process.

The 100 simulated clients share one Python process, so when that process is
busy (encrypting, hashing, verifying) its own event loop delays every
response it times: their latencies mix client and server. The probe has
nothing else to do: every ``--interval-ms`` it sends one signed
``GET /v1/audit/checkpoint`` (a small authenticated read the server answers
without an audit entry, so the load test's one-entry-per-request accounting
is unchanged) and times it to the response headers, for ``--duration-s``.
It prints one JSON object: the latencies in seconds and the statuses that
were not 200.

    python -m tests.load.probe URL PUBLIC_URL KEYSTORE --duration-s S [--interval-ms M]

The keystore is a cheap test keystore (passphrase :data:`PASSPHRASE`, not a secret).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from exchange.crypto.keystore import open_keystore
from exchange.transport.client import SignedSession

PASSPHRASE = "load probe, not secret"


async def probe(url: str, public_url: str, keystore: Path, duration_s: float,
                interval_s: float) -> dict[str, list[float] | list[int]]:
    """Send one checkpoint read per interval for ``duration_s``; return latencies and failures."""
    identity = open_keystore(keystore.read_bytes(), PASSPHRASE)
    latencies: list[float] = []
    failures: list[int] = []
    deadline = time.monotonic() + duration_s
    async with SignedSession(public_url, identity, connect_url=url) as session:
        while time.monotonic() < deadline:
            started = time.perf_counter()
            async with await session.request("GET", "/v1/audit/checkpoint") as response:
                latencies.append(time.perf_counter() - started)
                await response.read()
                if response.status != 200:
                    failures.append(response.status)
            await asyncio.sleep(max(0.0, interval_s - (time.perf_counter() - started)))
    return {"latencies_s": latencies, "failures": failures}


def main(argv: list[str] | None = None) -> int:
    """Run the probe and print its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("url")
    parser.add_argument("public_url")
    parser.add_argument("keystore", type=Path)
    parser.add_argument("--duration-s", type=float, required=True)
    parser.add_argument("--interval-ms", type=float, default=50.0)
    args = parser.parse_args(argv)
    if not args.url.startswith("http://127.0.0.1:"):
        parser.error("the probe only talks to 127.0.0.1")
    result = asyncio.run(probe(args.url, args.public_url, args.keystore, args.duration_s,
                               args.interval_ms / 1000))
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
