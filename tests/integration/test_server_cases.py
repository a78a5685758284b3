"""Cases, members, epochs and envelopes over real signed HTTP, on SQLite and PostgreSQL.

Full flows for the four roles and every authorisation boundary: each refusal
must carry the right status and problem type and name a ``denied`` audit
entry; the whole log must verify with ``exchange.audit.verify`` at the end.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import Any

from exchange.crypto.envelope import CaseKey, case_id_for, unwrap_envelope
from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from tests import statements
from tests.server_harness import (
    Deployment,
    enrol,
    entries_at,
    entry_at,
    expect_problem,
    json_of,
    run,
    server_anchor,
    verify_audit_log,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


#: First keys made by :func:`new_case_id`, waiting for :func:`create_case`.
_FIRST_KEYS: dict[str, CaseKey] = {}


def new_case_id() -> str:
    """Return the id the next case will have: case ids derive from the case's first key."""
    key = CaseKey.new_case()
    _FIRST_KEYS[key.case_id] = key
    return key.case_id


async def create_case(session: SignedSession, owner: ParticipantIdentity,
                      case_id: str) -> CaseKey:
    """Create ``case_id`` (from :func:`new_case_id`) as ``owner``; return its epoch-1 key."""
    anchor = await server_anchor(session)
    answer, _, key = await statements.create_case(session, anchor,
                                                  key=_FIRST_KEYS.pop(case_id))
    assert answer.status == 201, answer.body
    assert answer.body == {"case_id": case_id, "epoch": 1, "created_by": owner.id,
                           "created_at": answer.body["created_at"]}
    return key


async def add_member(session: SignedSession, case_id: str, key: CaseKey,
                     member: ParticipantIdentity) -> dict[str, Any]:
    """Add ``member`` with ``key`` (the case's current epoch) wrapped for them."""
    anchor = await server_anchor(session)
    answer = await statements.add_member(session, anchor, case_id, member.id, {key.epoch: key})
    assert answer.status == 201, answer.body
    body: dict[str, Any] = answer.body
    return body


async def open_envelope(session: SignedSession, identity: ParticipantIdentity, case_id: str,
                        epoch: int) -> CaseKey:
    response = await session.request("GET", f"/v1/cases/{case_id}/epochs/{epoch}/envelope")
    body = await json_of(response)
    assert response.status == 200, body
    assert body["participant"] == identity.id
    return unwrap_envelope(base64.b64decode(body["envelope"]), identity.age_identities(),
                           case_id=case_id, epoch=epoch)


def test_case_lifecycle_for_prosecutor_and_coordinator(deployment: Deployment) -> None:
    cast = deployment.cast

    async def scenario() -> None:
        async with deployment.session("prosecutor") as pro, \
                deployment.session("coordinator") as coord:
            case_id = new_case_id()
            key1 = await create_case(pro, cast["prosecutor"], case_id)
            added = await add_member(pro, case_id, key1, cast["coordinator"])
            assert added["epoch"] == 1 and added["role"] == "coordinator"

            # The coordinator sees the case and opens its own envelope of epoch 1.
            listed = await json_of(await coord.request("GET", "/v1/cases"))
            assert case_id in [c["case_id"] for c in listed["cases"]]
            assert await open_envelope(coord, cast["coordinator"], case_id, 1) == key1

            response = await coord.request("GET", f"/v1/cases/{case_id}")
            shown = await json_of(response)
            assert response.status == 200
            index = int(response.headers["Exchange-Audit-Index"])
            assert {m["participant"] for m in shown["members"]} == {"prosecutor", "coordinator"}
            assert shown["epochs"][0]["recipient"] == key1.recipient().to_string()

            # Removal starts epoch 2 for the remaining member only, atomically.
            answer, key2 = await statements.remove_member(pro, deployment.anchor, case_id,
                                                          "coordinator")
            removed = answer.body
            assert answer.status == 200, removed
            assert removed["epoch"] == 2
            assert await open_envelope(pro, cast["prosecutor"], case_id, 2) == key2

            # A removed member is refused everything in the case, old envelopes included.
            denied = await expect_problem(
                await coord.request("GET", f"/v1/cases/{case_id}/epochs/1/envelope"),
                403, "not-a-member")
            await expect_problem(await coord.request("GET", f"/v1/cases/{case_id}"),
                                 403, "not-a-member")
            listed = await json_of(await coord.request("GET", "/v1/cases"))
            assert case_id not in [c["case_id"] for c in listed["cases"]]

            # Rotation without removal; an envelope statement for an existing envelope is
            # refused by the chain rules.
            answer, _ = await statements.rotate_epoch(pro, deployment.anchor, case_id)
            assert answer.status == 201, answer.body
            state = await statements.server_state(pro, deployment.anchor, case_id)
            again = statements.sign(
                state, kind="case.envelope_add", chain=f"case:{case_id}", issuer="prosecutor",
                key=cast["prosecutor"].signing_key, check=False, body={
                    "members": [statements._member(state, "prosecutor").to_json()],
                    "envelopes": [{"member": "prosecutor", "epoch": 3,
                                   "sha256": "00" * 32}]})
            await expect_problem(await pro.request(
                "POST", f"/v1/cases/{case_id}/envelopes", json={
                    "statement": b64(again.encode()),
                    "envelopes": [{"member": "prosecutor", "epoch": 3, "envelope": b64(b"x")}]}),
                400, "invalid-request")

        show_entry, denied_entry = await entries_at(deployment, [index, denied])
        assert show_entry["action"] == "case.show" and show_entry["outcome"] == "ok"
        assert show_entry["actor"] == "coordinator" and show_entry["case"] == case_id
        assert show_entry["request"]["covered"][0] == ["\"@method\"", "GET"]
        assert denied_entry["outcome"] == "denied"
        assert denied_entry["reason"] == "not-a-member"
        assert denied_entry["actor"] == "coordinator"
        assert denied_entry["action"] == "envelope.get"

    run(scenario())


def test_invisible_cases_answer_alike_and_case_ids_are_made_by_the_server(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment

    async def answer(session: SignedSession, method: str, case_id: str, suffix: str,
                     body: Any) -> tuple[int, str, str]:
        response = await session.request(method, f"/v1/cases/{case_id}{suffix}", json=body)
        problem = await json_of(response)
        return (response.status, problem["type"],
                problem["detail"].replace(case_id, "<case>"))

    async def scenario() -> None:
        async with d.session("prosecutor") as pro, d.session("coordinator2") as outsider, \
                d.session("prosecutor2") as other_pro:
            existing = new_case_id()
            await create_case(pro, d.cast["prosecutor"], existing)
            missing = CaseKey.new_case().case_id  # well formed, never created
            for session, method, suffix, body in [
                (outsider, "GET", "", None),
                (outsider, "GET", "/evidence", None),
                (outsider, "GET", "/epochs/1/envelope", None),
                (outsider, "GET", "/feed", None),
                (other_pro, "POST", "/members", {"participant": "coordinator2",
                                                 "envelope": b64(b"e")}),
            ]:
                seen = await answer(session, method, existing, suffix, body)
                unseen = await answer(session, method, missing, suffix, body)
                assert seen == unseen, (suffix, seen, unseen)
                assert seen[0] == 403 and seen[1].endswith("/not-a-member")

            # A client cannot choose a case id: a statement naming one is refused.
            chosen = CaseKey.generate("case-" + "0" * 24, 1)
            refused, _, _ = await statements.create_case(pro, d.anchor, key=chosen)
            assert refused.status == 400 and "derive" in refused.body["detail"], refused.body
            # The id is the one derived from the first epoch's key.
            created = await create_case(pro, d.cast["prosecutor"], new_case_id())
            assert created.case_id == case_id_for(created.recipient().to_string())

    run(scenario())


def test_authorisation_boundaries(deployment: Deployment) -> None:
    cast = deployment.cast

    async def scenario() -> None:
        async with deployment.session("prosecutor") as pro, \
                deployment.session("coordinator") as coord, \
                deployment.session("coordinator2") as outsider, \
                deployment.session("admin") as admin, \
                deployment.session("auditor") as auditor, \
                deployment.session("prosecutor2") as other_pro:
            case_id = new_case_id()
            key = await create_case(pro, cast["prosecutor"], case_id)
            await add_member(pro, case_id, key, cast["coordinator"])
            path = f"/v1/cases/{case_id}"
            checks = [
                # (session, method, path, json, status, slug, actor)
                (outsider, "GET", path, None, 403, "not-a-member", "coordinator2"),
                (outsider, "GET", f"{path}/epochs/1/envelope", None, 403, "not-a-member",
                 "coordinator2"),
                (other_pro, "POST", f"{path}/members", {"participant": "coordinator2",
                                                        "envelope": b64(b"e")},
                 403, "not-a-member", "prosecutor2"),
                (admin, "GET", path, None, 403, "forbidden", "admin"),
                (admin, "GET", f"{path}/epochs/1/envelope", None, 403, "forbidden", "admin"),
                (admin, "GET", "/v1/cases", None, 403, "forbidden", "admin"),
                (auditor, "GET", path, None, 403, "forbidden", "auditor"),
                (auditor, "GET", f"{path}/epochs/1/envelope", None, 403, "forbidden",
                 "auditor"),
                (coord, "POST", f"{path}/members", {"participant": "coordinator2",
                                                    "envelope": b64(b"e")},
                 403, "forbidden", "coordinator"),
                (coord, "POST", "/v1/cases", {"metadata": "", "epoch": {"recipient": "x"},
                                              "envelope": ""}, 403, "forbidden",
                 "coordinator"),
                (coord, "POST", "/v1/participants", {"bundle": {}, "role": "admin"},
                 403, "forbidden", "coordinator"),
                (pro, "GET", "/v1/cases/case-does-not-exist", None, 403, "not-a-member",
                 "prosecutor"),  # like a case that exists: see the test below
                (pro, "GET", f"{path}/epochs/9/envelope", None, 404, "not-found",
                 "prosecutor"),
                (pro, "GET", f"{path}/epochs/x1/envelope", None, 400, "invalid-request",
                 "prosecutor"),
                (pro, "POST", f"{path}/members", {"participant": "auditor",
                                                  "envelope": b64(b"e")},
                 400, "invalid-request", "prosecutor"),
                (pro, "POST", f"{path}/epochs", {"epoch": {"recipient":
                                                           key.recipient().to_string()},
                                                 "envelopes": {"prosecutor": b64(b"e")}},
                 400, "invalid-request", "prosecutor"),  # coordinator's envelope missing
                (pro, "POST", "/v1/cases", {"metadata": "AA==", "epoch": {"recipient": "x"},
                                            "envelope": "AA==", "extra": 1},
                 400, "invalid-request", "prosecutor"),
            ]
            indexes = []
            for session, method, target, body, status, slug, _actor in checks:
                response = await session.request(method, target, json=body)
                indexes.append(await expect_problem(response, status, slug))

        entries = await entries_at(deployment, indexes)
        for entry, check in zip(entries, checks, strict=True):
            assert entry["outcome"] == "denied"
            assert entry["reason"] == check[5]
            assert entry["actor"] == check[6]
            assert entry["request"] is not None  # validly signed: the evidence is kept

    run(scenario())


def test_suspended_participant_is_refused_and_logged(deployment: Deployment) -> None:
    async def scenario() -> None:
        victim = ParticipantIdentity.generate("suspended-" + secrets.token_hex(3))
        async with deployment.session("admin") as admin:
            await enrol(admin, victim, "coordinator")
            async with SignedSession(deployment.url, victim) as session:
                response = await session.request("GET", "/v1/cases")
                assert response.status == 200
                response.release()
                answer = await statements.suspend(admin, deployment.anchor, victim.id)
                assert answer.body["status"] == "suspended", answer.body
                index = await expect_problem(await session.request("GET", "/v1/cases"),
                                             401, "participant-suspended")
            shown = await json_of(await admin.request("GET", f"/v1/participants/{victim.id}"))
            assert shown["status"] == "suspended"
            await expect_problem(
                await admin.request("POST", "/v1/participants/admin/suspend", json={}),
                403, "forbidden")
        entry = await entry_at(deployment, index)
        assert entry["outcome"] == "denied" and entry["actor"] == victim.id
        assert entry["reason"] == "participant-suspended"

    run(scenario())


def test_participants_are_public_to_members_and_enrolment_is_logged(
    deployment: Deployment,
) -> None:
    async def scenario() -> None:
        async with deployment.session("coordinator") as coord:
            response = await coord.request("GET", "/v1/participants/prosecutor")
            shown = await json_of(response)
            assert response.status == 200
            bundle = deployment.cast["prosecutor"].public_bundle()
            assert shown["fingerprint"] == bundle.fingerprint
            assert base64.b64decode(shown["signing_key"]) == bundle.signing_key
            assert shown["age_recipient"] == bundle.age_recipient
            listed = await json_of(await coord.request("GET", "/v1/participants"))
            assert {"admin", "prosecutor", "auditor"} <= {p["id"] for p in listed["participants"]}
            await expect_problem(await coord.request("GET", "/v1/participants/nobody"),
                                 404, "not-found")
        enrolment = await entry_at(deployment, shown["enrolment_index"])
        assert enrolment["action"] == "participant.enrol"
        assert enrolment["actor"] == "admin"
        assert enrolment["details"]["fingerprint"] == bundle.fingerprint
        assert enrolment["details"]["signing_key"] == b64(bundle.signing_key)

    run(scenario())


def test_zz_whole_log_verifies(deployment: Deployment) -> None:
    """Runs last in the module: everything the tests above logged verifies offline."""
    async def scenario() -> None:
        report, entries = await verify_audit_log(deployment)
        assert report.ok, [str(f) for f in report.findings]
        outcomes = {json.loads(e)["outcome"] for e in entries}
        assert outcomes == {"ok", "denied"}

    run(scenario())
