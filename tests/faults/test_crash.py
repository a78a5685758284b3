"""SIGKILL a real server at chosen moments, many times in a row (PostgreSQL and SQLite).

Each round runs three clients at once against one ``exchange serve`` process:
an uploader (tus PATCHes whose bodies trickle in 64 KiB pieces, then a
commit), a rotator (adds a member to a case, then removes it with a new key
epoch: a key rotation) and a reader (plain logged listings). The round's
target decides when the server is SIGKILLed: in the middle of a PATCH body,
right after a commit or a removal was sent, or right after a listing was
sent, plus a seeded delay of a few milliseconds, so the kill lands in the
different phases of each operation (auth, body, fsync, group commit, reply).

After every restart the model of what the clients saw acknowledged is checked
against the server (through the API) and the store:

* every acknowledged evidence is listed and downloads with its SHA-256;
* nothing else is listed, except a commit whose answer was lost in the kill
  (then its upload is gone and its bytes match); a refused or never-sent
  commit is never visible;
* every unfinished upload resumes from a durable offset at least as far as
  the last acknowledged PATCH, and its bytes are proven right by the commit's
  hash check and the download;
* the key epochs and memberships moved together (a removal without its new
  epoch, or the reverse, fails), every epoch's recipient is one the client
  generated, and the owner's envelope of the newest epoch opens to its key;
* the whole audit log verifies offline (no gap: ``prev`` chain and tree) and
  every acknowledged response's ``Exchange-Audit-Index`` holds its entry.
"""

from __future__ import annotations

import asyncio
import base64
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from exchange.client.upload import chunked, send_resumable
from exchange.crypto.envelope import CaseKey, unwrap_envelope
from exchange.crypto.keys import ParticipantIdentity
from exchange.storage.errors import UploadNotFound
from exchange.storage.fs_blobs import FsBlobStore
from exchange.transport.client import SignedSession
from tests import statements
from tests.faults._tools import (
    CONNECTION_ERRORS,
    TUS,
    Acked,
    AckLog,
    b64,
    case_head,
    check_acked_entries,
    deployment_with,
    kill,
    new_case,
    patch,
    restart,
    sha256_hex,
    slow_source,
)
from tests.server_harness import FAST_RETRY, Deployment, enrol, run

KIB = 1024
MIB = 1024 * KIB
#: Kill targets, taken in turn: every kind is hit at least twice in 8 rounds.
TARGETS = ("patch", "commit", "rotation", "logged")
#: Rotations per round (each uses up one enrolled extra participant).
ROTATIONS_PER_ROUND = 3
#: A round kills the server at the latest after this long, target reached or not.
ROUND_LIMIT_S = 8.0


@dataclass
class Upload:
    """An upload the uploader started and has not seen committed."""

    path: str
    data: bytes
    acked_offset: int = 0  # the last offset a PATCH acknowledged
    offset: int = 0  # where to resume (the server's offset after a restart)
    commit_sent: bool = False


@dataclass
class Model:
    """Everything the clients saw acknowledged (and what was in flight at a kill)."""

    case_id: str
    rot_case: str
    head: str  # the upload case's chain head (it does not change: commits name it)
    rng: random.Random
    acks: AckLog = field(default_factory=AckLog)
    uploads: list[Upload] = field(default_factory=list)
    evidence: dict[str, str] = field(default_factory=dict)  # evidence id -> sha256
    epoch: int = 1  # the rotation case's confirmed newest epoch
    keys: dict[int, list[CaseKey]] = field(default_factory=dict)  # attempted keys per epoch
    pending: str | None = None  # a member added (maybe) and not yet removed
    pool: list[str] = field(default_factory=list)  # enrolled participants not used yet
    kills: list[str] = field(default_factory=list)


class Killer:
    """SIGKILLs the server once the round's target moment has come."""

    def __init__(self, d: Deployment, target: str, delay_s: float) -> None:
        self.d = d
        self.target = target
        self.delay_s = delay_s
        self.armed = asyncio.Event()
        self.killed = False
        self.dead = asyncio.Event()
        self.reached = ""

    def fire(self, kind: str) -> None:
        """Called by the clients at each candidate moment."""
        if kind == self.target:
            self.armed.set()

    async def run(self) -> None:
        try:
            await asyncio.wait_for(self.armed.wait(), ROUND_LIMIT_S)
            self.reached = self.target
        except TimeoutError:
            self.reached = "deadline"
        await asyncio.sleep(self.delay_s)
        self.killed = True
        kill(self.d)
        self.dead.set()


async def uploader(d: Deployment, m: Model, killer: Killer) -> None:
    async with d.session("prosecutor") as pro:
        while True:
            if not m.uploads:
                data = m.rng.randbytes(m.rng.randint(300 * KIB, 3 * MIB))
                response = await pro.request("POST", f"/v1/cases/{m.case_id}/uploads",
                                             headers={**TUS, "Upload-Length": str(len(data))})
                async with response:
                    assert response.status == 201, await response.text()
                    m.acks.add(response, "upload.create", "prosecutor")
                    m.uploads.append(Upload(response.headers["Location"], data))
            up = m.uploads[0]
            while up.offset < len(up.data):
                end = min(len(up.data), up.offset + MIB)
                chunk = up.data[up.offset:end]

                def mid_body(sent: int, size: int = len(chunk)) -> None:
                    if sent >= size // 2:
                        killer.fire("patch")

                response = await patch(pro, up.path, up.offset, chunk, source=slow_source(
                    chunk, piece=64 * KIB, delay_s=0.004, on_piece=mid_body))
                async with response:
                    assert response.status == 204, await response.text()
                    assert int(response.headers["Upload-Offset"]) == end
                    m.acks.add(response, "upload.append", "prosecutor")
                up.offset = up.acked_offset = end
            up.commit_sent = True
            killer.fire("commit")
            response = await pro.request("POST", up.path + "/commit", json={
                "sealed_manifest": b64(b"manifest"), "ciphertext_sha256": sha256_hex(up.data),
                "epoch": 1, "case_head": m.head})
            async with response:
                assert response.status == 201, await response.text()
                record = await response.json()
            m.evidence[record["evidence_id"]] = sha256_hex(up.data)
            m.acks.items.append(Acked(record["audit_index"], "evidence.commit", "prosecutor"))
            m.uploads.remove(up)


async def rotator(d: Deployment, m: Model, killer: Killer) -> None:
    anchor = d.anchor
    async with d.session("prosecutor") as pro:
        for _ in range(ROTATIONS_PER_ROUND):
            current = _confirmed_key(m, m.epoch)
            if m.pending is None:
                member = m.pool.pop()
                m.pending = member
                added = await statements.add_member(pro, anchor, m.rot_case, member,
                                                    {m.epoch: current})
                assert added.status == 201, added.body
                assert added.audit_index is not None
                m.acks.items.append(Acked(added.audit_index, "case.member_add", "prosecutor"))
            path, body, key = await statements.new_epoch_request(pro, anchor, m.rot_case,
                                                                 removed=m.pending)
            m.keys.setdefault(m.epoch + 1, []).append(key)
            killer.fire("rotation")
            response = await pro.request("POST", path, json=body)
            async with response:
                assert response.status == 200, await response.text()
                assert (await response.json())["epoch"] == m.epoch + 1
                m.acks.add(response, "case.member_remove", "prosecutor")
            m.keys[m.epoch + 1] = [key]
            m.epoch += 1
            m.pending = None
        await killer.dead.wait()  # the round goes on until the kill


async def reader(d: Deployment, m: Model, killer: Killer) -> None:
    async with d.session("coordinator") as coord, d.session("admin") as admin:
        for turn in range(10_000):
            session, path, action = ((coord, "/v1/cases", "case.list") if turn % 2 else
                                     (admin, "/v1/participants", "participant.list"))
            killer.fire("logged")
            response = await session.request("GET", path)
            async with response:
                assert response.status == 200, await response.text()
                m.acks.add(response, action, session.keyid)
            await asyncio.sleep(0.01)


def _confirmed_key(m: Model, epoch: int) -> CaseKey:
    (key,) = m.keys[epoch]
    return key


async def kill_round(d: Deployment, m: Model, target: str) -> None:
    """Run the three clients until the server is killed at the ``target`` moment."""
    killer = Killer(d, target, delay_s=m.rng.uniform(0.0, 0.02))
    clients = [asyncio.create_task(work(d, m, killer)) for work in (uploader, rotator, reader)]
    await killer.run()
    results = await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), 30)
    for result in results:
        if isinstance(result, BaseException) and not (
                killer.killed and isinstance(result, CONNECTION_ERRORS)):
            raise result
    m.kills.append(f"{target}->{killer.reached}+{killer.delay_s * 1000:.0f}ms")


async def check(d: Deployment, m: Model) -> None:
    """Compare the server with the model; adopt in-flight operations that did happen."""
    async with d.session("prosecutor") as pro, d.session("coordinator") as coord:
        await _check_evidence(m, pro, coord)
        await _check_rotation(d, m, pro)
    await check_acked_entries(d, m.acks.items)


async def _check_evidence(m: Model, pro: SignedSession, coord: SignedSession) -> None:
    response = await coord.request("GET", f"/v1/cases/{m.case_id}/evidence")
    async with response:
        assert response.status == 200
        listed = {e["evidence_id"]: e["ciphertext_sha256"]
                  for e in (await response.json())["evidence"]}
    assert set(m.evidence) <= set(listed), "acknowledged evidence is missing"
    for up in list(m.uploads):
        response = await pro.request("HEAD", up.path, headers=TUS)
        async with response:
            status = response.status
            offset = int(response.headers.get("Upload-Offset", -1))
        if status == 404:
            # Only a commit whose answer was lost may have taken the upload away.
            assert up.commit_sent, f"upload {up.path} vanished without a commit"
            sha = sha256_hex(up.data)
            adopted = [eid for eid, s in listed.items() if s == sha and eid not in m.evidence]
            assert len(adopted) == 1, "an upload vanished but its evidence is not listed once"
            m.evidence[adopted[0]] = sha
            m.uploads.remove(up)
            continue
        assert status == 200, status
        assert up.acked_offset <= offset <= len(up.data), (up.acked_offset, offset)
        up.offset = offset
        up.commit_sent = False  # still an upload: the commit did not happen
    unexplained = set(listed) - set(m.evidence)
    assert not unexplained, f"unacknowledged evidence is visible: {sorted(unexplained)}"
    for eid, sha in m.evidence.items():
        assert listed[eid] == sha
        async with await coord.open_download(eid) as download:
            assert sha256_hex(await download.read()) == sha, f"evidence {eid} changed"


async def _check_rotation(d: Deployment, m: Model, pro: SignedSession) -> None:
    response = await pro.request("GET", f"/v1/cases/{m.rot_case}")
    async with response:
        assert response.status == 200
        view = await response.json()
    epochs = {e["epoch"]: e["recipient"] for e in view["epochs"]}
    newest = max(epochs)
    assert sorted(epochs) == list(range(1, newest + 1))
    assert newest in (m.epoch, m.epoch + 1), (newest, m.epoch)
    for number, recipient in epochs.items():
        tried = [k for k in m.keys.get(number, []) if k.recipient().to_string() == recipient]
        assert tried, f"epoch {number} has a recipient the client never generated"
        m.keys[number] = tried[:1]
    active = {x["participant"] for x in view["members"] if x["removed_at"] is None}
    if newest == m.epoch + 1:  # the removal in flight at the kill happened, all of it
        assert m.pending is not None and m.pending not in active
        m.epoch, m.pending = newest, None
    elif m.pending is not None and m.pending not in active:
        # An add that never happened: that participant is still unused.
        m.pending = None
    assert active - {"prosecutor", m.pending} == set(), f"stray active members {active}"
    response = await pro.request("GET", f"/v1/cases/{m.rot_case}/epochs/{newest}/envelope")
    async with response:
        assert response.status == 200
        envelope = base64.b64decode((await response.json())["envelope"])
    opened = unwrap_envelope(envelope, d.cast["prosecutor"].age_identities(),
                             case_id=m.rot_case, epoch=newest)
    assert opened == _confirmed_key(m, newest)


async def setup(d: Deployment, rounds: int, seed: int) -> Model:
    async with d.session("prosecutor") as pro, d.session("admin") as admin:
        case_id, _ = await new_case(d, pro, "coordinator")
        rot_case, key = await new_case(d, pro)
        m = Model(case_id=case_id, rot_case=rot_case, rng=random.Random(seed),
                  head=await case_head(d, pro, case_id))
        m.keys[1] = [key]
        for i in range((rounds + 1) * ROTATIONS_PER_ROUND):
            identity = ParticipantIdentity.generate(f"member-{i}")
            await enrol(admin, identity, "coordinator")
            d.cast[identity.id] = identity
            m.pool.append(identity.id)
    return m


async def finish(d: Deployment, m: Model) -> None:
    """With no more kills: complete and commit every open upload, then check everything."""
    async with d.session("prosecutor") as pro:
        for up in list(m.uploads):
            await send_resumable(pro, up.path, len(up.data),
                                 chunked(slow_source(up.data), len(up.data), MIB),
                                 retry=FAST_RETRY)
            record = await pro.commit_upload(up.path, sealed_manifest=b"m",
                                             ciphertext_sha256=sha256_hex(up.data), epoch=1,
                                             case_head=m.head)
            m.evidence[record["evidence_id"]] = sha256_hex(up.data)
            m.uploads.remove(up)
    await check(d, m)


async def first_rotation(d: Deployment, m: Model) -> None:
    """One acknowledged rotation before the kills, so later rounds rotate from a live epoch.

    With signed statements a rotation costs several round trips (read the chain, then
    add and remove a member); under load the kill rounds alone may end before any
    rotation is acknowledged. The rounds still kill in the middle of rotations.
    """
    anchor = d.anchor
    async with d.session("prosecutor") as pro:
        member = m.pool.pop()
        added = await statements.add_member(pro, anchor, m.rot_case, member,
                                            {m.epoch: _confirmed_key(m, m.epoch)})
        assert added.status == 201 and added.audit_index is not None, added.body
        m.acks.items.append(Acked(added.audit_index, "case.member_add", "prosecutor"))
        path, body, key = await statements.new_epoch_request(pro, anchor, m.rot_case,
                                                             removed=member)
        response = await pro.request("POST", path, json=body)
        async with response:
            assert response.status == 200, await response.text()
            m.acks.add(response, "case.member_remove", "prosecutor")
        m.keys[m.epoch + 1] = [key]
        m.epoch += 1


def crash_scenario(d: Deployment, rounds: int, seed: int) -> Model:
    m = run(setup(d, rounds, seed))
    run(first_rotation(d, m))
    try:
        for number in range(rounds):
            run(kill_round(d, m, TARGETS[number % len(TARGETS)]))
            restart(d)
            run(check(d, m))
        run(finish(d, m))
    except AssertionError as err:
        raise AssertionError(f"{err} (after kills {m.kills})") from err
    return m


@pytest.mark.parametrize(("backend", "rounds"), [("postgres", 8), ("sqlite", 4)])
def test_sigkill_loses_nothing_acknowledged(tmp_path: Path, backend: str, rounds: int) -> None:
    with deployment_with(tmp_path, backend) as d:
        m = crash_scenario(d, rounds, seed=7 if backend == "postgres" else 8)
        assert len(m.kills) == rounds
        # The targets were reached (not the round deadline), so each kind was hit.
        assert not [k for k in m.kills if "deadline" in k], m.kills
        assert m.evidence, m.kills
        assert m.epoch > 1  # rotations acknowledged (the first one before the kills) are kept
        assert d.processes[0].stop() == 0  # and the last restart still drains cleanly



def test_promoted_session_outlives_the_promotion_until_deleted(tmp_path: Path) -> None:
    """The blob-store half of the commit fix: a crash between promotion and record loses nothing.

    Before, ``promote`` renamed the session's bytes into the blob before the
    evidence was recorded, so a SIGKILL in between destroyed an upload whose
    every byte had been acknowledged (found by the test above).
    """
    content = random.Random(9).randbytes(300 * KIB)

    async def body() -> None:
        store = FsBlobStore(tmp_path)
        state = await store.create_upload(length=len(content), expires_at=2**40)
        await store.append(state.upload_id, 0, [content])
        first = await store.promote(state.upload_id, sha256_hex(content), keep_session=True)
        # A "restart": the session is still complete and can be promoted again.
        store = FsBlobStore(tmp_path)
        assert (await store.upload_state(state.upload_id)).complete
        again = await store.promote(state.upload_id, sha256_hex(content), keep_session=True)
        assert again == first
        assert list((tmp_path / "blobs" / ".tmp").iterdir()) == []
        await store.delete_upload(state.upload_id)
        with pytest.raises(UploadNotFound):
            await store.upload_state(state.upload_id)
        assert await store.verify(first.blob_id) == first

    run(body())
