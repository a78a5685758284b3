"""The server's operator attacks the trust model (issue 10), and the clients refuse.

Every test here plays a fully compromised operator for real: a running
``exchange serve`` whose SQLite database, blobs and ``log.key`` the test
edits between client commands (stopping and restarting the server on the same
URL when it rewrites the log, as an operator can), and the real CLI as the
victim. Each asserts that the victim refused — exit code 3 — before any
plaintext or case key left it (no upload session created, nothing written to
the destination), or, for an attack only the log can reveal, that
``exchange audit verify`` names the entry.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from exchange.audit.entry import AuditEntry, RequestEvidence
from exchange.crypto.envelope import CaseKey, wrap_envelope
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    Statement,
    case_chain,
    issued_at,
    make_signature,
    parse_signed_statement,
)
from exchange.storage._statementtx import StoredStatement
from exchange.storage.sqlite_store import DATABASE_NAME
from tests.e2e.conftest import PASSPHRASE, Background, World
from tests.server_harness import (
    CAST,
    Deployment,
    ServerProcess,
    enrol,
    init_server,
    run,
    write_test_keystore,
)

VERIFICATION_FAILED = 3


class LyingProxy:
    """The server process as the operator rewrote it: answers pass through, except lies.

    Runs in a thread on its own event loop in front of the real server (whose
    public URL is the proxy's, so request signatures still verify). With
    ``commit_index`` set, every commit answer names that audit entry instead.
    """

    def __init__(self) -> None:
        self.port = 0  # the port it listens on, chosen by the system when it starts
        self.upstream = ""  # the real server's URL, set once that server listens
        self.commit_index: int | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in (
            "host", "content-length", "transfer-encoding")}
        async with self._session.request(request.method, self.upstream + request.path_qs,
                                         headers=headers, data=body or None,
                                         allow_redirects=False,
                                         skip_auto_headers=() if "Content-Type" in headers
                                         else ("Content-Type",)) as upstream:
            # The body is passed on as received (compressed or not): its encoding too.
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in (
                "content-length", "transfer-encoding", "date", "server")}
            if upstream.headers.get("Content-Type", "").startswith("text/event-stream"):
                stream = web.StreamResponse(status=upstream.status, headers=out)
                await stream.prepare(request)
                with contextlib.suppress(ConnectionError, aiohttp.ClientError):
                    async for chunk in upstream.content.iter_any():  # a live feed, as it comes
                        await stream.write(chunk)
                return stream
            data = await upstream.read()
            if (self.commit_index is not None and request.path.endswith("/commit")
                    and upstream.status == 201):
                record = json.loads(data)
                record["audit_index"] = self.commit_index
                data = json.dumps(record).encode()
                out["Exchange-Audit-Index"] = str(self.commit_index)
            return web.Response(status=upstream.status, body=data, headers=out)

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()
            await self._session.close()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@dataclass
class Operator:
    """The compromised operator: a server it can stop, edit and restart on the same URL."""

    world: World
    proxy: LyingProxy

    @property
    def deployment(self) -> Deployment:
        return self.world.deployment

    @property
    def db_path(self) -> Path:
        return self.deployment.data_dir / DATABASE_NAME

    def sql(self, query: str, *args: object) -> list[tuple[object, ...]]:
        """Run SQL on the live database, as the operator can at any time."""
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=30)) as db, db:
            return list(db.execute(query, args))

    @contextlib.contextmanager
    def offline(self) -> Iterator[None]:
        """Stop the server while its log is rewritten, then start it again (same URL)."""
        self.deployment.processes[0].stop()
        try:
            yield
        finally:
            self.deployment.processes[0] = _serve(self.deployment.data_dir, self.proxy)

    def forge(self, signed: SignedStatement, *, actor: str, case: str | None = None,
              obj: str | None = None, chain: str | None = None, seq: int | None = None) -> int:
        """Append ``signed`` to the log as an ok entry signed with log.key; return its index.

        ``chain``/``seq`` file it elsewhere than it says (a replayed statement).
        """
        data = signed.encode()
        chain = chain or signed.statement.chain
        seq = signed.statement.seq if seq is None else seq
        details = {"statement": base64.b64encode(data).decode(), "statement_hash": signed.hash,
                   "chain": chain, "seq": seq}

        async def append() -> int:
            store = await self.deployment.open_store()
            try:
                async with store.transaction("operator") as tx:
                    appended = await tx.append_audit(lambda index, prev, time: AuditEntry(
                        index=index, time=time, actor=actor, actor_key="",
                        action=signed.statement.type, case=case, object=obj, outcome="ok",
                        reason=None, request=None, details=details, prev=prev))
                    await tx.add_statement(StoredStatement(
                        chain=chain, seq=seq, hash=signed.hash, statement=data,
                        audit_index=appended.index))
                await store.publish_checkpoint()
                return appended.index
            finally:
                await store.close()

        with self.offline():
            return run(append())

    def chain(self, chain: str) -> list[SignedStatement]:
        rows = self.sql("SELECT statement FROM statements WHERE chain = ? ORDER BY seq", chain)
        return [parse_signed_statement(str(r[0]).encode()) for r in rows]

    def next_statement(self, chain: str, *, kind: str, issuer: str,
                       body: dict[str, object]) -> Statement:
        existing = self.chain(chain)
        return Statement(type=kind, chain=chain, seq=len(existing),
                         prev=existing[-1].hash if existing else None, issuer=issuer,
                         issued_at=issued_at(0), origin=self.deployment.anchor.origin,
                         body=body)


def _serve(data_dir: Path, proxy: LyingProxy) -> ServerProcess:
    """Start the server behind ``proxy`` (its public URL) on a port the system picks.

    A port chosen beforehand could be taken by another test before the server
    binds it; the proxy learns the port once the server listens.
    """
    process = ServerProcess(data_dir, extra_args=["--public-url", f"http://127.0.0.1:{proxy.port}"])
    proxy.upstream = process.url.rstrip("/")
    return process


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[Operator]:
    data_dir = tmp_path / "data"
    admin = ParticipantIdentity.generate("admin")
    log_vkey = init_server(data_dir, admin)
    proxy = LyingProxy()
    proc = _serve(data_dir, proxy)
    public = f"http://127.0.0.1:{proxy.port}"
    deployment = Deployment(backend="sqlite", data_dir=data_dir, database_url=None,
                            log_vkey=log_vkey, processes=[proc], cast={"admin": admin},
                            public_url=public)
    try:
        async def enrol_cast() -> None:
            async with deployment.session("admin") as session:
                for name, role in CAST.items():
                    identity = ParticipantIdentity.generate(name)
                    await enrol(session, identity, role)
                    deployment.cast[name] = identity

        run(enrol_cast())
        keys = tmp_path / "keys"
        keys.mkdir()
        for name, identity in deployment.cast.items():
            write_test_keystore(keys / f"{name}.keystore", identity, PASSPHRASE)
        yield Operator(ProxiedWorld(deployment=deployment, base=tmp_path), proxy)
    finally:
        deployment.stop()
        proxy.close()


class ProxiedWorld(World):
    """The CLI talks to the operator's (lying) server process, i.e. the proxy."""

    def env(self, name: str) -> dict[str, str]:
        env = super().env(name)
        env["EXCHANGE_URL"] = self.deployment.public_url or self.deployment.url
        return env


def new_case(op: Operator, *members: str) -> str:
    world = op.world
    case_id = world.cli("prosecutor", "case", "create", "--title", "Operation Lantern").stdout
    case_id = case_id.strip()
    for member in members:
        world.cli("prosecutor", "case", "add-member", case_id, member)
    return case_id


def refused(done: object, *words: str) -> None:
    code = getattr(done, "returncode", None)
    err = getattr(done, "stderr", "")
    assert code == VERIFICATION_FAILED, f"exit {code}\n{err}"
    for word in words:
        assert word in err, err


def uploads_and_blobs(op: Operator) -> tuple[int, int]:
    uploads = int(op.sql("SELECT count(*) FROM upload_sessions")[0][0])
    blobs = sum(len(files) for _, _, files in os.walk(op.deployment.data_dir / "blobs"))
    return uploads, blobs


def operator_envelope(op: Operator, case_id: str, epoch: int, member: str) -> CaseKey:
    """Replace ``member``'s envelope of ``epoch`` by one of a key the operator made."""
    chosen = CaseKey.generate(case_id, epoch)
    bundle = op.deployment.cast[member].public_bundle()
    op.sql("UPDATE envelopes SET data = ? WHERE case_id = ? AND epoch = ? AND participant_id = ?",
           wrap_envelope(chosen, bundle.recipient()), case_id, epoch, member)
    return chosen


# -- 1. envelope substitution -------------------------------------------------------------


def test_envelope_substitution_stops_the_uploader_before_any_byte(operator: Operator,
                                                                  tmp_path: Path) -> None:
    op = operator
    case_id = new_case(op, "coordinator")
    operator_envelope(op, case_id, 1, "prosecutor")  # the operator would then read uploads
    evidence = tmp_path / "seizure.img"
    evidence.write_bytes(os.urandom(300_000))
    before = uploads_and_blobs(op)
    done = op.world.cli("prosecutor", "upload", case_id, str(evidence), check=False)
    refused(done, "envelope substitution")
    assert uploads_and_blobs(op) == before  # no upload session, no ciphertext, no manifest


def test_envelope_substitution_stops_the_puller_before_anything_is_written(
        operator: Operator, tmp_path: Path) -> None:
    op = operator
    case_id = new_case(op, "coordinator")
    evidence = tmp_path / "phone.bin"
    evidence.write_bytes(os.urandom(100_000))
    op.world.cli("prosecutor", "upload", case_id, str(evidence))
    operator_envelope(op, case_id, 1, "coordinator")
    dest = tmp_path / "dest"
    done = op.world.cli("coordinator", "pull", case_id, "--dest", str(dest), check=False)
    refused(done)
    assert not any(p.is_file() and p.name.startswith("phone") for p in dest.rglob("*"))


def test_an_older_epochs_envelope_for_the_right_recipient_is_refused(operator: Operator,
                                                                    tmp_path: Path) -> None:
    op = operator
    case_id = new_case(op, "coordinator", "prosecutor2")
    op.world.cli("prosecutor", "case", "remove-member", case_id, "coordinator")
    older = op.sql("SELECT data FROM envelopes WHERE case_id = ? AND epoch = 1 AND "
                   "participant_id = 'prosecutor2'", case_id)[0][0]
    op.sql("UPDATE envelopes SET data = ? WHERE case_id = ? AND epoch = 2 AND "
           "participant_id = 'prosecutor2'", older, case_id)
    evidence = tmp_path / "later.bin"
    evidence.write_bytes(b"after the removal" * 1000)
    before = uploads_and_blobs(op)
    refused(op.world.cli("prosecutor2", "upload", case_id, str(evidence), check=False))
    assert uploads_and_blobs(op) == before


# -- 2. participant key substitution -------------------------------------------------------


def _key_change(op: Operator, target: str, new: ParticipantIdentity, *,
                signer: str, signer_key: object) -> SignedStatement:
    stmt = op.next_statement(DIRECTORY_CHAIN, kind="participant.key_change", issuer=signer,
                             body={"participant": new.public_bundle().to_json_obj(),
                                   "possession": base64.b64encode(
                                       new.possession_proof()).decode(),
                                   "reason": "laptop replaced"})
    return SignedStatement(stmt, (make_signature(stmt, signer_key, signer),))  # type: ignore[arg-type]


def test_forged_key_change_in_the_log_is_refused_before_wrapping(operator: Operator) -> None:
    op = operator
    case_id = new_case(op)
    thief = ParticipantIdentity.generate("coordinator2")  # the operator's keys, same id
    forger = ParticipantIdentity.generate("admin")  # claims to be the administrator
    index = op.forge(_key_change(op, "coordinator2", thief, signer="admin",
                                 signer_key=forger.signing_key), actor="admin",
                     obj="coordinator2")
    op.sql("UPDATE participants SET signing_key = ?, age_recipient = ?, fingerprint = ? "
           "WHERE id = 'coordinator2'", thief.public_bundle().signing_key,
           thief.public_bundle().age_recipient, thief.public_bundle().fingerprint)
    done = op.world.cli("prosecutor", "case", "add-member", case_id, "coordinator2",
                        check=False)
    refused(done, f"entry {index}")
    members = op.sql("SELECT participant_id FROM memberships WHERE case_id = ?", case_id)
    assert ("coordinator2",) not in members  # nothing was wrapped for the operator


def test_colluding_auditor_cannot_change_a_members_keys(operator: Operator) -> None:
    op = operator
    case_id = new_case(op, "coordinator")
    thief = ParticipantIdentity.generate("coordinator")
    auditor = op.deployment.cast["auditor"]
    op.forge(_key_change(op, "coordinator", thief, signer="auditor",
                         signer_key=auditor.signing_key), actor="auditor", obj="coordinator")
    done = op.world.cli("prosecutor", "case", "rekey", case_id, check=False)
    refused(done, "not-admin")
    assert op.sql("SELECT max(epoch) FROM key_epochs WHERE case_id = ?", case_id) == [(1,)]


def test_key_change_signed_by_the_admin_without_the_new_keys_proof_is_refused(
        operator: Operator) -> None:
    op = operator
    case_id = new_case(op)
    thief = ParticipantIdentity.generate("coordinator2")
    honest = op.deployment.cast["coordinator2"]
    stmt = op.next_statement(DIRECTORY_CHAIN, kind="participant.key_change", issuer="admin",
                             body={"participant": thief.public_bundle().to_json_obj(),
                                   "possession": base64.b64encode(
                                       honest.possession_proof()).decode(),
                                   "reason": "x"})
    admin_key = op.deployment.cast["admin"].signing_key  # even the real admin's signature
    op.forge(SignedStatement(stmt, (make_signature(stmt, admin_key, "admin"),)),
             actor="admin", obj="coordinator2")
    refused(op.world.cli("prosecutor", "case", "add-member", case_id, "coordinator2",
                         check=False), "no-possession")


# -- 3. fictitious members, replayed statements --------------------------------------------


def test_a_fictitious_member_in_the_servers_list_is_not_a_member(operator: Operator) -> None:
    op = operator
    case_id = new_case(op, "coordinator")
    op.sql("INSERT INTO memberships (case_id, participant_id, role, added_at) "
           "VALUES (?, 'coordinator2', 'coordinator', 0)", case_id)
    shown = json.loads(op.world.cli("prosecutor", "case", "show", case_id, "--json").stdout)
    assert {m["participant"] for m in shown["members"]} == {"prosecutor", "coordinator"}
    # and a rotation wraps only for the members the statements name
    op.world.cli("prosecutor", "case", "rekey", case_id)
    wrapped = op.sql("SELECT participant_id FROM envelopes WHERE case_id = ? AND epoch = 2",
                     case_id)
    assert sorted(r[0] for r in wrapped) == ["coordinator", "prosecutor"]


def test_a_forged_membership_event_pulls_nothing(operator: Operator, tmp_path: Path) -> None:
    """The operator tells a ``pull --all --watch`` it was added to a case (an entry and a
    membership row, no statement): the watch checks the case's chain and pulls nothing."""
    op = operator
    case_id = new_case(op)
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"not for coordinator2" * 100)
    op.world.cli("prosecutor", "upload", case_id, str(secret))
    dest = tmp_path / "dest"
    watcher = Background(op.world.popen("coordinator2", "pull", "--all", "--dest", str(dest),
                                        "--watch"))
    try:
        assert watcher.wait_for("watching for cases shared", 60), watcher.text
        op.sql("INSERT INTO memberships (case_id, participant_id, role, added_at) "
               "VALUES (?, 'coordinator2', 'coordinator', 0)", case_id)

        async def append() -> None:
            store = await op.deployment.open_store()
            try:
                async with store.transaction("operator") as tx:
                    await tx.append_audit(lambda index, prev, time: AuditEntry(
                        index=index, time=time, actor="prosecutor", actor_key="",
                        action="case.member_add", case=case_id, object="coordinator2",
                        outcome="ok", reason=None, request=None, details={}, prev=prev))
                await store.publish_checkpoint()
            finally:
                await store.close()

        with op.offline():
            run(append())
        # The feed reconnects, then the check refuses; the watch goes on.
        assert watcher.wait_for("no verified statement makes you a member", 60), watcher.text
        assert watcher.process.poll() is None, watcher.text
    finally:
        watcher.stop(signal.SIGTERM)
    assert not (dest / case_id).exists(), list(dest.rglob("*"))
    assert f"case {case_id} was shared with you" not in watcher.text


def test_a_statement_replayed_from_another_case_is_refused(operator: Operator) -> None:
    op = operator
    first = new_case(op, "coordinator")
    second = new_case(op)
    add = op.chain(case_chain(first))[1]  # 'coordinator joins' in the first case
    replay = op.next_statement(case_chain(second), kind=add.statement.type,
                               issuer=add.statement.issuer, body=dict(add.statement.body))
    # The replay keeps the original signatures: they do not cover the new chain.
    with pytest.raises(Exception, match="does not verify"):
        SignedStatement(replay, add.signatures)
    # The operator can still log the original statement, verbatim, in the other chain.
    op.forge(add, actor="prosecutor", case=second, chain=case_chain(second), seq=1)
    done = op.world.cli("prosecutor", "case", "show", second, check=False)
    refused(done, f"case:{first}")


# -- 4. epoch rollback ---------------------------------------------------------------------


def test_hiding_a_newer_epoch_from_a_client_that_saw_it_is_refused(operator: Operator,
                                                                  tmp_path: Path) -> None:
    op = operator
    case_id = new_case(op, "coordinator", "prosecutor2")
    op.world.cli("prosecutor", "case", "remove-member", case_id, "coordinator")
    op.world.cli("prosecutor2", "case", "show", case_id)  # prosecutor2 sees epoch 2
    # The operator hides epoch 2 and its statement, and restores coordinator's membership.
    op.sql("DELETE FROM statements WHERE chain = ? AND seq = 3", case_chain(case_id))
    op.sql("DELETE FROM envelopes WHERE case_id = ? AND epoch = 2", case_id)
    op.sql("DELETE FROM key_epochs WHERE case_id = ? AND epoch = 2", case_id)
    op.sql("UPDATE memberships SET removed_at = NULL WHERE case_id = ? AND "
           "participant_id = 'coordinator'", case_id)
    evidence = tmp_path / "secret.bin"
    evidence.write_bytes(b"only for the remaining members" * 100)
    before = uploads_and_blobs(op)
    done = op.world.cli("prosecutor2", "upload", case_id, str(evidence), check=False)
    assert done.returncode != 0, done.stderr
    assert uploads_and_blobs(op) == before  # never encrypted to the old epoch


# -- 5. receipts bound to the client's own access --------------------------------------


def test_a_commit_answer_naming_another_entry_is_reported(operator: Operator,
                                                         tmp_path: Path) -> None:
    """The operator's server answers a commit with the index of another entry of ours."""
    op = operator
    case_id = new_case(op)
    other = int(op.sql("SELECT max(audit_index) FROM statements")[0][0])  # our case.create
    op.proxy.commit_index = other
    evidence = tmp_path / "a.bin"
    evidence.write_bytes(b"a" * 10_000)
    done = op.world.cli("prosecutor", "upload", case_id, str(evidence), check=False)
    refused(done, f"audit entry {other}", "another request signature")




# -- 6. what only the log can reveal: the verifier names the entry --------------------------


def _verify(op: Operator, tmp_path: Path) -> object:
    return op.world.cli("auditor", "audit", "verify", "--state", str(tmp_path / "mirror"),
                        check=False)


def test_an_upload_on_a_hidden_epoch_is_named_by_the_verifier(operator: Operator,
                                                             tmp_path: Path) -> None:
    op = operator
    case_id = new_case(op, "coordinator", "prosecutor2")
    op.world.cli("prosecutor2", "case", "show", case_id)
    op.world.cli("prosecutor", "case", "remove-member", case_id, "coordinator")
    # prosecutor2 never saw epoch 2: the operator hides it from the listing and the tables
    # (it stays in the log, which the operator cannot rewrite unseen).
    op.sql("DELETE FROM statements WHERE chain = ? AND seq = 3", case_chain(case_id))
    op.sql("DELETE FROM envelopes WHERE case_id = ? AND epoch = 2", case_id)
    op.sql("DELETE FROM key_epochs WHERE case_id = ? AND epoch = 2", case_id)
    evidence = tmp_path / "late.bin"
    evidence.write_bytes(b"readable by the removed member" * 100)
    op.world.cli("prosecutor2", "upload", case_id, str(evidence))
    commit = int(op.sql("SELECT max(audit_index) FROM evidence")[0][0])
    done = _verify(op, tmp_path)
    assert done.returncode == VERIFICATION_FAILED, done.stderr  # type: ignore[attr-defined]
    assert f"{commit}" in done.stdout + done.stderr  # type: ignore[attr-defined]


def test_a_forged_refusal_is_named_by_the_verifier(operator: Operator, tmp_path: Path) -> None:
    """The operator logs "prosecutor tried to download and was refused" with a fake signature."""
    op = operator
    new_case(op)

    async def append() -> int:
        store = await op.deployment.open_store()
        try:
            async with store.transaction("operator") as tx:
                last = (await store.audit_entries(0, await store.tree_size()))[-1]
                request = json.loads(last.entry)["request"]
                fake = dict(request)
                fake["signature"] = "sig1=:" + base64.b64encode(os.urandom(64)).decode() + ":"
                appended = await tx.append_audit(lambda index, prev, time: AuditEntry(
                    index=index, time=time, actor="prosecutor", actor_key="",
                    action="evidence.download", case=None, object="ev-" + "0" * 24,
                    outcome="denied", reason="forbidden",
                    request=RequestEvidence(
                        signature_input=fake["signature_input"], signature=fake["signature"],
                        covered=tuple((a, b) for a, b in fake["covered"])),
                    details={}, prev=prev))
            await store.publish_checkpoint()
            return appended.index
        finally:
            await store.close()

    with op.offline():
        index = run(append())
    done = _verify(op, tmp_path)
    assert done.returncode == VERIFICATION_FAILED, done.stderr  # type: ignore[attr-defined]
    assert f"{index}" in done.stdout + done.stderr  # type: ignore[attr-defined]
