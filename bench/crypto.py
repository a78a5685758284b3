"""Benchmark: our age v1 streaming encryption/decryption against the reference ``age`` CLI.

Creates a random file (1 GiB by default) and, in the same run, encrypts and
decrypts it file to file with our library (``encrypt_file``/``decrypt_file``)
and with ``age`` (X25519, same recipient, same input file, outputs in the same
directory). Both sides are timed the same way: wall clock around the whole
child process, start-up included (``age`` starts in ~1 ms, Python in ~0.1 s).
Both decrypt the same ciphertext (the one ``age`` wrote). The runs are
interleaved (ours, age, ours, age ...) ``--repeat`` times and the best of each
side is compared; the paired per-round ratios are printed too, because the
machine may be shared.

Extra information: each side writing to /dev/null (isolates the codec from
the cost of writing the output: on this class of VM writing 1 GiB to tmpfs
costs more CPU than encrypting it), each side's CPU time (user+sys, from
``wait4``), our time measured inside the worker, our CLI
(``exchange age encrypt/decrypt``) against ``age``, and each side's peak RSS.

    .venv/bin/python bench/crypto.py [--size-mib N] [--dir PATH] [--repeat N] [--json]
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

    wall_seconds: float  # whole child process, start-up included
    cpu_seconds: float  # user + system time of the child
    inside_seconds: float  # our workers' own timing; equals wall_seconds for others
    peak_rss_mib: float


def _run(args: list[str], remove: str | None) -> Run:
    """Run ``args`` as a child; return its timing and peak RSS (ru_maxrss via wait4)."""
    if remove is not None and os.path.exists(remove):
        os.unlink(remove)  # every run creates its output, as a first run would
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(args, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"bench: error: {args[0]} failed: {stderr.decode(errors='replace')}")
    rss, inside = usage.ru_maxrss / 1024, wall
    text = stdout.decode().strip()
    if text.startswith("{"):
        report = json.loads(text)
        inside, rss = float(report["seconds"]), float(report["peak_rss_mib"])
    return Run(wall, usage.ru_utime + usage.ru_stime, inside, rss)


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


def _loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=int, default=1024, help="plaintext size (MiB)")
    parser.add_argument(
        "--dir",
        default="/dev/shm" if os.path.isdir("/dev/shm") else None,
        help="where to put the temporary files (default: /dev/shm, memory-backed)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; best kept")
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
    cli = [sys.executable, "-m", "exchange", "age"]
    load_before = _loadavg()
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
        ct, ours_ct, null = str(work / "theirs.age"), str(work / "ours.age"), os.devnull
        ours_out, age_out = str(work / "ours.out"), str(work / "theirs.out")
        # name -> (command, output file); pairs (ours, age) run back to back.
        steps: dict[str, tuple[list[str], str]] = {
            "age_encrypt": ([age_bin, "-r", recipient, "-o", ct, str(plain)], ct),
            "ours_encrypt": ([*me, "encrypt", str(plain), ours_ct, str(key)], ours_ct),
            "ours_decrypt": ([*me, "decrypt", ct, ours_out, str(key)], ours_out),
            "age_decrypt": ([age_bin, "-d", "-i", str(key), "-o", age_out, ct], age_out),
            "ours_encrypt_devnull": ([*me, "encrypt", str(plain), null, str(key)], null),
            "age_encrypt_devnull": ([age_bin, "-r", recipient, "-o", null, str(plain)], null),
            "ours_decrypt_devnull": ([*me, "decrypt", ct, null, str(key)], null),
            "age_decrypt_devnull": ([age_bin, "-d", "-i", str(key), "-o", null, ct], null),
            "cli_encrypt": ([*cli, "encrypt", "-r", recipient, "-o", ours_ct, str(plain)], ours_ct),
            "cli_decrypt": ([*cli, "decrypt", "-i", str(key), "-o", ours_out, ct], ours_out),
        }
        runs: dict[str, list[Run]] = {name: [] for name in steps}
        for _ in range(args.repeat):
            for name, (command, output) in steps.items():
                runs[name].append(_run(command, None if output == null else output))
                if name in ("ours_decrypt", "age_decrypt", "cli_decrypt"):
                    produced = Path(ours_out if name != "age_decrypt" else age_out)
                    if _sha256(produced) != expected:
                        raise SystemExit(f"bench: error: {name} output differs from the plaintext")
                    produced.unlink()

    def mb_s(seconds: float) -> float:
        return round(size / seconds / 1e6, 1)

    def best(name: str) -> Run:
        return min(runs[name], key=lambda r: r.wall_seconds)

    report: dict[str, object] = {
        "size_mib": args.size_mib,
        "dir": args.dir or tempfile.gettempdir(),
        "repeat": args.repeat,
        "timing": "wall clock of the whole child process, start-up included, both sides",
        "loadavg_before": load_before,
        "loadavg_after": _loadavg(),
    }
    for op in ("encrypt", "decrypt"):
        for suffix in ("", "_devnull"):
            ours, theirs = best(f"ours_{op}{suffix}"), best(f"age_{op}{suffix}")
            report[f"{op}_mb_s{suffix}"] = mb_s(ours.wall_seconds)
            report[f"age_{op}_mb_s{suffix}"] = mb_s(theirs.wall_seconds)
            report[f"{op}_ratio_vs_age{suffix}"] = round(theirs.wall_seconds / ours.wall_seconds, 2)
            report[f"{op}_paired_ratios{suffix}"] = [
                round(t.wall_seconds / o.wall_seconds, 2)
                for o, t in zip(runs[f"ours_{op}{suffix}"], runs[f"age_{op}{suffix}"], strict=True)
            ]
            report[f"{op}_mb_s_inside{suffix}"] = mb_s(ours.inside_seconds)
            for side, prefix in (("ours", ""), ("age", "age_")):
                cpu = min(r.cpu_seconds for r in runs[f"{side}_{op}{suffix}"])
                report[f"{prefix}{op}_cpu_s{suffix}"] = round(cpu, 2)
        theirs = best(f"age_{op}")
        ours_cli = best(f"cli_{op}")
        report[f"cli_{op}_mb_s"] = mb_s(ours_cli.wall_seconds)
        report[f"cli_{op}_ratio_vs_age"] = round(theirs.wall_seconds / ours_cli.wall_seconds, 2)
        report[f"age_{op}_peak_rss_mib"] = round(max(r.peak_rss_mib for r in runs[f"age_{op}"]), 1)
    report["peak_rss_mib"] = round(
        max(r.peak_rss_mib for n, rs in runs.items() if n.startswith("ours") for r in rs), 1
    )
    report["cli_peak_rss_mib"] = round(
        max(r.peak_rss_mib for n, rs in runs.items() if n.startswith("cli") for r in rs), 1
    )
    report["rss_under_limit"] = bool(report["peak_rss_mib"] < RSS_LIMIT_MIB)  # type: ignore[operator]
    if args.json:
        print(json.dumps(report))
        return
    _print(report)


def _print(report: dict[str, object]) -> None:
    print(
        f"plaintext {report['size_mib']} MiB in {report['dir']}, best of {report['repeat']} "
        f"interleaved rounds; {report['timing']}; load average "
        f"{report['loadavg_before']} -> {report['loadavg_after']}"
    )
    for suffix, label in (("", "file -> file"), ("_devnull", "file -> /dev/null")):
        print(f"{label}:")
        for op in ("encrypt", "decrypt"):
            print(
                f"  {op}: ours {report[f'{op}_mb_s{suffix}']} MB/s, "
                f"age {report[f'age_{op}_mb_s{suffix}']} MB/s, "
                f"ratio {report[f'{op}_ratio_vs_age{suffix}']}x "
                f"(per round {report[f'{op}_paired_ratios{suffix}']}); "
                f"cpu ours {report[f'{op}_cpu_s{suffix}']} s, "
                f"age {report[f'age_{op}_cpu_s{suffix}']} s; "
                f"ours timed inside {report[f'{op}_mb_s_inside{suffix}']} MB/s"
            )
    for op in ("encrypt", "decrypt"):
        print(
            f"cli file -> file {op}: exchange age {report[f'cli_{op}_mb_s']} MB/s, "
            f"ratio {report[f'cli_{op}_ratio_vs_age']}x"
        )
    print(
        f"peak RSS: ours {report['peak_rss_mib']} MiB (limit {RSS_LIMIT_MIB}), "
        f"cli {report['cli_peak_rss_mib']} MiB, "
        f"age {report['age_encrypt_peak_rss_mib']}/{report['age_decrypt_peak_rss_mib']} MiB"
    )


if __name__ == "__main__":
    main()
