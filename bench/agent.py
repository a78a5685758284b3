"""Peak memory of ``exchange case list`` unlocking the keystore itself vs through the agent.

Usage: .venv/bin/python bench/agent.py [--json]

One ``exchange serve`` (embedded SQLite, temporary data dir) and a
prosecutor whose keystore uses the default Argon2id parameters (256 MiB),
as a real one does. ``exchange case list`` runs twice as a subprocess: once
unlocking the keystore (passphrase from the environment), once with
``exchange agent`` holding the identity (no passphrase given at all). The
figure is each run's peak RSS (``ru_maxrss`` from ``wait4`` in a small launcher
process), which does not
depend on how loaded the machine is; times are printed too but only mean
something on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from measure import launch  # bench/ is on sys.path

from exchange.crypto.keys import ParticipantIdentity

PASSPHRASE = "bench passphrase, not secret"
_RESEAL = """
import sys
from pathlib import Path
from exchange.crypto.keystore import open_keystore, seal_keystore
from exchange.keyfiles import write_keystore
identity = open_keystore(Path(sys.argv[1]).read_bytes(), sys.argv[3])
write_keystore(Path(sys.argv[2]), seal_keystore(identity, sys.argv[3]))
"""


def write_real_keystore(path: Path, identity: ParticipantIdentity, work: Path) -> None:
    """Write ``identity`` to ``path`` sealed with the default Argon2id parameters (256 MiB).

    The sealing runs in a child: a child's peak RSS counts its parent's resident
    memory at fork, so the benchmark process must stay small.
    """
    from tests.server_harness import write_test_keystore  # noqa: PLC0415 - after sys.path

    cheap = work / f"{path.name}.cheap"
    write_test_keystore(cheap, identity, PASSPHRASE)
    subprocess.run([sys.executable, "-c", _RESEAL, str(cheap), str(path), PASSPHRASE],
                   check=True)


def _measure(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Run ``argv``; return (wall seconds, peak RSS in MiB); fail if it fails."""
    done = launch(argv, env=env)
    return done.wall_s, done.peak_rss_mib


def run() -> dict[str, Any]:
    """Return the peak RSS and time of ``case list`` without and with the agent."""
    from tests.server_harness import deployed  # noqa: PLC0415

    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="xbench-agent-") as tmp:
        base = Path(tmp)
        with deployed(base, "sqlite") as deployment:
            keystore = base / "prosecutor.keystore"
            write_real_keystore(keystore, deployment.cast["prosecutor"], base)
            env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
            env.update(EXCHANGE_URL=deployment.url, EXCHANGE_KEYSTORE=str(keystore),
                       EXCHANGE_TRUST=str(deployment.trust_file),
                       EXCHANGE_STATE_DIR=str(base / "state"),
                       EXCHANGE_AGENT_SOCK=str(base / "agent" / "sock"))
            listing = [py, "-m", "exchange", "case", "list"]
            keystore_s, keystore_mib = _measure(listing, {**env, "EXCHANGE_PASSPHRASE": PASSPHRASE})
            _measure([py, "-m", "exchange", "agent", "start"],
                     {**env, "EXCHANGE_PASSPHRASE": PASSPHRASE})
            try:
                agent_s, agent_mib = _measure(listing, env)
            finally:
                subprocess.run([py, "-m", "exchange", "agent", "stop"], env=env,
                               capture_output=True, check=False)
    return {"keystore_peak_rss_mib": round(keystore_mib, 1),
            "agent_peak_rss_mib": round(agent_mib, 1),
            "keystore_s": round(keystore_s, 2), "agent_s": round(agent_s, 2)}


def main() -> int:
    """Print the figures (or one JSON object with --json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    figures = run()
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"exchange case list, keystore unlocked: peak RSS "
              f"{figures['keystore_peak_rss_mib']} MiB, {figures['keystore_s']} s")
        print(f"exchange case list, through the agent: peak RSS "
              f"{figures['agent_peak_rss_mib']} MiB, {figures['agent_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
