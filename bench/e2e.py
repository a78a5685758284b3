"""End-to-end benchmark: ``exchange upload``/``pull`` against plain streaming HTTP, same run.

Usage: .venv/bin/python bench/e2e.py [--size-mib N] [--json]

One ``exchange serve`` (embedded SQLite, temporary data dir) with a
prosecutor and a coordinator, and a bare aiohttp server in its own process.
A random file of N MiB (default 1024) is written once (page-cached). Then:

* upload: ``exchange upload CASE FILE`` as a subprocess (encrypt, hash both
  sides, sign every PATCH, the server verifies digests, stores, fsyncs,
  logs, re-hashes at commit) vs a plain client subprocess streaming the same
  file in one PUT to the bare handler, which hashes (SHA-256) and fsyncs;
* pull: ``exchange pull CASE --dest D`` (download, hash, decrypt, verify,
  custody record, rename) vs a plain client subprocess GETting the bare
  server's copy into a file and fsyncing it.

Times are wall-clock of each subprocess (start-up included). Ratios are
exchange MB/s over plain MB/s. Peak RSS: the client subprocess's
``ru_maxrss`` (``wait4``) and the ``exchange serve`` process's VmHWM.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
from plain_server import vm_hwm_mib  # bench/ is this script's own directory

MIB = 1024 * 1024
PLAIN_SERVER = Path(__file__).with_name("plain_server.py")
PASSPHRASE = "bench-passphrase-not-secret"


# -- the bare server and plain client (child processes) --------------------------------

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


# -- measurement ---------------------------------------------------------------------

def _timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run ``argv``; return (seconds, peak RSS MiB, stdout). Raises on failure."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    seconds = time.perf_counter() - started
    usage = _rusage_of(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} failed:\n{err.decode()[-2000:]}")
    return seconds, usage, out.decode()


_CHILD_RSS: dict[int, float] = {}


def _rusage_of(proc: subprocess.Popen[bytes]) -> float:
    return _CHILD_RSS.get(proc.pid, float("nan"))


_orig_wait = subprocess.Popen._try_wait  # type: ignore[attr-defined]


def _try_wait(self: subprocess.Popen[bytes], wait_flags: int) -> tuple[int, int]:
    pid, status, usage = os.wait4(self.pid, wait_flags)
    if pid:
        _CHILD_RSS[pid] = usage.ru_maxrss / 1024
    return pid, status


subprocess.Popen._try_wait = _try_wait  # type: ignore[attr-defined]


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        block = os.urandom(4 * MIB)
        left = size
        while left > 0:
            handle.write(block[: min(left, len(block))])
            left -= len(block)
            block = hashlib.sha512(block[:64]).digest() * (len(block) // 64)


def run(size_mib: int) -> dict[str, Any]:
    """Run the benchmark on a file of ``size_mib`` MiB; return the figures."""
    from exchange.crypto.keys import ParticipantIdentity  # noqa: PLC0415 - after sys.path
    from tests.server_harness import (  # noqa: PLC0415
        ServerProcess,
        enrol,
        init_server,
        write_test_keystore,
    )
    from tests.server_harness import run as run_async  # noqa: PLC0415

    size = size_mib * MIB
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="exchange-bench-e2e-") as tmp:
        base = Path(tmp)
        source = base / "evidence.bin"
        _write_random(source, size)
        admin = ParticipantIdentity.generate("admin")
        init_server(base / "data", admin)
        server = ServerProcess(base / "data")
        plain_dir = base / "plain"
        plain_dir.mkdir()
        plain = subprocess.Popen([py, str(PLAIN_SERVER), str(plain_dir)],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert plain.stdout is not None
            plain_url = f"http://127.0.0.1:{plain.stdout.readline().split()[-1]}/blob"
            cast = {"prosecutor": "prosecutor", "coordinator": "coordinator"}
            identities = {name: ParticipantIdentity.generate(name) for name in cast}

            async def enrol_all() -> None:
                from exchange.transport.client import SignedSession  # noqa: PLC0415
                async with SignedSession(server.url, admin) as session:
                    for name, role in cast.items():
                        await enrol(session, identities[name], role)

            run_async(enrol_all())

            def env(name: str) -> dict[str, str]:
                keystore = base / f"{name}.keystore"
                if not keystore.exists():
                    write_test_keystore(keystore, identities[name], PASSPHRASE)
                out = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
                out.update(EXCHANGE_URL=server.url, EXCHANGE_KEYSTORE=str(keystore),
                           EXCHANGE_PASSPHRASE=PASSPHRASE,
                           EXCHANGE_TRUST=str(base / "data" / "trust.json"),
                           EXCHANGE_STATE_DIR=str(base / "state"), EXCHANGE_TEST_WEAK_KDF="1")
                return out

            exchange = [py, "-m", "exchange"]
            _, _, out = _timed([*exchange, "case", "create", "--title", "bench"],
                               env("prosecutor"))
            case_id = out.strip()
            _timed([*exchange, "case", "add-member", case_id, "coordinator"], env("prosecutor"))

            plain_up_s, plain_up_rss, _ = _timed([py, __file__, "--plain-client", "put",
                                                  plain_url, str(source)])
            up_s, up_rss, _ = _timed([*exchange, "upload", case_id, str(source), "--json"],
                                     env("prosecutor"))
            plain_down = base / "plain-down.bin"
            plain_dn_s, plain_dn_rss, _ = _timed([py, __file__, "--plain-client", "get",
                                                  plain_url, str(plain_down)])
            plain_down.unlink()
            dest = base / "dest"
            dn_s, dn_rss, _ = _timed([*exchange, "pull", case_id, "--dest", str(dest),
                                      "--json"], env("coordinator"))
            pulled = dest / case_id / source.name
            same = pulled.stat().st_size == size
            server_rss = vm_hwm_mib(server.proc.pid)
        finally:
            plain.kill()
            plain.wait()
            server.stop()
    mb = size / 1e6
    return {
        "size_mib": size_mib,
        "upload_mb_per_s": round(mb / up_s, 1),
        "plain_upload_mb_per_s": round(mb / plain_up_s, 1),
        "upload_ratio_vs_plain": round(plain_up_s / up_s, 3),
        "pull_mb_per_s": round(mb / dn_s, 1),
        "plain_download_mb_per_s": round(mb / plain_dn_s, 1),
        "pull_ratio_vs_plain": round(plain_dn_s / dn_s, 3),
        "client_peak_rss_mib": round(max(up_rss, dn_rss), 1),
        "client_upload_peak_rss_mib": round(up_rss, 1),
        "client_pull_peak_rss_mib": round(dn_rss, 1),
        "plain_client_peak_rss_mib": round(max(plain_up_rss, plain_dn_rss), 1),
        "server_peak_rss_mib": round(server_rss, 1),
        "pulled_file_complete": same,
    }


def main() -> int:
    """Parse the command line and run (or act as a child process)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--plain-client", nargs=3, metavar=("MODE", "URL", "PATH"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plain_client:
        _run_plain_client(*args.plain_client)
        return 0
    figures = run(args.size_mib)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
