"""Where a signed request's Python goes: bytecodes per request, by function and by area.

Usage: .venv/bin/python bench/opcodes.py [--requests N] [--clients C] [--top K] [--json]

``bench/instructions.py`` counts every machine instruction of the server; this
says which Python code they come from. One ``exchange serve`` (embedded
SQLite) runs under ``bench/_opcount.py``, which counts the bytecodes each
function executes on the event loop's thread (``sys.settrace`` with opcode
events) between a warm-up and the end of N (default 1000) signed
``GET /v1/cases`` from C clients (default 10). Reported per request:

* ``opcodes_per_request``: every bytecode counted;
* ``areas``: the same split by where the code lives (aiohttp, the event loop and
  context managers, the signature, the store, the audit entry, the log line,
  dataclass constructors, the transport, the service, the rest);
* ``top``: the K (default 25) functions that execute the most, each with its
  bytecodes and calls per request (a coroutine resumed counts as a call).

C code (libsodium, SQLite, the JSON encoder, regular expressions) runs no
bytecodes: see ``bench/instructions.py`` for it. The trace slows the server
tens of times, so nothing here is a time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import written_by_server  # bench/ is this script's own directory
from server import _prosecutor_with_case, _signed_rate

from exchange.crypto.keys import ParticipantIdentity
from tests.server_harness import ServerProcess, init_server

COUNTER = Path(__file__).with_name("_opcount.py")
WARM_UP_REQUESTS = 100
#: Where a function's file puts it, first match wins (substrings of the path).
AREAS = (
    ("aiohttp", ("/aiohttp/", "/yarl/", "/multidict/")),
    ("event loop", ("/asyncio/", "/selectors.py", "/contextlib.py", "/_weakrefset.py")),
    ("signature", ("/exchange/wire/", "/exchange/service/_early.py")),
    ("audit entry", ("/exchange/audit/", "/exchange/storage/_auditlog.py")),
    ("store", ("/exchange/storage/",)),
    ("log line", ("/structlog/", "/exchange/logsetup.py", "/json/")),
    ("dataclass constructors", ("<string>",)),
    ("transport", ("/exchange/transport/",)),
    ("service", ("/exchange/service/",)),
)


def _area(function: str) -> str:
    path = function.split(":", 1)[0]
    for name, markers in AREAS:
        if any(marker in path for marker in markers):
            return name
    return "other"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.requests < 1 or args.clients < 1:
        parser.error("--requests and --clients must be at least 1")

    with tempfile.TemporaryDirectory(prefix="exchange-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        data_dir = base / "data"
        out = base / "opcodes.jsonl"
        admin = ParticipantIdentity.generate("admin")
        prosecutor = ParticipantIdentity.generate("prosecutor")
        init_server(data_dir, admin)
        server = ServerProcess(data_dir, launcher=[sys.executable, str(COUNTER), str(out)])
        try:
            asyncio.run(_prosecutor_with_case(server.url, admin, prosecutor, data_dir))
            pid = server.proc.pid
            asyncio.run(_signed_rate(server.url, prosecutor, args.clients, WARM_UP_REQUESTS, pid))
            os.kill(pid, signal.SIGUSR1)
            time.sleep(0.5)  # the handler runs when the loop next wakes; nothing is in flight
            asyncio.run(_signed_rate(server.url, prosecutor, args.clients, args.requests, pid))
            os.kill(pid, signal.SIGUSR2)
            text = written_by_server(out, lambda _text: True, "the traced server's counts")
            counts = [json.loads(line) for line in text.splitlines()]
        finally:
            server.stop(timeout_s=60)

    per_request = args.requests
    areas: Counter[str] = Counter()
    for row in counts:
        areas[_area(str(row["function"]))] += int(str(row["opcodes"]))
    root = str(Path(__file__).resolve().parent.parent) + "/"
    total = round(sum(areas.values()) / per_request)
    by_area = {name: round(n / per_request) for name, n in areas.most_common()}
    top = [{"function": str(row["function"]).replace(root, ""),
            "opcodes": round(int(str(row["opcodes"])) / per_request),
            "calls": round(int(str(row["calls"])) / per_request, 1)}
           for row in counts[:args.top]]
    if args.json:
        print(json.dumps({"opcodes_per_request": total, "areas": by_area, "top": top,
                          "requests": args.requests, "clients": args.clients}))
    else:
        print(f"bytecodes per signed request: {total}")
        for name, n in by_area.items():
            print(f"  {n:6}  {name}")
        print("functions (bytecodes and calls per request):")
        for row in top:
            print(f"  {row['opcodes']:6}  {row['calls']:5}  {row['function']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
