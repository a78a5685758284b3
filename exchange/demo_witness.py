"""The demo's witness chapter: two prosecution services witness the log; a split view fails.

Theory of operation. The Dutch and the German prosecution services each run
``exchange witness serve`` (real processes). The demo server restarts with
both as witnesses (quorum 2) and its checkpoints get cosigned. Then the
server plays a compromised operator: it snapshots its data directory and
runs a second instance on the copy with the same log key, so the two
instances log different entries at the same index. The witnesses cosign the
first history and refuse the second (HTTP 422); a participant shown the
second history refuses it for lack of cosignatures; and the two views,
compared offline, prove the fork. Every claim printed is checked first.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from exchange.audit.fork import Verdict
from exchange.client import Client
from exchange.client.audit import ClientLogFetcher
from exchange.client.audit_compare import compare_files
from exchange.client.audit_receipt import fetch_receipt
from exchange.client.witnessing import WAIT_ENV, WitnessQuorumMissing, load_witness_policy
from exchange.crypto.anchor import TrustAnchor, parse_anchor
from exchange.crypto.keys import ParticipantIdentity
from exchange.demo_server import START_TIMEOUT_S, LocalServer, child_environment

if TYPE_CHECKING:
    from exchange.demo import _Story

__all__ = ["WITNESSES", "LocalWitness", "split_view_chapter"]

#: (key name, who runs it): the partners of the joint investigation.
WITNESSES = (("witness.om.nl", "the Dutch Openbaar Ministerie"),
             ("witness.gba.de", "the German Generalbundesanwalt"))
_WAIT_S = 30.0
#: The demo's client gives up on missing cosignatures sooner than a real one.
_CLIENT_WAIT_S = 4


class LocalWitness(LocalServer):
    """One ``exchange witness serve`` process on 127.0.0.1 (any free port)."""

    ready_prefix = "exchange: witness serving on "

    def __init__(self, base: Path, name: str) -> None:
        super().__init__(base / name, origin="", admin_bundle=Path())
        self.name = name
        self.key_file = base / f"{name}.key"
        self.vkey = ""

    def create(self) -> None:
        """Run ``exchange witness init``: the cosigner key and its verifier key."""
        done = subprocess.run(self._argv("witness", "init", "--name", self.name, "-o",
                                         str(self.key_file)),
                              capture_output=True, text=True, env=child_environment(),
                              timeout=START_TIMEOUT_S, check=True, stdin=subprocess.DEVNULL)
        self.vkey = done.stdout.splitlines()[0]

    def serve(self, log_key: str) -> None:
        """Start witnessing the log of ``log_key`` (returns at once; see ``wait_ready``)."""
        self.spawn(self._argv("witness", "serve", "--data-dir", str(self.data_dir), "--key",
                              str(self.key_file), "--log", log_key, "--port", "0"))


def _health(url: str) -> dict[str, Any]:
    # The URL is our own child process's on 127.0.0.1 (http), never user input.
    with urllib.request.urlopen(url + "/v1/health", timeout=10) as response:  # noqa: S310
        body: dict[str, Any] = json.loads(response.read())
    witnessing: dict[str, Any] = body.get("witnessing") or {}
    return witnessing


def _wait(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + _WAIT_S
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def split_view_chapter(story: _Story, server: LocalServer, people: dict[str, ParticipantIdentity],
                       *, nl: str, de: str, auditor: str) -> None:
    """Tell the witness chapter (see the module docstring); ``server`` is left running."""
    base = story.result.base / "witnesses"
    base.mkdir()
    log_key = story.result.log_key
    witnesses = [LocalWitness(base, name) for name, _ in WITNESSES]
    copy: LocalServer | None = None
    try:
        story.step("The Dutch and German prosecution services each run a witness")
        for witness, (_, who) in zip(witnesses, WITNESSES, strict=True):
            witness.create()
            witness.serve(log_key)
            witness.wait_ready()
            story.fact(f"{witness.name}, run by {who}, at {witness.url}")
        flags = ["--witness-quorum", "2"]
        for witness in witnesses:
            flags += ["--witness", f"{witness.name}={witness.vkey}@{witness.url}"]
        policy_file = base / "witness-policy.json"
        policy_file.write_text(json.dumps({"witnesses": [
            {"name": w.name, "key": w.vkey, "url": w.url} for w in witnesses], "quorum": 2}))
        # Restart on the same port: the public URL is in every signed request, and the
        # verifier expects one URL for the whole log.
        port = urlsplit(server.url).port or 0
        server.stop()
        server.start(*flags, port=port)
        url = server.wait_ready()
        story.check(_wait(lambda: bool(_health(url).get("fresh"))),
                    "the witnesses did not cosign the server's checkpoint")
        size = _health(url)["witnessed_size"]
        story.fact(f"the server now publishes checkpoints only with both cosignatures "
                   f"(tree size {size} cosigned); participants pin the witness policy "
                   f"{policy_file.name}")

        story.step("A compromised server tries to show two different histories")
        port = urlsplit(server.url).port or 0
        server.stop()
        copy = LocalServer(base / "server-copy", origin="", admin_bundle=Path())
        shutil.copytree(server.data_dir, copy.data_dir)
        server.start(*flags, port=port)
        copy.start(*flags)
        url, copy_url = server.wait_ready(), copy.wait_ready()
        index = asyncio.run(_lookup(story, url, people[nl], de, "a"))
        story.check(_wait(lambda: _health(url)["witnessed_size"] > index),
                    "the first history was not cosigned")
        index_b = asyncio.run(_lookup(story, copy_url, people[de], nl, "b"))
        story.check(index == index_b, "the two copies did not write the same index")
        story.fact(f"entry #{index} differs between the two copies, both signed with the "
                   "server's own log key")
        story.check(_wait(lambda: all("422" in (w["last_error"] or "")
                                      for w in _health(copy_url)["witnesses"])),
                    "the witnesses did not refuse the second history")
        story.fact("the witnesses cosigned the first history and refused the second "
                   "(422: not consistent with what they cosigned)")

        story.step("A participant shown the second history refuses it; the fork is proven")
        copy.stop()
        copy.start()  # the operator gives up on witnesses and shows the second history
        copy_url = copy.wait_ready()
        policy = load_witness_policy(policy_file)
        refusal, verdict = asyncio.run(_refused_and_proven(
            story, url, copy_url, people, index=index, policy_file=policy_file, de=de,
            auditor=auditor))
        story.check(policy is not None and "missing" in refusal,
                    "the participant accepted a checkpoint without witnesses")
        story.fact(f"{de}'s client: {refusal}")
        story.check(verdict == Verdict.FORK, f"the views were judged {verdict.value}")
        story.fact(f"the auditor compares receipts of entry #{index} from both: fork proven, "
                   "both checkpoints kept as evidence")
    finally:
        if copy is not None:
            copy.stop()
        for witness in witnesses:
            witness.stop()


def _anchor(story: _Story) -> TrustAnchor:
    """The trust anchor the participants pinned (the server's trust.json)."""
    return parse_anchor((story.result.data_dir / "trust.json").read_bytes())


async def _lookup(story: _Story, url: str, identity: ParticipantIdentity, target: str,
                  state: str) -> int:
    """Make one logged request (a participant lookup); return its audit index."""
    async with Client(identity, url, anchor=_anchor(story),
                      state_dir=story.result.base / "witnesses" / "clients" / state) as client:
        reply = await client.call("GET", f"/v1/participants/{target}", doing="looking up")
    if reply.audit_index is None:
        raise AssertionError("internal error: a lookup was not logged")
    return reply.audit_index


async def _refused_and_proven(story: _Story, url: str, copy_url: str,
                              people: dict[str, ParticipantIdentity], *, index: int,
                              policy_file: Path, de: str,
                              auditor: str) -> tuple[str, Verdict]:
    log_key = story.result.log_key
    base = story.result.base / "witnesses" / "clients"
    policy = load_witness_policy(policy_file)
    refusal = ""
    story.fact(f"{de}'s client waits up to {_CLIENT_WAIT_S} s for the cosignatures "
               "(20 s outside the demo)")
    saved = os.environ.get(WAIT_ENV)
    os.environ[WAIT_ENV] = str(_CLIENT_WAIT_S)
    try:
        async with Client(people[de], copy_url, anchor=_anchor(story), state_dir=base / "de",
                          witness_policy=policy) as client:
            await client.checkpoint()
    except WitnessQuorumMissing as err:
        refusal = str(err)
    finally:
        if saved is None:
            os.environ.pop(WAIT_ENV, None)
        else:
            os.environ[WAIT_ENV] = saved
    receipts = []
    for where, state in ((url, "auditor-a"), (copy_url, "auditor-b")):
        async with Client(people[auditor], where, anchor=_anchor(story),
                          state_dir=base / state) as client:
            data, _ = await fetch_receipt(ClientLogFetcher(client), index, log_key)
            receipts.append(data)
    compared = compare_files(receipts[0], receipts[1], log_key, policy=policy)
    return refusal, compared.comparison.verdict
