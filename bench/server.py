"""Server benchmark: signed requests/s, tus upload vs a plain PUT handler, server peak RSS.

Usage: .venv/bin/python bench/server.py [--requests N] [--clients C] [--rounds R]
                                       [--upload-mib M] [--json]

One ``exchange serve`` process (embedded SQLite, data dir in a temporary
directory) is started as the integration tests do. Then, in this process:

* ``signed_requests_per_s``: C concurrent clients (default 50), each its own
  ``SignedSession``, send N signed ``GET /v1/cases`` in total; every one is
  verified (RFC 9421 Ed25519), its nonce recorded and an audit entry
  committed (group commit) before it is answered. Client signing runs in this
  process, on the same cores as the server. ``server_cpu_ms_per_request`` is
  the server process's CPU time (user + system, /proc/PID/stat) over the same
  interval divided by N: steadier than the rate on a shared machine.
* ``plain_requests_per_s`` / ``plain_server_cpu_ms_per_request``: the same clients
  send the same signed requests, in the same run, to the plain aiohttp server's
  ``GET /v1/cases`` (a fixed JSON answer: no verification, no database, no log).
  ``signed_rate_ratio_vs_plain`` and ``server_cpu_ratio_vs_plain`` compare the two:
  what authentication, the nonce, the audit entry and its group commit cost over
  aiohttp itself on this machine.
* ``floor_<level>_requests_per_s`` / ``floor_<level>_server_cpu_ms_per_request``: the same
  clients and requests, in the same round, against ``bench/floor_server.py``: the fewest
  steps that do what the design makes a signed, logged listing do, on the same stack
  (``--floor full``, the default: signature, nonce, listing, audit entry, group commit, log
  line; ``--floor all`` adds its ``verify`` and ``logged`` levels, pricing each step;
  ``--floor none`` skips it). ``signed_rate_ratio_vs_floor`` and
  ``server_cpu_ratio_vs_floor`` compare the exchange with the full floor: a target above
  the floor's rate is out of reach of any implementation of the design in Python here.
* ``ed25519_verify_us``: one Ed25519 verification (PyNaCl, a 300-byte message, as
  a signature base) timed in this process: the one cryptographic step every
  signed request needs, the floor under ``server_cpu_ms_per_request`` beside the
  plain server's.
* With two or more usable cores the servers run on one core and this process (the
  clients) on another (``pinned``), so the rate is one server process's on one core.
* ``--rounds R`` (default 3) alternates the two: R rounds of the exchange's N
  requests then the plain server's N. Each figure above is the median over the
  rounds, each ratio the median of the rounds' own ratios (a round's two phases
  are seconds apart, so the machine's drift between them is small), and
  ``rounds`` lists every round's figures. On this kind of machine one phase's
  rate moves by ±15 % from one minute to the next.
* ``upload_ratio_vs_plain``: a pre-encrypted file of M MiB (default 1024,
  random bytes, page-cached) is uploaded through the tus API (create, PATCHes
  of 256 MiB with their Content-Digest computed by the client from the file,
  commit, which re-hashes the stored bytes) and, in the same run, PUT to a
  plain unauthenticated aiohttp handler in its own process that hashes
  (SHA-256) and fsyncs the same bytes. Ratio = tus throughput / plain
  throughput, both measured from the first request to the final answer.
  ``upload_ratio_server_only`` repeats the tus upload with the client's chunk
  digests computed before the clock starts (server work only).
* ``server_peak_rss_mib``: VmHWM of the server process after everything.

``--upload-mib 0`` skips the upload part (its keys are then null).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from measure import cpu_s, listening_port, vm_hwm_mib  # bench/ is this script's own directory
from nacl.signing import SigningKey

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from exchange.transport.client_evidence import file_source
from exchange.wire.httpsig import content_digest_from_sha256
from tests import statements
from tests.server_harness import ServerProcess, core_split, enrol, init_server, pinned

MIB = 1024 * 1024
PLAIN_SERVER = Path(__file__).with_name("plain_server.py")
FLOOR_SERVER = Path(__file__).with_name("floor_server.py")
FLOOR_LEVELS = ("verify", "logged", "full")
CHUNK = 256 * MIB
_COMMIT_S: list[float] = []


# -- measurements --------------------------------------------------------------------

def _ed25519_verify_us(rounds: int = 2000) -> float:
    """Return the microseconds one Ed25519 verification takes here (best of three)."""
    key = SigningKey.generate()
    signed = key.sign(os.urandom(300))
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(rounds):
            key.verify_key.verify(signed)
        best = min(best, (time.perf_counter() - started) / rounds)
    return best * 1e6


async def _signed_rate(url: str, identity: ParticipantIdentity, clients: int,
                       total: int, server_pid: int) -> tuple[float, float]:
    """Return (requests per second, server CPU milliseconds per request)."""
    sessions = [SignedSession(url, identity) for _ in range(clients)]
    remaining = [total]

    async def client(session: SignedSession) -> None:
        while remaining[0] > 0:
            remaining[0] -= 1
            async with await session.request("GET", "/v1/cases") as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET /v1/cases answered {response.status}")

    try:
        for session in sessions[:clients]:  # warm up the connections
            async with await session.request("GET", "/v1/cases") as response:
                await response.read()
        cpu_started = cpu_s(server_pid)
        started = time.perf_counter()
        await asyncio.gather(*(client(s) for s in sessions))
        elapsed = time.perf_counter() - started
        return total / elapsed, (cpu_s(server_pid) - cpu_started) * 1000 / total
    finally:
        for session in sessions:
            await session.close()


def _round(rate: float, cpu_ms: float, plain_rate: float, plain_cpu_ms: float,
           floors: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Return one round's figures: the exchange's, the plain server's, the floors', ratios."""
    figures = {
        "signed_requests_per_s": round(rate, 1),
        "server_cpu_ms_per_request": round(cpu_ms, 3),
        "plain_requests_per_s": round(plain_rate, 1),
        "plain_server_cpu_ms_per_request": round(plain_cpu_ms, 3),
        "signed_rate_ratio_vs_plain": round(rate / plain_rate, 3),
        "server_cpu_ratio_vs_plain": round(cpu_ms / plain_cpu_ms, 2),
    }
    for level, (floor_rate, floor_cpu_ms) in floors.items():
        figures[f"floor_{level}_requests_per_s"] = round(floor_rate, 1)
        figures[f"floor_{level}_server_cpu_ms_per_request"] = round(floor_cpu_ms, 3)
    if "full" in floors:
        figures["signed_rate_ratio_vs_floor"] = round(rate / floors["full"][0], 3)
        figures["server_cpu_ratio_vs_floor"] = round(cpu_ms / floors["full"][1], 2)
    return figures


def _start_floors(base: Path, identity: ParticipantIdentity, levels: tuple[str, ...],
                  launcher: tuple[str, ...] = ()) -> dict[str, subprocess.Popen[str]]:
    """Start one floor server per level (run by ``launcher``) trusting ``identity``."""
    key = bytes(identity.signing_key.verify_key).hex()
    return {level: subprocess.Popen([*launcher, sys.executable, str(FLOOR_SERVER), str(base),
                                     identity.id, key, level], stdout=subprocess.PIPE, text=True)
            for level in levels}


async def _chunk_digests(path: Path, length: int) -> list[str]:
    out = []
    for start in range(0, length, CHUNK):
        hasher = hashlib.sha256()
        async for piece in file_source(path)(start, min(length, start + CHUNK)):
            hasher.update(piece)
        out.append(content_digest_from_sha256(hasher.digest()))
    return out


async def _tus_upload(session: SignedSession, case: tuple[str, str], path: Path, length: int,
                      sha: str, digests: list[str] | None) -> float:
    case_id, head = case
    started = time.perf_counter()
    handle = await session.create_upload(case_id, length)
    source = file_source(path)
    for n, start in enumerate(range(0, length, CHUNK)):
        end = min(length, start + CHUNK)
        await session.append_chunk(handle.path, start, end, source,
                                   digest=None if digests is None else digests[n])
    patched = time.perf_counter()
    await session.commit_upload(handle.path, sealed_manifest=b"bench", ciphertext_sha256=sha,
                                epoch=1, case_head=head)
    _COMMIT_S.append(time.perf_counter() - patched)
    return length / MIB / (time.perf_counter() - started)


async def _plain_upload(port: int, path: Path, length: int, sha: str) -> float:
    async with aiohttp.ClientSession() as session:
        started = time.perf_counter()
        async with session.put(f"http://127.0.0.1:{port}/blob", data=file_source(path)(0, length),
                               headers={"Content-Length": str(length)}) as response:
            answer = await response.text()
        elapsed = time.perf_counter() - started
    if answer != sha:
        raise RuntimeError("plain handler hashed different bytes")
    return length / MIB / elapsed


async def _case(url: str, identity: ParticipantIdentity, data_dir: Path) -> tuple[str, str]:
    """Create a case (a signed case.create statement); return its id and chain head."""
    anchor = statements.load_anchor(data_dir)
    async with SignedSession(url, identity) as session:
        answer, case_id, _ = await statements.create_case(session, anchor)
        if answer.status != 201:
            raise RuntimeError(f"case creation answered {answer.status}")
        return case_id, await statements.case_head(session, anchor, case_id)


async def _prosecutor_with_case(url: str, admin: ParticipantIdentity,
                                prosecutor: ParticipantIdentity,
                                data_dir: Path) -> tuple[str, str]:
    """Enrol ``prosecutor`` (signed by ``admin``) and create its case; return id and head.

    The world every signed-request benchmark measures in (this one, instructions.py,
    opcodes.py): the prosecutor's ``GET /v1/cases`` lists one case.
    """
    async with SignedSession(url, admin) as session:
        await enrol(session, prosecutor, "prosecutor")
    return await _case(url, prosecutor, data_dir)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternate exchange and plain phases this many times (medians)")
    parser.add_argument("--upload-mib", type=int, default=1024)
    parser.add_argument("--floor", choices=("full", "all", "none"), default="full",
                        help="which levels of bench/floor_server.py to measure each round")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    with tempfile.TemporaryDirectory(prefix="exchange-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        data_dir = base / "data"
        admin = ParticipantIdentity.generate("admin")
        prosecutor = ParticipantIdentity.generate("prosecutor")
        init_server(data_dir, admin)
        levels = {"full": ("full",), "all": FLOOR_LEVELS, "none": ()}[args.floor]
        client_cpus, server_cpus = core_split()
        with pinned(server_cpus):
            server = ServerProcess(data_dir)
            plain = subprocess.Popen([sys.executable, str(PLAIN_SERVER), str(base)],
                                     stdout=subprocess.PIPE, text=True)
            floors = _start_floors(base, prosecutor, levels)
        if client_cpus is not None:
            os.sched_setaffinity(0, client_cpus)
        try:
            plain_port = listening_port(plain)
            floor_ports = {level: listening_port(child) for level, child in floors.items()}

            case = asyncio.run(_prosecutor_with_case(server.url, admin, prosecutor, data_dir))
            rounds = []
            for _ in range(args.rounds):
                rate, cpu_ms = asyncio.run(_signed_rate(server.url, prosecutor, args.clients,
                                                        args.requests, server.proc.pid))
                plain_rate, plain_cpu_ms = asyncio.run(_signed_rate(
                    f"http://127.0.0.1:{plain_port}", prosecutor, args.clients, args.requests,
                    plain.pid))
                measured = {level: asyncio.run(_signed_rate(
                    f"http://127.0.0.1:{floor_ports[level]}", prosecutor, args.clients,
                    args.requests, floors[level].pid)) for level in levels}
                rounds.append(_round(rate, cpu_ms, plain_rate, plain_cpu_ms, measured))

            length = args.upload_mib * MIB
            blob = base / "evidence.age"
            with blob.open("wb") as handle:
                for _ in range(args.upload_mib):
                    handle.write(os.urandom(MIB))
            sha = hashlib.sha256(blob.read_bytes()).hexdigest() if length <= 2**31 else ""

            async def uploads() -> dict[str, float]:
                out: dict[str, float] = {}
                out["plain_mib_s"] = await _plain_upload(plain_port, blob, length, sha)
                async with SignedSession(server.url, prosecutor) as session:
                    out["tus_mib_s"] = await _tus_upload(session, case, blob, length, sha, None)
                    digests = await _chunk_digests(blob, length)
                    out["tus_server_only_mib_s"] = await _tus_upload(
                        session, case, blob, length, sha, digests)
                return out

            speeds = asyncio.run(uploads()) if length else {}
            verify_us = _ed25519_verify_us()
            peak = vm_hwm_mib(server.proc.pid)
        finally:
            server.stop()
            for child in (plain, *floors.values()):
                child.terminate()
                child.wait()

    def speed(key: str) -> float | None:
        return round(speeds[key], 1) if speeds else None

    def ratio(key: str) -> float | None:
        return round(speeds[key] / speeds["plain_mib_s"], 3) if speeds else None

    result: dict[str, Any] = {
        **{key: statistics.median(r[key] for r in rounds) for key in rounds[0]},
        "ed25519_verify_us": round(verify_us, 1),
        "pinned": client_cpus is not None,
        "clients": args.clients,
        "requests": args.requests,
        "upload_mib": args.upload_mib,
        "tus_upload_mib_s": speed("tus_mib_s"),
        "tus_upload_server_only_mib_s": speed("tus_server_only_mib_s"),
        "plain_put_mib_s": speed("plain_mib_s"),
        "upload_ratio_vs_plain": ratio("tus_mib_s"),
        "upload_ratio_server_only": ratio("tus_server_only_mib_s"),
        "tus_commit_s": [round(t, 2) for t in _COMMIT_S],
        "server_peak_rss_mib": round(peak, 1),
        "cpus": os.cpu_count(),
        "rounds": rounds,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            if key != "rounds":
                print(f"{key:32} {value}")
        for n, figures in enumerate(rounds, 1):
            floor = ("" if "floor_full_requests_per_s" not in figures else
                     f" (the floor {figures['floor_full_requests_per_s']} requests/s, "
                     f"{figures['floor_full_server_cpu_ms_per_request']} ms)")
            print(f"round {n}: {figures['signed_requests_per_s']} against "
                  f"{figures['plain_requests_per_s']} requests/s, "
                  f"{figures['server_cpu_ms_per_request']} against "
                  f"{figures['plain_server_cpu_ms_per_request']} ms of server CPU each{floor}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
