"""Real ``exchange witness serve`` processes and small log builders for the witness tests.

``WitnessProcess`` starts a witness on port 0 (its URL is read from the
``exchange: witness serving on URL`` line) and can be stopped and started
again on the same data directory and port (to test persisted state).
``MemoryLog`` is an in-memory log (pure ``exchange.audit``) signed with a test
key, for driving the witness protocol directly.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.note import Ed25519Signer
from exchange.audit.proof import consistency_proof, hashes_from_leaves
from exchange.audit.tree import MerkleTree, leaf_hash

START_TIMEOUT_S = 30.0


class WitnessProcess:
    """One ``exchange witness serve`` subprocess (stderr collected in :attr:`lines`)."""

    def __init__(self, base: Path, name: str, logs: list[str], *, port: int = 0) -> None:
        self.base = base
        self.name = name
        self.logs = logs
        label = name.replace("/", "_")
        self.key_file = base / f"{label}.key"
        self.data_dir = base / f"{label}-state"
        if not self.key_file.exists():
            done = subprocess.run(
                [sys.executable, "-m", "exchange", "witness", "init", "--name", name,
                 "-o", str(self.key_file)], capture_output=True, text=True, check=True)
            self.vkey = done.stdout.splitlines()[0]
        self.port = port
        self.url = ""
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self) -> None:
        """Start (again) on the same data directory (and port, once one was bound)."""
        argv = [sys.executable, "-m", "exchange", "witness", "serve", "--data-dir",
                str(self.data_dir), "--key", str(self.key_file), "--port", str(self.port)]
        for vkey in self.logs:
            argv += ["--log", vkey]
        env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=env)
        ready = threading.Event()

        def drain(proc: subprocess.Popen[str]) -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                self.lines.append(line)
                if line.startswith("exchange: witness serving on "):
                    self.url = line.split()[-1]
                    ready.set()
            ready.set()

        threading.Thread(target=drain, args=(self.proc,), daemon=True).start()
        if not ready.wait(START_TIMEOUT_S) or self.proc.poll() is not None:
            self.stop()
            raise RuntimeError("witness did not start:\n" + "".join(self.lines[-30:]))
        self.port = int(self.url.rsplit(":", 1)[1])

    def stop(self) -> None:
        """SIGTERM the witness and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def flag(self) -> str:
        """Return this witness as ``exchange serve --witness`` wants it."""
        return f"{self.name}={self.vkey}@{self.url}"

    def policy_entry(self) -> dict[str, str]:
        """Return this witness as a witness-policy JSON entry."""
        return {"name": self.name, "key": self.vkey, "url": self.url}

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """POST ``body`` to add-checkpoint; return (status, content type, body)."""
        return post(self.url + "/add-checkpoint", body)


def post(url: str, body: bytes, method: str = "POST") -> tuple[int, str, bytes]:
    """Send one request; return (status, content type, body) whatever the status."""
    request = urllib.request.Request(url, data=body if method == "POST" else None,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def write_policy(path: Path, witnesses: list[WitnessProcess], quorum: int) -> Path:
    """Write a witness policy file for ``witnesses``."""
    path.write_text(json.dumps({"witnesses": [w.policy_entry() for w in witnesses],
                                "quorum": quorum}))
    return path


@dataclass
class MemoryLog:
    """An in-memory log signed with a fresh test key (origin = key name)."""

    origin: str = "log.test/witnessed"
    signer: Ed25519Signer = field(init=False)
    leaves: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.signer = Ed25519Signer.generate(self.origin)

    @property
    def vkey(self) -> str:
        """The log's verifier key."""
        return self.signer.verifier().vkey()

    def append(self, *entries: bytes) -> None:
        """Append entries (their leaf hashes)."""
        self.leaves.extend(leaf_hash(e) for e in entries)

    def root(self, size: int) -> bytes:
        """Return the root of the first ``size`` leaves."""
        tree = MerkleTree()
        for leaf in self.leaves[:size]:
            tree.append(leaf)
        return tree.root()

    def note(self, size: int, *, root: bytes | None = None) -> bytes:
        """Return the signed checkpoint of size ``size`` (optionally with another root)."""
        checkpoint = Checkpoint(origin=self.origin, size=size,
                                root=self.root(size) if root is None else root)
        return sign_checkpoint(checkpoint, self.signer)

    def proof(self, old: int, new: int) -> list[bytes]:
        """Return the consistency proof from ``old`` to ``new``."""
        if old in (0, new):
            return []
        return consistency_proof(hashes_from_leaves(self.leaves[:new]), old, new)

    def request(self, old: int, new: int, *, proof: list[bytes] | None = None,
                note: bytes | None = None) -> bytes:
        """Return an add-checkpoint body from ``old`` to ``new``."""
        hashes = self.proof(old, new) if proof is None else proof
        lines = [f"old {old}"] + [base64.b64encode(h).decode() for h in hashes]
        return ("\n".join(lines) + "\n\n").encode() + (self.note(new) if note is None else note)
