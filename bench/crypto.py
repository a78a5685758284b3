"""Benchmark: our age v1 streaming encryption/decryption against the reference ``age`` CLI.

Creates a random file (1 GiB by default), then encrypts and decrypts it file to
file with our code and with ``age`` (X25519, same file) in the same run, each
side in its own subprocess so that its peak RSS can be read (``wait4``). Also
measures each side writing to /dev/null, which isolates the codec from the
cost of writing the output (on this class of VM, writing 1 GiB to disk or
tmpfs costs more than encrypting it).

    .venv/bin/python bench/crypto.py [--size-mib N] [--dir PATH] [--repeat N] [--json]

Our throughput is timed inside the worker (library use, as the client and
server call it); the interpreter start-up is reported separately in the wall
figure. age is timed by wall clock around its process (Go starts in ~1 ms).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
RSS_LIMIT_MIB = 64


@dataclass(frozen=True, slots=True)
class Run:
    """One timed operation of one tool."""

    seconds: float
    wall_seconds: float
    peak_rss_mib: float


def _run(args: list[str]) -> tuple[Run, str]:
    """Run ``args`` as a child; return its timing and peak RSS (ru_maxrss via wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"bench: error: {args[0]} failed: {stderr.decode(errors='replace')}")
    rss = usage.ru_maxrss / 1024
    text = stdout.decode()
    seconds = wall
    if text.strip().startswith("{"):
        report = json.loads(text)
        seconds = float(report["seconds"])
        rss = float(report["peak_rss_mib"])
    return Run(seconds=seconds, wall_seconds=wall, peak_rss_mib=rss), text


def _worker(mode: str, src: str, dst: str, key_file: str) -> None:
    """Child process: encrypt or decrypt one file with our library; print timing as JSON."""
    # Imported here so the parent stays small: a child's ru_maxrss includes
    # the parent's RSS at fork time.
    from exchange.crypto import age  # noqa: PLC0415

    identity = age.parse_identity_file(Path(key_file).read_text())[0]
    start = time.perf_counter()
    with open(src, "rb") as source, open(dst, "wb") as target:
        if mode == "encrypt":
            assert isinstance(identity, age.X25519Identity)
            age.encrypt_file(source, target, [identity.recipient()])
        else:
            age.decrypt_file(source, target, [identity])
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    status = Path("/proc/self/status")
    if status.exists():  # VmHWM is this image's own peak, unlike ru_maxrss across exec
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                rss = int(line.split()[1]) / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": rss}))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(4 * MIB):
            digest.update(block)
    return digest.hexdigest()


def _best(runs: list[Run]) -> Run:
    best = min(runs, key=lambda r: r.seconds)
    return Run(best.seconds, best.wall_seconds, max(r.peak_rss_mib for r in runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="plaintext size (MiB)")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where to put the temporary files (default: /dev/shm, memory-backed)",
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; best kept")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return

    age_bin, keygen = shutil.which("age"), shutil.which("age-keygen")
    if age_bin is None or keygen is None:
        raise SystemExit("bench: error: the age CLI is required (Debian package 'age')")
    size: int = int(args.size_mib) * MIB
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    with tempfile.TemporaryDirectory(prefix="exchange-bench-", dir=args.dir) as tmp:
        work = Path(tmp)
        plain, key = work / "plain", work / "key.txt"
        subprocess.run([keygen, "-o", str(key)], check=True, capture_output=True)
        recipient = subprocess.run(
            [keygen, "-y", str(key)], check=True, capture_output=True, text=True
        ).stdout.strip()
        with plain.open("wb") as f:
            for _ in range(0, size, 4 * MIB):
                f.write(os.urandom(min(4 * MIB, size - f.tell())))
        expected = _sha256(plain)

        results: dict[str, dict[str, Run]] = {}
        for sink in ("file", "null"):

            def out(name: str, sink: str = sink) -> str:
                return os.devnull if sink == "null" else str(work / name)

            ours_ct, age_ct = str(work / "ours.age"), str(work / "theirs.age")
            steps = {
                "ours_encrypt": [*me, "encrypt", str(plain), ours_ct, str(key)],
                "age_encrypt": [age_bin, "-r", recipient, "-o", age_ct, str(plain)],
                "ours_decrypt": [*me, "decrypt", ours_ct, out("ours.out"), str(key)],
                "age_decrypt": [age_bin, "-d", "-i", str(key), "-o", out("theirs.out"), age_ct],
            }
            if sink == "null":  # encryption output goes to /dev/null; reuse the ciphertexts
                steps["ours_encrypt"][-2] = os.devnull
                steps["age_encrypt"][4] = os.devnull
            runs: dict[str, list[Run]] = {name: [] for name in steps}
            for _ in range(args.repeat):
                for name, command in steps.items():
                    runs[name].append(_run(command)[0])
            results[sink] = {name: _best(r) for name, r in runs.items()}
            if sink == "file":
                for name in ("ours.out", "theirs.out"):
                    if _sha256(work / name) != expected:
                        raise SystemExit(f"bench: error: {name} does not match the plaintext")
                    (work / name).unlink()

    def mb_s(run: Run) -> float:
        return size / run.seconds / 1e6

    report: dict[str, object] = {
        "size_mib": args.size_mib,
        "dir": args.dir or tempfile.gettempdir(),
    }
    for sink, suffix in (("file", ""), ("null", "_devnull")):
        r = results[sink]
        for op in ("encrypt", "decrypt"):
            ours, theirs = r[f"ours_{op}"], r[f"age_{op}"]
            report[f"{op}_mb_s{suffix}"] = round(mb_s(ours), 1)
            report[f"{op}_mb_s_wall{suffix}"] = round(size / ours.wall_seconds / 1e6, 1)
            report[f"age_{op}_mb_s{suffix}"] = round(mb_s(theirs), 1)
            report[f"{op}_ratio_vs_age{suffix}"] = round(theirs.seconds / ours.seconds, 2)
            report[f"age_{op}_peak_rss_mib{suffix}"] = round(theirs.peak_rss_mib, 1)
    report["peak_rss_mib"] = round(
        max(run.peak_rss_mib for r in results.values() for n, run in r.items() if "ours" in n), 1
    )
    report["rss_under_limit"] = bool(report["peak_rss_mib"] < RSS_LIMIT_MIB)  # type: ignore[operator]
    if args.json:
        print(json.dumps(report))
        return
    print(f"plaintext {args.size_mib} MiB in {report['dir']} (best of {args.repeat})")
    for suffix, label in (("", "file -> file"), ("_devnull", "file -> /dev/null")):
        print(f"{label}:")
        for op in ("encrypt", "decrypt"):
            print(
                f"  {op}: ours {report[f'{op}_mb_s{suffix}']} MB/s "
                f"(wall incl. start-up {report[f'{op}_mb_s_wall{suffix}']}), "
                f"age {report[f'age_{op}_mb_s{suffix}']} MB/s, "
                f"ratio {report[f'{op}_ratio_vs_age{suffix}']}x"
            )
    print(
        f"peak RSS: ours {report['peak_rss_mib']} MiB (limit {RSS_LIMIT_MIB}), "
        f"age {report['age_encrypt_peak_rss_mib']}/{report['age_decrypt_peak_rss_mib']} MiB"
    )


if __name__ == "__main__":
    main()
