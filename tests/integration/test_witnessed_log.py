"""A witnessed log with real processes: three witnesses, quorum two, and a split-view attempt.

Processes: three ``exchange witness serve`` (the Dutch, German and Eurojust
witnesses) and ``exchange serve --witness ... --witness-quorum 2``. The tests
run in order on one deployment: cosignatures are collected and enforced by
clients; a witness outage degrades freshness and never correctness; then the
server forks its log as a compromised operator would (it snapshots its data
directory, keeps serving the original, and runs a second instance on the
copy with the same ``log.key``, so index N holds two different entries, both
under checkpoints signed by the log key) and tries to get both branches
cosigned. The witnesses cosign one branch only, a client shown the other
branch refuses it, and ``exchange audit compare`` reports the fork with both
checkpoints as evidence.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from exchange.audit.checkpoint import open_checkpoint
from exchange.audit.receipt import parse_receipt
from exchange.audit.witness_policy import cosignature_status, parse_policy
from exchange.client import create_case, pull, upload_file
from exchange.client.errors import LogForked
from exchange.client.session import Client
from exchange.client.witnessing import WitnessQuorumMissing
from exchange.crypto.keys import ParticipantIdentity
from exchange.storage.sqlite_store import DATABASE_NAME
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER
from exchange.witness.state import DATABASE_NAME as WITNESS_DB
from tests.server_harness import (
    ServerProcess,
    enrol,
    init_server,
    json_of,
    run,
    wait_until,
    write_test_keystore,
)
from tests.statements import load_anchor
from tests.support import run_cli
from tests.witness_harness import WitnessProcess, write_policy

PASSPHRASE = "witnessed-log-test-passphrase"
WITNESS_NAMES = ("witness.om.nl", "witness.gba.de", "witness.eurojust.eu")


@dataclass
class Net:
    """The deployment: witnesses, the server(s), the cast and the policy file."""

    base: Path
    vkey: str
    witnesses: list[WitnessProcess]
    server: ServerProcess
    cast: dict[str, ParticipantIdentity]
    policy_file: Path
    extra: list[ServerProcess] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        """The server's data directory (its trust.json is the participants' anchor)."""
        return self.base / "data"

    def flags(self) -> list[str]:
        out = ["--witness-quorum", "2"]
        for witness in self.witnesses:
            out += ["--witness", witness.flag()]
        return out

    def client(self, name: str, url: str, state: str, *, policy: bool = True) -> Client:
        return Client(self.cast[name], url, anchor=load_anchor(self.data_dir),
                      state_dir=self.base / "clients" / state,
                      witness_policy=parse_policy(self.policy_file.read_bytes())
                      if policy else None)

    def cli(self, url: str, *argv: str, state: str = "auditor") -> tuple[int, str, str]:
        """Run ``exchange ARGV`` in process as the auditor against ``url``."""
        env = {"EXCHANGE_URL": url, "EXCHANGE_KEYSTORE": str(self.base / "auditor.keystore"),
               "EXCHANGE_PASSPHRASE": PASSPHRASE,
               "EXCHANGE_TRUST": str(self.data_dir / "trust.json"),
               "EXCHANGE_STATE_DIR": str(self.base / "cli" / state),
               "XDG_CONFIG_HOME": str(self.base / "config"), "EXCHANGE_WITNESS_WAIT_S": "2",
               "EXCHANGE_TEST_WEAK_KDF": "1"}
        return run_cli(argv, env)


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/health", timeout=10) as response:
        body: dict[str, Any] = json.loads(response.read())
    return body["witnessing"]  # type: ignore[no-any-return]


def fresh(url: str) -> bool:
    state = health(url)
    return bool(state["fresh"])


async def logged_request(url: str, identity: ParticipantIdentity, target: str) -> int:
    """Make one logged request as ``identity``; return its audit index."""
    async with SignedSession(url, identity) as session:
        response = await session.request("GET", f"/v1/participants/{target}")
        await json_of(response)
        assert response.status == 200
        return int(response.headers[AUDIT_INDEX_HEADER])


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    base = tmp_path_factory.mktemp("witnessed")
    admin = ParticipantIdentity.generate("admin")
    vkey = init_server(base / "data", admin)
    witnesses = [WitnessProcess(base, name, [vkey]) for name in WITNESS_NAMES]
    policy_file = write_policy(base / "policy.json", witnesses, 2)
    net = Net(base=base, vkey=vkey, witnesses=witnesses, server=None,  # type: ignore[arg-type]
              cast={"admin": admin}, policy_file=policy_file)
    try:
        net.server = ServerProcess(base / "data", extra_args=net.flags())

        async def enrol_cast() -> None:
            async with SignedSession(net.server.url, admin) as session:
                for name, role in (("prosecutor", "prosecutor"), ("coordinator", "coordinator"),
                                   ("auditor", "auditor")):
                    identity = ParticipantIdentity.generate(name)
                    await enrol(session, identity, role)
                    net.cast[name] = identity

        run(enrol_cast())
        write_test_keystore(base / "auditor.keystore", net.cast["auditor"], PASSPHRASE)
        yield net
    finally:
        for proc in [net.server, *net.extra]:
            if proc is not None:
                proc.stop()
        for witness in witnesses:
            witness.stop()


def test_log_collects_cosignatures_and_clients_require_them(net: Net) -> None:
    wait_until(lambda: fresh(net.server.url), timeout_s=20)
    state = health(net.server.url)
    assert state["quorum"] == 2 and state["witnessed_size"] == state["log_size"]
    assert [w["cosigned_size"] for w in state["witnesses"]] == [state["log_size"]] * 3

    async def scenario() -> None:
        async with net.client("prosecutor", net.server.url, "p1") as client:
            checkpoint = await client.checkpoint()
            note = client.state.read_bytes("checkpoint") or b""
        assert checkpoint.size == state["log_size"]
        policy = parse_policy(net.policy_file.read_bytes())
        valid, invalid = cosignature_status(note, policy.witnesses)
        assert set(valid) == set(WITNESS_NAMES) and not invalid

    run(scenario())

    async def fresh_enrolment() -> None:
        # An entry written a moment ago is not in the witnessed checkpoint yet: the client
        # waits for one that covers it instead of calling the entry unproven.
        newcomer = ParticipantIdentity.generate("newcomer")
        async with SignedSession(net.server.url, net.cast["admin"]) as session:
            await enrol(session, newcomer, "prosecutor")
        async with net.client("prosecutor", net.server.url, "p1") as client:
            verified = await client.participant("newcomer")
        assert verified.logged and verified.bundle.fingerprint == \
            newcomer.public_bundle().fingerprint

    run(fresh_enrolment())
    code, _, err = net.cli(net.server.url, "audit", "verify", "--json",
                             "--witness-policy", str(net.policy_file))
    assert code == 0, err
    _compare_two_consistent_receipts(net)


def _compare_two_consistent_receipts(net: Net) -> None:
    """Receipts of one log at two sizes: undecided without a proof, consistent with one."""
    first, second = net.base / "first.receipt", net.base / "second.receipt"
    policy = ("--witness-policy", str(net.policy_file))
    assert net.cli(net.server.url, "audit", "receipt", "1", "-o", str(first), *policy)[0] == 0
    run(logged_request(net.server.url, net.cast["prosecutor"], "admin"))
    wait_until(lambda: health(net.server.url)["witnessed_size"] >
               open_checkpoint(parse_receipt(first.read_bytes()).checkpoint,
                               net.vkey).checkpoint.size, timeout_s=20)
    assert net.cli(net.server.url, "audit", "receipt", "2", "-o", str(second), *policy)[0] == 0
    code, out, err = net.cli(net.server.url, "audit", "compare", str(first), str(second),
                             "--json")
    assert code == 1 and "fetch it: GET /v1/audit/proof/consistency" in err, err
    needs = json.loads(out)["needs_consistency_proof"]

    async def proof() -> bytes:
        async with SignedSession(net.server.url, net.cast["auditor"]) as session:
            response = await session.request(
                "GET", f"/v1/audit/proof/consistency?old={needs['old']}&new={needs['new']}")
            async with response:
                assert response.status == 200
                return await response.read()

    proof_file = net.base / "proof.json"
    proof_file.write_bytes(run(proof()))
    code, out, err = net.cli(net.server.url, "audit", "compare", str(first), str(second),
                             "--proof", str(proof_file))
    assert code == 0 and "consistent: the tree of size" in out, err


def test_custody_records_carry_cosigned_checkpoints(net: Net) -> None:
    policy = parse_policy(net.policy_file.read_bytes())
    source = net.base / "statement.txt"
    source.write_bytes(b"witness statement, page 1\n")

    async def scenario() -> dict[str, Any]:
        async with net.client("prosecutor", net.server.url, "p1") as client:
            case = await create_case(client, "Operation Witness")
            await upload_file(client, case.case_id, source)
            report = await pull(client, [case.case_id], net.base / "pulled")
        assert not report.failed and len(report.pulled) == 1
        record: dict[str, Any] = json.loads(report.pulled[0].custody_path.read_text())
        return record

    record = run(scenario())
    notes = [record["checkpoint"].encode()] + [
        parse_receipt(record[part]["receipt"].encode()).checkpoint
        for part in ("upload", "download")]
    for note in notes:
        valid, _ = cosignature_status(note, policy.witnesses)
        assert len(valid) >= policy.quorum, note


def _live_witness_caught_up(state: dict[str, Any]) -> bool:
    """True when the third witness (the one left running) has cosigned the log's current size."""
    return bool(state["witnesses"][2]["cosigned_size"] == state["log_size"])


def test_witness_outage_degrades_freshness_not_correctness(net: Net) -> None:
    down = net.witnesses[:2]
    for witness in down:
        witness.stop()
    try:
        before = health(net.server.url)["witnessed_size"]
        index = run(logged_request(net.server.url, net.cast["prosecutor"], "admin"))
        assert index >= before  # the log keeps working
        wait_until(lambda: health(net.server.url)["log_size"] > before, timeout_s=20)
        wait_until(lambda: all(w["last_error"] and "unreachable" in w["last_error"]
                               for w in health(net.server.url)["witnesses"][:2]), timeout_s=20)
        # The witness still up goes on cosigning each new size; it may be one round behind
        # the log when the others' errors show, so wait for it to catch up.
        wait_until(lambda: _live_witness_caught_up(health(net.server.url)), timeout_s=20)
        state = health(net.server.url)
        assert state["fresh"] is False and state["witnessed_size"] == before

        async def scenario() -> int:
            # The served checkpoint is still the newest that met the quorum.
            async with net.client("coordinator", net.server.url, "c1") as client:
                return (await client.checkpoint()).size

        assert run(scenario()) == before
    finally:
        for witness in down:
            witness.start()  # same port and persisted state
    wait_until(lambda: fresh(net.server.url), timeout_s=30)


def _db_checkpoint(data_dir: Path, size: int) -> bytes:
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        row = db.execute("SELECT note FROM audit_checkpoints WHERE size = ?", (size,)).fetchone()
    return bytes(row[0])


def _db_log_size(data_dir: Path) -> int:
    with contextlib.closing(sqlite3.connect(data_dir / DATABASE_NAME)) as db:
        return int(db.execute("SELECT size FROM audit_state").fetchone()[0])


def test_split_view_is_refused(net: Net, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXCHANGE_WITNESS_WAIT_S", "2")
    policy = parse_policy(net.policy_file.read_bytes())
    # Fresh at the log's own size: the health's log_size is the newest checkpoint's, which
    # lags the entries the setup just wrote until the publisher's next round.
    wait_until(lambda: fresh(net.server.url) and
               health(net.server.url)["log_size"] == _db_log_size(net.base / "data"),
               timeout_s=30)
    fork_at = health(net.server.url)["log_size"]

    # The compromised operator snapshots its state and runs a second instance on the copy.
    net.server.stop()
    shutil.copytree(net.base / "data", net.base / "data-b")
    net.server = ServerProcess(net.base / "data", extra_args=net.flags())
    branch_b = ServerProcess(net.base / "data-b", extra_args=net.flags())
    net.extra.append(branch_b)

    # Branch A: entry fork_at is the prosecutor's request; it gets witnessed.
    assert run(logged_request(net.server.url, net.cast["prosecutor"], "admin")) == fork_at
    wait_until(lambda: fresh(net.server.url) and
               health(net.server.url)["witnessed_size"] > fork_at, timeout_s=30)
    async def remember_a() -> None:
        async with net.client("prosecutor", net.server.url, "victim", policy=False) as client:
            await client.checkpoint()

    run(remember_a())
    # Branch B: another entry at the same index, under a checkpoint signed with log.key.
    assert run(logged_request(branch_b.url, net.cast["coordinator"], "admin")) == fork_at
    wait_until(lambda: all(w["last_error"] and "422" in w["last_error"]
                           for w in health(branch_b.url)["witnesses"]), timeout_s=30)
    state_b = health(branch_b.url)
    assert state_b["fresh"] is False and state_b["witnessed_size"] == fork_at

    # The witnesses cosigned branch A only, and stored A's root.
    note_a = _db_checkpoint(net.base / "data", fork_at + 1)
    note_b = _db_checkpoint(net.base / "data-b", fork_at + 1)
    root_a = open_checkpoint(note_a, net.vkey).checkpoint.root
    root_b = open_checkpoint(note_b, net.vkey).checkpoint.root
    assert root_a != root_b
    assert len(cosignature_status(note_a, policy.witnesses)[0]) >= 2
    assert cosignature_status(note_b, policy.witnesses) == ((), ())
    for witness in net.witnesses:
        with contextlib.closing(sqlite3.connect(witness.data_dir / WITNESS_DB)) as db:
            size, root = db.execute("SELECT size, root FROM witness_state").fetchone()
        assert int(size) > fork_at
        assert open_checkpoint(_db_checkpoint(net.base / "data", int(size)),
                               net.vkey).checkpoint.root == bytes(root)

    # The operator gives up on witnesses and shows branch B as it is.
    branch_b.stop()
    shown = ServerProcess(net.base / "data-b")
    net.extra.append(shown)

    async def shown_branch_b() -> None:
        async with net.client("coordinator", shown.url, "fresh-c") as client:
            with pytest.raises(WitnessQuorumMissing, match=r"missing: witness\.om\.nl"):
                await client.checkpoint()
        async with net.client("prosecutor", shown.url, "victim", policy=False) as client:
            with pytest.raises(LogForked):  # even without a policy: it saw branch A before
                await client.checkpoint()

    run(shown_branch_b())
    code, _, err = net.cli(shown.url, "audit", "verify", "--witness-policy",
                           str(net.policy_file), state="auditor-b")
    assert code == 3 and "witness cosignatures the policy requires" in err, err

    # Evidence: a receipt of entry fork_at from each branch; compare proves the fork.
    receipt_a = net.base / "a.receipt"
    receipt_b = net.base / "b.receipt"
    code, _, err = net.cli(net.server.url, "audit", "receipt", str(fork_at), "-o",
                           str(receipt_a), "--witness-policy", str(net.policy_file),
                           state="auditor-a")
    assert code == 0, err
    code, _, err = net.cli(shown.url, "audit", "receipt", str(fork_at), "-o", str(receipt_b),
                           state="auditor-b")
    assert code == 0, err
    code, out, err = net.cli(net.server.url, "audit", "compare", str(receipt_a),
                             str(receipt_b), "--json", "--witness-policy",
                             str(net.policy_file))
    assert code == 3, err
    report = json.loads(out)
    assert report["verdict"] == "fork"
    assert f"index {fork_at}" in report["reason"] or "different root" in report["reason"]
    assert len(report["a"]["cosigned_by"]) >= 2 and report["b"]["cosigned_by"] == []
    for side in ("a", "b"):
        open_checkpoint(report[side]["note"].encode(), net.vkey)  # evidence signed by log.key
    code, out, _ = net.cli(net.server.url, "audit", "check", str(receipt_b),
                           "--witness-policy", str(net.policy_file))
    assert code == 3
