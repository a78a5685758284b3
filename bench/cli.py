"""CLI benchmark: wall time and peak RSS of ``exchange files CASE`` and ``exchange case list``.

Usage: .venv/bin/python bench/cli.py [--runs N] [--files F] [--importtime] [--short] [--json]

One ``exchange serve`` (embedded SQLite, temporary data dir, the standard
test cast) on the second usable core; the prosecutor's ``exchange agent``
holds the unlocked identity, so no command runs Argon2 (what a user has
once ``exchange agent start`` ran). The prosecutor creates a case and uploads
F small files (default 20). Each command then runs once to warm the client's
state directory (verified statements and checkpoint, as after everyday use)
and Python's bytecode cache (an installed package has its ``.pyc`` files)
and N more times (default 7) from a small launcher on the first usable core
(``bench/measure.py``); the figures are the medians of wall time (interpreter
start-up included), peak RSS and CPU time (user + system: on a shared machine
the wall time also counts waiting for a core, the CPU time does not).
Targets: < 200 ms wall and < 80 MiB.

The agent answers both commands itself (the fast path, ``exchange.cli.fast``):
the command's own figures are then those of a small process that asks it,
and the agent's work is reported apart, as ``*_agent_cpu_ms`` (its CPU time
per run, /proc/PID/stat) and ``agent_peak_rss_mib`` (its VmHWM at the end);
``*_server_cpu_ms`` is the server's CPU time per run. On an idle machine the
wall time is about the sum of the three; the rest is waiting for a core.

``--importtime`` adds where the start-up goes: the wall time of ``python -c
'import exchange.cli.main'`` (median of N) and the ten slowest imports
(self and cumulative µs from ``python -X importtime -m exchange case list``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import PASSPHRASE, write_real_keystore  # bench/ is on sys.path
from measure import Run, cpu_s, launch, vm_hwm_mib, with_bytecode_cache


def _median(runs: list[Run]) -> tuple[float, float, float]:
    """Return (median wall ms, median peak RSS MiB, median CPU ms) of ``runs``."""
    return (round(statistics.median(r.wall_s for r in runs) * 1000, 1),
            round(statistics.median(r.peak_rss_mib for r in runs), 1),
            round(statistics.median(r.cpu_s for r in runs) * 1000, 1))


def slowest_imports(stderr: str, count: int = 10) -> dict[str, list[tuple[str, int]]]:
    """Return the ``count`` slowest imports of ``-X importtime`` output, by self and cumulative µs.

    The cumulative list shows the chain that drags the rest in; the self list, the modules
    that cost by themselves.
    """
    rows: list[tuple[str, int, int]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|", 2)
        rows.append((name.strip(), int(own), int(cumulative)))
    return {"self": [(n, s) for n, s, _ in sorted(rows, key=lambda r: -r[1])[:count]],
            "cumulative": [(n, c) for n, _, c in sorted(rows, key=lambda r: -r[2])[:count]]}


def run(runs: int, files: int, importtime: bool, *, short: bool = False) -> dict[str, Any]:
    """Return the figures (see the module docstring); ``short``: a cheap test keystore."""
    from tests.server_harness import (  # noqa: PLC0415
        core_split,
        deployed,
        pinned,
        write_test_keystore,
    )

    py = sys.executable
    client_cpus, server_cpus = core_split()
    figures: dict[str, Any] = {"runs": runs, "files": files, "pinned": client_cpus is not None}
    with tempfile.TemporaryDirectory(prefix="xbench-cli-") as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        with pinned(server_cpus):  # the server on its core; everything else on the client's
            deployment = stack.enter_context(deployed(base, "sqlite"))
        with pinned(client_cpus):
            keystore = base / "prosecutor.keystore"
            env = with_bytecode_cache({k: v for k, v in os.environ.items()
                                       if not k.startswith("EXCHANGE_")}, base / "pycache")
            if short:  # two Argon2 runs of 256 MiB saved; the agent makes commands skip it
                write_test_keystore(keystore, deployment.cast["prosecutor"], PASSPHRASE)
                env["EXCHANGE_TEST_WEAK_KDF"] = "1"
            else:
                write_real_keystore(keystore, deployment.cast["prosecutor"], base)
            env.update(EXCHANGE_URL=deployment.url, EXCHANGE_KEYSTORE=str(keystore),
                       EXCHANGE_TRUST=str(deployment.trust_file),
                       EXCHANGE_STATE_DIR=str(base / "state"),
                       EXCHANGE_AGENT_SOCK=str(base / "agent" / "sock"))
            exchange = [py, "-m", "exchange"]
            launch([*exchange, "agent", "start"], env={**env, "EXCHANGE_PASSPHRASE": PASSPHRASE})
            try:
                status = launch([*exchange, "agent", "status", "--json"], env=env)
                agent_pid = int(json.loads(status.stdout)["pid"])
                pids = {"agent": agent_pid, "server": deployment.processes[0].proc.pid}
                figures.update(_measure_commands(exchange, env, base, runs, files,
                                                 client_cpus, pids, warm=not short))
                figures["agent_peak_rss_mib"] = round(vm_hwm_mib(agent_pid), 1)
                if importtime:
                    figures.update(_importtime(py, env, runs, client_cpus))
            finally:
                subprocess.run([*exchange, "agent", "stop"], env=env, capture_output=True,
                               check=False)
    return figures


def _measure_commands(exchange: list[str], env: dict[str, str], base: Path, runs: int,
                      files: int, cpus: set[int] | None, pids: dict[str, int], *,
                      warm: bool) -> dict[str, Any]:
    case_id = launch([*exchange, "case", "create", "--title", "bench"], env=env).stdout.strip()
    sources = base / "evidence"
    sources.mkdir()
    for n in range(files):
        (sources / f"exhibit-{n:03}.txt").write_bytes(os.urandom(4096))
    if files:
        launch([*exchange, "upload", case_id, str(sources)], env=env)
    out: dict[str, Any] = {}
    for key, argv in (("files", [*exchange, "files", case_id]),
                      ("case_list", [*exchange, "case", "list"])):
        if warm:
            launch(argv, env=env, cpus=cpus)  # warm the state directory and bytecode cache
        before = {side: cpu_s(pid) for side, pid in pids.items()}
        wall_ms, rss, cpu_ms = _median([launch(argv, env=env, cpus=cpus) for _ in range(runs)])
        out[f"{key}_ms"], out[f"{key}_peak_rss_mib"], out[f"{key}_cpu_ms"] = wall_ms, rss, cpu_ms
        for side, pid in pids.items():  # the mean per run: /proc gives only totals
            out[f"{key}_{side}_cpu_ms"] = round((cpu_s(pid) - before[side]) / runs * 1000, 1)
    return out


def _importtime(py: str, env: dict[str, str], runs: int,
                cpus: set[int] | None) -> dict[str, Any]:
    launch([py, "-c", "import exchange.cli.main"], env=env, cpus=cpus)  # warm the cache
    bare = [launch([py, "-c", "pass"], env=env, cpus=cpus) for _ in range(runs)]
    imports = [launch([py, "-c", "import exchange.cli.main"], env=env, cpus=cpus)
               for _ in range(runs)]
    traced = subprocess.run([py, "-X", "importtime", "-m", "exchange", "case", "list"],
                            env=env, capture_output=True, text=True, check=True)
    return {"python_startup_ms": _median(bare)[0],
            "import_cli_ms": _median(imports)[0],
            "import_cli_cpu_ms": _median(imports)[2],
            "import_cli_peak_rss_mib": _median(imports)[1],
            "slowest_imports_us": slowest_imports(traced.stderr)}


def main() -> int:
    """Print the figures (one JSON object with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--runs", type=int, default=7, help="measured runs per command")
    parser.add_argument("--files", type=int, default=20, help="files in the listed case")
    parser.add_argument("--importtime", action="store_true",
                        help="also measure the CLI's import time and its slowest imports")
    parser.add_argument("--short", action="store_true",
                        help="the short run CI makes: 1 run, an empty case, no warm-up, a cheap "
                             "test keystore (no timing meaning)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.runs < 1 or args.files < 0:
        parser.error("--runs must be at least 1 and --files at least 0")
    if args.short:
        args.runs, args.files = 1, 0
    figures = run(args.runs, args.files, args.importtime, short=args.short)
    if args.json:
        print(json.dumps(figures))
    else:
        for key, value in figures.items():
            print(f"{key:24} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
