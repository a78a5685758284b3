"""The README's main job: ``bin/demo`` / ``exchange demo`` against a real local server.

Each run starts ``exchange server init`` + ``exchange serve`` subprocesses, so
the tests also check what a user cannot see: no server process outlives the
demo (normal end, failed check, Ctrl-C, SIGTERM, even SIGKILL) and the
temporary directory is gone.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from exchange.crypto.keys import ParticipantIdentity
from tests.support import ROOT, assert_demo_cleaned_up, processes_mentioning

DEMO_TIMEOUT_S = 300
KEYS = ROOT / "exchange" / "demo_keys"


def _env(tmp: Path) -> dict[str, str]:
    """The child's environment: its own TMPDIR, and a decoy database URL it must ignore."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TMPDIR"] = str(tmp)
    env["EXCHANGE_DATABASE_URL"] = "postgresql://nobody@unreachable.invalid/none"
    tmp.mkdir(parents=True, exist_ok=True)
    return env


def test_bin_demo_tells_the_story_keeps_its_world_and_cleans_up(tmp_path: Path) -> None:
    """``bin/demo --keep``, the README's main job: the story's key lines, then the kept world.

    The demo's normal end without ``--keep`` (its temporary directory removed)
    is checked by the packaging test, which runs it from the installed wheel.
    """
    keep, tmp = tmp_path / "kept", tmp_path / "tmp"
    done = subprocess.run([str(ROOT / "bin" / "demo"), "--keep", str(keep)],
                          cwd=ROOT, env=_env(tmp), capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert re.search(r"server running at http://127\.0\.0\.1:\d+ \(embedded SQLite", out)
    assert_demo_cleaned_up(tmp)  # the kept world is in KEEP; nothing is left in TMPDIR
    # Enrolment: four participants, each fingerprint compared and its enrolment logged.
    for pid in ("prosecutor-nl-01", "prosecutor-de-01", "coordinator-01", "auditor-01"):
        assert re.search(rf"{pid} +\w+ +\w\w  fingerprint [A-Z2-7]{{4}}-.*matches, logged as "
                         r"entry #\d+", out), pid
    case_id = re.search(r"case (case-[0-9a-f]+): its key was made on her machine", out)
    assert case_id is not None, out
    assert re.search(r"phone-extraction\.bin: 3\.0 MiB \(3,158,073 bytes\), SHA-256 [0-9a-f]{16}…",
                     out)
    assert "the server's copy is ciphertext only: a standard age file" in out
    assert ("verified: manifest signature, ciphertext sha256, plaintext sha256, age payload "
            "authentication, uploader key from signed statements in the audit log, download "
            "entry carries this client's request signature\n") in out
    assert re.search(r"holds receipts for entries #\d+ \(upload\) and #\d+ \(download\)", out)
    if shutil.which("age"):
        assert "the standard age tool" in out and "decrypts the server's copy" in out
    assert re.search(r"new case key epoch 2 made on the Dutch prosecutor's machine and wrapped "
                     r"only for prosecutor-nl-01 and coordinator-01", out)
    refused = re.findall(r"server answered 403 not-a-member, refusal logged as entry #(\d+)", out)
    assert len(refused) == 2, out
    assert "the server's operational log shows them too" in out
    assert re.search(r"\d+ entries verified: checkpoint signature, Merkle tree", out)
    # The report lists both refusals under their indexes, and the receipt proves the first.
    for index in refused:
        assert re.search(rf"#{index} +\d\d:\d\d:\d\d  prosecutor-de-01 .* REFUSED "
                         r"\(not-a-member\)", out), index
    assert f"entry-{refused[0]}.receipt: proves entry #{refused[0]} is in the log" in out
    assert "the server refused it (outcome denied, reason 'not-a-member')" in out
    # Witnesses: two real witness processes; a split-view attempt refused and proven.
    assert re.search(r"witness\.om\.nl, run by the Dutch .* at http://127\.0\.0\.1:\d+", out)
    assert re.search(r"witness\.gba\.de, run by the German .* at http://127\.0\.0\.1:\d+", out)
    assert "the witnesses cosigned the first history and refused the second" in out
    assert re.search(r"has 0 of the 2 witness cosignatures the policy requires \(missing: "
                     r"witness\.om\.nl, witness\.gba\.de\)", out)
    assert "fork proven, both checkpoints kept as evidence" in out
    assert "15. Done: every check held" in out

    # --keep: the data stays, and the printed offline check works without any server.
    assert (keep / "server" / "server.json").is_file() and (keep / "server" / "log.key").is_file()
    pulled = keep / "clients" / "coordinator-01" / "pulled" / case_id.group(1)
    assert (pulled / "phone-extraction.bin").stat().st_size == 3_158_073
    assert (pulled / "phone-extraction.bin.custody.json").is_file()
    # The restart command keeps the demo's URL (the one every logged request was signed for).
    url = re.search(r"export EXCHANGE_URL=(http://127\.0\.0\.1:(\d+))", out)
    assert url is not None
    assert (f"exchange serve --data-dir {keep / 'server'} --host 127.0.0.1 --port {url.group(2)}"
            in out)
    trust = re.search(r"export EXCHANGE_TRUST=(\S+)", out)
    assert trust is not None and trust.group(1).strip("'") == str(keep / "server" / "trust.json")
    check = re.search(r"exchange audit check (\S+)", out)
    assert check is not None
    # As printed: the trust anchor (it names the log's verifier key) comes from EXCHANGE_TRUST.
    checked = subprocess.run(
        [sys.executable, "-m", "exchange", "audit", "check", check.group(1)],
        env={**_env(tmp_path / "tmp"), "EXCHANGE_TRUST": trust.group(1).strip("'")},
        capture_output=True, text=True, timeout=60, check=False)
    assert checked.returncode == 0, checked.stderr
    assert f"receipt verified: entry {refused[0]} is in the log" in checked.stdout
    # The same with --trust, the flag the "no verifier key" hint names.
    flagged = subprocess.run(
        [sys.executable, "-m", "exchange", "audit", "check", check.group(1),
         "--trust", trust.group(1).strip("'")], env=_env(tmp_path / "tmp"),
        capture_output=True, text=True, timeout=60, check=False)
    assert flagged.returncode == 0, flagged.stderr
    assert f"receipt verified: entry {refused[0]} is in the log" in flagged.stdout
    assert processes_mentioning(str(keep)) == []

    again = subprocess.run([sys.executable, "-m", "exchange", "demo", "--keep", str(keep)],
                           cwd=tmp_path, env=_env(tmp_path / "tmp"), capture_output=True,
                           text=True, timeout=60, check=False)
    assert again.returncode == 2
    assert "is not empty" in again.stderr


def test_swapped_bundle_fails_the_fingerprint_check_and_stops_the_server(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    shutil.copytree(KEYS, keys)
    # The bundle the administrator received is not the one the prosecutor holds the keys of.
    impostor = ParticipantIdentity.generate("prosecutor-de-01").public_bundle()
    (keys / "prosecutor-de-01.bundle.json").write_bytes(impostor.encode())
    tmp = tmp_path / "tmp"
    done = subprocess.run([sys.executable, "-m", "exchange", "demo", "--keys", str(keys)],
                          cwd=tmp_path, env=_env(tmp), capture_output=True, text=True,
                          timeout=DEMO_TIMEOUT_S, check=False)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "demo check failed: prosecutor-de-01: bundle fingerprint differs" in done.stderr
    assert "Done" not in done.stdout
    assert_demo_cleaned_up(tmp)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "sigkill"])
def test_interrupted_demo_leaves_no_server_running(tmp_path: Path, signum: int) -> None:
    tmp = tmp_path / "tmp"
    demo = subprocess.Popen([sys.executable, "-m", "exchange", "demo"], cwd=tmp_path,
                            env=_env(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        # Interrupt as soon as the server runs: while the demo unlocks its keystores.
        deadline = time.monotonic() + 120
        while not any(" serve " in c for c in processes_mentioning(str(tmp))):
            assert demo.poll() is None and time.monotonic() < deadline, "no server started"
            time.sleep(0.05)
        demo.send_signal(signum)  # the demo only: its server must not depend on the group
        code = demo.wait(60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    if signum == signal.SIGKILL:
        # No finally block runs; the server still goes (parent-death signal, Linux).
        deadline = time.monotonic() + 10
        while processes_mentioning(str(tmp)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_mentioning(str(tmp)) == []
        return
    stdout, stderr = demo.communicate()
    assert code == 130, stdout + stderr
    assert "interrupted" in stderr
    assert_demo_cleaned_up(tmp)
