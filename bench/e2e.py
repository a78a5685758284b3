"""End-to-end benchmark: ``exchange upload``/``pull`` against plain HTTP and ``age``+``curl``.

Usage: .venv/bin/python bench/e2e.py [--size 1G] [--repeat N] [--short] [--json]

One ``exchange serve`` (embedded SQLite, temporary data dir) with a
prosecutor and a coordinator, and the plain server (``bench/plain_server.py``:
PUT hashes with SHA-256 and fsyncs, GET serves the file) in its own process.
Both servers run on the second usable core, every client on the first (when
only one core is usable nothing is pinned and ``pinned`` is false), so each
side's CPU is its own. A random file of SIZE (default 1 GiB) is written
once (page-cached). Then, in one run:

* plain: a Python aiohttp client PUTs the file in one request to the plain
  server, then GETs it back into a file and fsyncs it;
* ``age``+``curl``, what a user would do instead: ``age -r R FILE | curl -T -
  URL`` into the plain server, then ``curl URL | age -d -i KEY > OUT`` and
  ``sync OUT`` (the exchange's pull fsyncs what it writes, so this does too);
* exchange: ``exchange upload CASE FILE`` (encrypt, hash, sign every PATCH;
  the server verifies digests, stores, fsyncs, logs, checks the blob's
  address at commit), then ``exchange pull CASE --dest D`` as the
  coordinator (download, verify, decrypt, custody record, fsync, rename).

In the order plain PUT, plain GET, ``age``+``curl`` upload, exchange upload,
``age``+``curl`` pull, exchange pull: each exchange transfer runs right after
the reference it is divided by.

Each client runs from a small launcher (``bench/measure.py``): its wall time
(start-up included), its CPU seconds (user + system, every process of a
pipeline) and its peak RSS. Each server's CPU seconds are read from
/proc/PID/stat around each transfer, its peak RSS (VmHWM) at the end. CPU is
reported in seconds per GiB transferred. Ratios are throughput over the
reference's throughput (> 1: faster than the reference), server CPU over
the plain server's and client CPU over the ``age``+``curl`` pipeline's (< 1:
cheaper); on a shared machine the CPU ratios are the steadier figures.

The floor. After the transfers, a probe on the client's core times SHA-256
and age's AEAD (ChaCha20-Poly1305 over 64 KiB chunks) with its CPU clock. An
exchange client must at least move the bytes as the plain client did, hash
each byte twice (the plaintext's forensic SHA-256 and the ciphertext's, which
addresses the blob and signs each PATCH) and run the AEAD once:
``{upload,pull}_floor_client_cpu_s_per_gib`` is that sum,
``..._client_cpu_over_floor`` how far the real client is above it, and
``..._ratio_ceiling_vs_age_curl`` the ratio to ``age``+``curl`` a client at
its floor would reach on one core (the pipeline's seconds per GiB over the
floor's). A ceiling under 0.8 means the target cannot be met on that core at
that hour whatever the code; the probe's rates (``client_sha256_mb_per_s``,
``client_aead_mb_per_s``) show how fast the hour was.

``--repeat N`` runs the whole benchmark N times (each with its own servers and
file) and reports the median of every figure across the runs, each ratio
taken within its own run first; ``runs`` lists every run's figures. On this
kind of machine one run's ratios move by ±15 %: read the median of three.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from measure import (  # bench/ is on sys.path
    Run,
    cpu_s,
    launch,
    listening_port,
    vm_hwm_mib,
    with_bytecode_cache,
)

MIB = 1024 * 1024
GIB = 1024 * MIB
PLAIN_SERVER = Path(__file__).with_name("plain_server.py")
PASSPHRASE = "bench-passphrase-not-secret"
SHORT_SIZE = 4 * MIB
_UNITS = {"": MIB, "k": 1024, "m": MIB, "g": GIB}


def parse_size(text: str) -> int:
    """Return the bytes of ``text``: a number with an optional K, M or G suffix (MiB if none)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?", text.strip().lower())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 512M, 1G, 64)")
    size = int(float(match.group(1)) * _UNITS[match.group(2)])
    if size <= 0:
        raise argparse.ArgumentTypeError("the size must be positive")
    return size


# -- the plain client (a child process: e2e.py --plain-client put|get URL PATH) ----------

def _run_plain_client(mode: str, url: str, path: str) -> None:
    async def main() -> None:
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            if mode == "put":
                async def body() -> Any:
                    with open(path, "rb") as handle:
                        while data := handle.read(1 * MIB):
                            yield data

                size = os.path.getsize(path)
                async with session.put(url, data=body(),
                                       headers={"Content-Length": str(size)}) as response:
                    await response.read()
                    assert response.status == 200
            else:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                async with session.get(url) as response:
                    async for data in response.content.iter_chunked(1 * MIB):
                        os.write(fd, data)
                os.fsync(fd)
                os.close(fd)

    asyncio.run(main())


# -- the client core's floor (a child process: e2e.py --floor-probe MIB) ------------------

def _run_floor_probe(mib: int) -> None:
    """Print the CPU seconds per GiB of SHA-256 and of age's AEAD on this (pinned) core.

    The data is a 64 MiB buffer, larger than the caches, as a streamed file is;
    the AEAD seals 64 KiB chunks into one reused buffer, as the exchange's
    payload code does. Each is timed over ``mib`` MiB with the process's CPU clock.
    """
    from cryptography.hazmat.primitives.ciphers.aead import (  # noqa: PLC0415 - child only
        ChaCha20Poly1305,
    )

    chunk = 64 * 1024
    data = memoryview(os.urandom(64 * MIB))
    total = mib * MIB

    def pieces() -> Iterator[memoryview]:
        done = 0
        while done < total:
            take = min(len(data), total - done)
            yield data[:take]
            done += take

    started = time.process_time()
    digest = hashlib.sha256()
    for piece in pieces():
        digest.update(piece)
    sha_s = time.process_time() - started
    aead, out = ChaCha20Poly1305(os.urandom(32)), bytearray(chunk + 16)
    nonce = bytes(12)
    started = time.process_time()
    for piece in pieces():
        for at in range(0, len(piece), chunk):
            aead.encrypt_into(nonce, piece[at:at + chunk], None, out)
    aead_s = time.process_time() - started
    gib = total / GIB
    print(json.dumps({"sha256_s_per_gib": sha_s / gib, "aead_s_per_gib": aead_s / gib}))


# -- measurement ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Transfer:
    """One measured transfer: the client's run and the server's CPU seconds meanwhile."""

    client: Run
    server_cpu_s: float


def _transfer(argv: list[str], server_pid: int, *, env: dict[str, str] | None = None,
              cpus: set[int] | None = None) -> Transfer:
    before = cpu_s(server_pid)
    client = launch(argv, env=env, cpus=cpus)
    return Transfer(client, cpu_s(server_pid) - before)


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        block = os.urandom(4 * MIB)
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
            block = hashlib.sha512(block[:64]).digest() * (len(block) // 64)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise SystemExit(f"e2e: the {name} command is needed (Debian package '{name}')")
    return path


def run(size: int) -> dict[str, Any]:
    """Run the benchmark on a file of ``size`` bytes; return the figures."""
    from exchange.crypto.keys import ParticipantIdentity  # noqa: PLC0415 - after sys.path
    from exchange.transport.client import SignedSession  # noqa: PLC0415
    from tests.server_harness import (  # noqa: PLC0415
        ServerProcess,
        core_split,
        enrol,
        init_server,
        pinned,
        write_test_keystore,
    )
    from tests.server_harness import run as run_async  # noqa: PLC0415

    age, age_keygen, curl = _tool("age"), _tool("age-keygen"), _tool("curl")
    client_cpus, server_cpus = core_split()
    py = sys.executable
    results: dict[str, Transfer] = {}
    with tempfile.TemporaryDirectory(prefix="exchange-bench-e2e-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        source = base / "evidence.bin"
        _write_random(source, size)
        age_key = base / "age.key"
        recipient = subprocess.run([age_keygen, "-o", str(age_key)], capture_output=True,
                                   text=True, check=True).stderr.split()[-1]
        admin = ParticipantIdentity.generate("admin")
        init_server(base / "data", admin)
        plain_dir = base / "plain"
        plain_dir.mkdir()
        with pinned(server_cpus):
            server = ServerProcess(base / "data")
            plain = subprocess.Popen([py, str(PLAIN_SERVER), str(plain_dir)],
                                     stdout=subprocess.PIPE, text=True)
        try:
            plain_url = f"http://127.0.0.1:{listening_port(plain)}/blob"
            cast = {"prosecutor": "prosecutor", "coordinator": "coordinator"}
            identities = {name: ParticipantIdentity.generate(name) for name in cast}

            async def enrol_all() -> None:
                async with SignedSession(server.url, admin) as session:
                    for name, role in cast.items():
                        await enrol(session, identities[name], role)

            run_async(enrol_all())

            def env(name: str) -> dict[str, str]:
                keystore = base / f"{name}.keystore"
                if not keystore.exists():
                    write_test_keystore(keystore, identities[name], PASSPHRASE)
                out = with_bytecode_cache({k: v for k, v in os.environ.items()
                                           if not k.startswith("EXCHANGE_")}, base / "pycache")
                out.update(EXCHANGE_URL=server.url, EXCHANGE_KEYSTORE=str(keystore),
                           EXCHANGE_PASSPHRASE=PASSPHRASE,
                           EXCHANGE_TRUST=str(base / "data" / "trust.json"),
                           EXCHANGE_STATE_DIR=str(base / f"state-{name}"),
                           EXCHANGE_TEST_WEAK_KDF="1")
                return out

            exchange = [py, "-m", "exchange"]
            case_id = launch([*exchange, "case", "create", "--title", "bench"],
                             env=env("prosecutor")).stdout.strip()
            launch([*exchange, "case", "add-member", case_id, "coordinator"],
                   env=env("prosecutor"))

            plain_pid, exchange_pid = plain.pid, server.proc.pid
            plain_down, age_down = base / "plain-down.bin", base / "age-down.bin"
            results["plain_upload"] = _transfer(
                [py, __file__, "--plain-client", "put", plain_url, str(source)],
                plain_pid, cpus=client_cpus)
            results["plain_download"] = _transfer(
                [py, __file__, "--plain-client", "get", plain_url, str(plain_down)],
                plain_pid, cpus=client_cpus)
            plain_down.unlink()
            results["age_curl_upload"] = _transfer(
                ["bash", "-o", "pipefail", "-c",
                 f'"{age}" -r {recipient} "{source}" | "{curl}" -sSf -T - "{plain_url}"'
                 " > /dev/null"], plain_pid, cpus=client_cpus)
            # Each exchange transfer right after its age+curl reference: the machine's
            # speed drifts within a run, and the ratio compares the two.
            results["upload"] = _transfer(
                [*exchange, "upload", case_id, str(source), "--json"], exchange_pid,
                env=env("prosecutor"), cpus=client_cpus)
            results["age_curl_pull"] = _transfer(
                ["bash", "-o", "pipefail", "-c",
                 f'"{curl}" -sSf "{plain_url}" | "{age}" -d -i "{age_key}" > "{age_down}"'
                 f' && sync "{age_down}"'], plain_pid, cpus=client_cpus)
            age_complete = age_down.stat().st_size == size
            age_down.unlink()
            dest = base / "dest"
            results["pull"] = _transfer(
                [*exchange, "pull", case_id, "--dest", str(dest), "--json"], exchange_pid,
                env=env("coordinator"), cpus=client_cpus)
            # The floor, on the same core in the same run: what the two hashes and the
            # AEAD alone cost there (see _figures).
            floor = json.loads(launch(
                [py, __file__, "--floor-probe", str(max(16, min(256, size // MIB)))],
                cpus=client_cpus).stdout)
            pulled = dest / case_id / source.name
            complete = pulled.stat().st_size == size and age_complete
            server_rss = vm_hwm_mib(exchange_pid)
            plain_server_rss = vm_hwm_mib(plain_pid)
        finally:
            plain.kill()
            plain.wait()
            server.stop()
    return _figures(size, results, server_rss=server_rss, plain_server_rss=plain_server_rss,
                    complete=complete, pinned_to=(client_cpus, server_cpus), floor=floor)


def _figures(size: int, results: dict[str, Transfer], *, server_rss: float,
             plain_server_rss: float, complete: bool,
             pinned_to: tuple[set[int] | None, set[int] | None],
             floor: dict[str, float]) -> dict[str, Any]:
    """Turn the measured transfers into the reported figures (see the module docstring)."""
    mb, gib = size / 1e6, size / GIB

    def speed(name: str) -> float:
        return round(mb / results[name].client.wall_s, 1)

    def ratio(name: str, reference: str) -> float:
        return round(results[reference].client.wall_s / results[name].client.wall_s, 3)

    def server_cpu_ratio(name: str, reference: str) -> float:
        return round(results[name].server_cpu_s / max(results[reference].server_cpu_s, 0.01), 2)

    def client_cpu_ratio(name: str, reference: str) -> float:
        return round(results[name].client.cpu_s / max(results[reference].client.cpu_s, 0.01), 2)

    figures: dict[str, Any] = {
        "size_mib": round(size / MIB, 2),
        "pinned": pinned_to[0] is not None,
        "client_cores": sorted(pinned_to[0] or ()),
        "server_cores": sorted(pinned_to[1] or ()),
        "upload_mb_per_s": speed("upload"),
        "plain_upload_mb_per_s": speed("plain_upload"),
        "age_curl_upload_mb_per_s": speed("age_curl_upload"),
        "upload_ratio_vs_plain": ratio("upload", "plain_upload"),
        "upload_ratio_vs_age_curl": ratio("upload", "age_curl_upload"),
        "pull_mb_per_s": speed("pull"),
        "plain_download_mb_per_s": speed("plain_download"),
        "age_curl_pull_mb_per_s": speed("age_curl_pull"),
        "pull_ratio_vs_plain": ratio("pull", "plain_download"),
        "pull_ratio_vs_age_curl": ratio("pull", "age_curl_pull"),
        "server_cpu_ratio_upload_vs_plain": server_cpu_ratio("upload", "plain_upload"),
        "server_cpu_ratio_pull_vs_plain": server_cpu_ratio("pull", "plain_download"),
        # Steadier than throughput on a shared machine: CPU seconds do not count waiting.
        "client_cpu_ratio_upload_vs_age_curl": client_cpu_ratio("upload", "age_curl_upload"),
        "client_cpu_ratio_pull_vs_age_curl": client_cpu_ratio("pull", "age_curl_pull"),
    }
    for name, transfer in results.items():
        figures[f"{name}_client_cpu_s_per_gib"] = round(transfer.client.cpu_s / gib, 2)
        figures[f"{name}_server_cpu_s_per_gib"] = round(transfer.server_cpu_s / gib, 2)
    figures.update(_floor_figures(figures, results, floor, gib))
    figures.update({
        "client_peak_rss_mib": round(max(results["upload"].client.peak_rss_mib,
                                         results["pull"].client.peak_rss_mib), 1),
        "client_upload_peak_rss_mib": round(results["upload"].client.peak_rss_mib, 1),
        "client_pull_peak_rss_mib": round(results["pull"].client.peak_rss_mib, 1),
        "server_peak_rss_mib": round(server_rss, 1),
        "plain_client_peak_rss_mib": round(max(results["plain_upload"].client.peak_rss_mib,
                                               results["plain_download"].client.peak_rss_mib), 1),
        "age_curl_peak_rss_mib": round(max(results["age_curl_upload"].client.peak_rss_mib,
                                           results["age_curl_pull"].client.peak_rss_mib), 1),
        "plain_server_peak_rss_mib": round(plain_server_rss, 1),
        "pulled_file_complete": complete,
    })
    return figures


def _floor_figures(figures: dict[str, Any], results: dict[str, Transfer],
                   floor: dict[str, float], gib: float) -> dict[str, Any]:
    """The client's floor per GiB and the ratio it would allow (module docstring).

    Whatever the code, an exchange client moves the bytes as the plain client
    does (read and send, or receive, write and fsync), hashes every byte twice
    with SHA-256 (the plaintext's forensic hash; the ciphertext's, which
    addresses the blob and signs each PATCH) and runs age's AEAD once. Those
    CPU seconds on the client's core are its floor; on one core the client
    cannot go faster than one GiB per floor, so the ratio to ``age``+``curl``
    it allows is that pipeline's seconds per GiB over the floor (the
    ``..._ratio_ceiling_...`` keys).
    """
    crypto_s = 2 * floor["sha256_s_per_gib"] + floor["aead_s_per_gib"]
    out: dict[str, Any] = {
        "client_sha256_mb_per_s": round(GIB / 1e6 / floor["sha256_s_per_gib"], 1),
        "client_aead_mb_per_s": round(GIB / 1e6 / floor["aead_s_per_gib"], 1),
    }
    for ours, plain, reference in (("upload", "plain_upload", "age_curl_upload"),
                                   ("pull", "plain_download", "age_curl_pull")):
        floor_s = results[plain].client.cpu_s / gib + crypto_s
        out[f"{ours}_floor_client_cpu_s_per_gib"] = round(floor_s, 2)
        out[f"{ours}_client_cpu_over_floor"] = round(
            figures[f"{ours}_client_cpu_s_per_gib"] / floor_s, 2)
        out[f"{ours}_ratio_ceiling_vs_age_curl"] = round(
            results[reference].client.wall_s / gib / floor_s, 3)
    return out


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Return one run's figures as they are; of several, each number's median and ``runs``.

    A figure that is not a number (a flag, a list of cores) is kept when every run agrees
    on it; ``pulled_file_complete`` holds only if it held in every run.
    """
    if len(runs) == 1:
        return runs[0]
    merged: dict[str, Any] = {}
    for key, first in runs[0].items():
        values = [r[key] for r in runs]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            merged[key] = round(statistics.median(values), 3)
        elif key == "pulled_file_complete":
            merged[key] = all(values)
        elif all(v == first for v in values):
            merged[key] = first
    merged["repeat"] = len(runs)
    merged["runs"] = runs
    return merged


def main() -> int:
    """Parse the command line and run (or act as a child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=parse_size, default=GIB,
                        help="file size: bytes with K, M or G (binary), MiB without (default 1G)")
    parser.add_argument("--short", action="store_true",
                        help=f"the short run CI makes ({SHORT_SIZE // MIB} MiB; no timing meaning)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run N times and report each figure's median (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--plain-client", nargs=3, metavar=("MODE", "URL", "PATH"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--floor-probe", type=int, metavar="MIB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_client:
        _run_plain_client(*args.plain_client)
        return 0
    if args.floor_probe:
        _run_floor_probe(args.floor_probe)
        return 0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    size = SHORT_SIZE if args.short else args.size
    figures = medians([run(size) for _ in range(args.repeat)])
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:36} {value}")
    return 0 if figures["pulled_file_complete"] else 3


if __name__ == "__main__":
    sys.exit(main())
