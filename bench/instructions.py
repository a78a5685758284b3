"""Machine instructions per signed request (callgrind): a cost this noisy machine cannot move.

Usage: .venv/bin/python bench/instructions.py [--requests N] [--clients C] [--json]

On these shared two-core machines a rate moves by ±15 % from one minute to the
next, so a change worth 5 % of a request's CPU time cannot be seen in
``bench/server.py`` without dozens of alternating runs. Counting the
instructions the server executes per request can: five runs of the same code
gave counts within 0.3 % of each other (what varies is how requests fall into
group-commit batches).

Both servers of ``bench/server.py`` run under ``valgrind --tool=callgrind`` with
counting off while they start; after a warm-up it is switched on
(``callgrind_control -i on``), C clients (default 10) send N (default 1000)
signed ``GET /v1/cases``, and the counts are dumped (``callgrind_control -d``):

* ``exchange_instructions_per_request``: every thread of the ``exchange
  serve`` process (SQLite, the event loop, the writer thread), per request;
* ``libsodium_instructions_per_request``: of which in libsodium (the Ed25519
  check, PyNaCl's ``_sodium``): the floor no Python change can lower;
* ``plain_instructions_per_request``: the plain aiohttp server of
  ``bench/plain_server.py`` answering the same requests;
* ``instruction_ratio_vs_plain``: the first over the last;
* ``floor_instructions_per_request``: ``bench/floor_server.py`` (its ``full`` level: the
  fewest steps that do what the design makes a signed, logged listing do) answering the
  same requests, and ``instruction_ratio_vs_floor``, the exchange's count over it.

Kernel work (system calls, the network stack, fsync) is not counted, and an
instruction of Python's interpreter costs more time than one of libsodium's
arithmetic, so the figures compare versions of this code; they are not a rate.
Needs Debian's ``valgrind`` package; about 40 s for the default run. To compare two
versions, run each checkout's own copy from its own directory (the server is started
as ``python -m exchange`` there), alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import listening_port, written_by_server  # bench/ is this script's own directory
from server import (
    PLAIN_SERVER,
    _prosecutor_with_case,
    _signed_rate,
    _start_floors,
)

from exchange.crypto.keys import ParticipantIdentity
from tests.server_harness import ServerProcess, init_server

#: Starting Python under valgrind takes many times longer than natively.
START_TIMEOUT_S = 240.0
WARM_UP_REQUESTS = 100
#: The last line of a callgrind dump ("summary:" in its header says the same, written first).
_TOTALS = re.compile(r"^totals:\s+(\d+)", re.MULTILINE)
#: callgrind_annotate's lines: "1,234,567 (12.34%)  file:function [object]".
_ANNOTATED = re.compile(r"^\s*([\d,]+)\s+\([^)]*\)\s+(.*)$", re.MULTILINE)


def _launcher(out_dir: Path) -> tuple[str, ...]:
    return ("valgrind", "--quiet", "--tool=callgrind", "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.%p")


def _callgrind_control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args], check=True, capture_output=True, timeout=120)


def _totals(path: Path) -> tuple[int, int]:
    """Wait for the dump ``callgrind_control -d`` asked for; return (all, libsodium's) counts."""
    text = written_by_server(path, lambda dump: _TOTALS.search(dump) is not None,
                             f"the callgrind dump {path.name}")
    match = _TOTALS.search(text)
    assert match is not None
    annotated = subprocess.run(
        ["callgrind_annotate", "--inclusive=no", "--threshold=100", str(path)],
        check=True, capture_output=True, text=True, timeout=300,
    ).stdout
    sodium = sum(int(m.group(1).replace(",", "")) for m in _ANNOTATED.finditer(annotated)
                 if "libsodium" in m.group(2) or "_sodium" in m.group(2))
    return int(match.group(1)), sodium


def _count(pid: int, out_dir: Path, url: str, identity: ParticipantIdentity,
           clients: int, requests: int) -> tuple[int, int]:
    """Warm up, count ``requests`` signed requests to ``url``; return the dump's totals."""
    asyncio.run(_signed_rate(url, identity, clients, WARM_UP_REQUESTS, pid))
    _callgrind_control("-i", "on", str(pid))
    asyncio.run(_signed_rate(url, identity, clients, requests, pid))
    _callgrind_control("-d", str(pid))
    return _totals(out_dir / f"callgrind.{pid}.1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be at least 1")
    missing = [tool for tool in ("valgrind", "callgrind_control", "callgrind_annotate")
               if shutil.which(tool) is None]
    if missing:
        print(f"bench/instructions.py: {', '.join(missing)} not found; install Debian's "
              "valgrind package", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory(prefix="exchange-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        data_dir = base / "data"
        out_dir = base / "callgrind"
        out_dir.mkdir()
        admin = ParticipantIdentity.generate("admin")
        prosecutor = ParticipantIdentity.generate("prosecutor")
        init_server(data_dir, admin)
        server = ServerProcess(data_dir, launcher=_launcher(out_dir),
                               start_timeout_s=START_TIMEOUT_S)
        plain = subprocess.Popen([*_launcher(out_dir), sys.executable, str(PLAIN_SERVER),
                                  str(base)], stdout=subprocess.PIPE, text=True)
        floor = _start_floors(base, prosecutor, ("full",), _launcher(out_dir))["full"]
        try:
            plain_url = f"http://127.0.0.1:{listening_port(plain)}"
            floor_url = f"http://127.0.0.1:{listening_port(floor)}"

            asyncio.run(_prosecutor_with_case(server.url, admin, prosecutor, data_dir))
            total, sodium = _count(server.proc.pid, out_dir, server.url, prosecutor,
                                   args.clients, args.requests)
            plain_total, _ = _count(plain.pid, out_dir, plain_url, prosecutor,
                                    args.clients, args.requests)
            floor_total, _ = _count(floor.pid, out_dir, floor_url, prosecutor,
                                    args.clients, args.requests)
        finally:
            server.stop(timeout_s=120)
            for child in (plain, floor):
                child.terminate()
                child.wait(120)

    per_request = total / args.requests
    plain_per_request = plain_total / args.requests
    result = {
        "exchange_instructions_per_request": round(per_request),
        "libsodium_instructions_per_request": round(sodium / args.requests),
        "plain_instructions_per_request": round(plain_per_request),
        "instruction_ratio_vs_plain": round(per_request / plain_per_request, 2),
        "floor_instructions_per_request": round(floor_total / args.requests),
        "instruction_ratio_vs_floor": round(total / floor_total, 2),
        "requests": args.requests,
        "clients": args.clients,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36} {value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
