"""Participant keys over real HTTP: key change is logged and verifiable, PQ bundles survive,
membership changes write live-feed case events in the same transaction."""

from __future__ import annotations

import base64
import json
import secrets

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from tests import statements
from tests.server_harness import (
    Deployment,
    enrol,
    entry_at,
    expect_problem,
    expect_unlogged_problem,
    json_of,
    run,
    verify_audit_log,
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_key_change_is_logged_and_old_key_stops_working(deployment: Deployment) -> None:
    async def scenario() -> None:
        name = "rekeyed-" + secrets.token_hex(3)
        old = ParticipantIdentity.generate(name)
        new = ParticipantIdentity.generate(name, pq=True)
        async with deployment.session("admin") as admin, \
                SignedSession(deployment.url, old) as old_session, \
                SignedSession(deployment.url, new) as new_session:
            await enrol(admin, old, "coordinator")
            assert (await old_session.request("GET", "/v1/cases")).status == 200

            # Only admins change keys, and only with a statement for that participant.
            anchor = deployment.anchor
            state = await statements.server_state(admin, anchor)
            change = statements.sign(
                state, kind="participant.key_change", chain="directory", issuer=name,
                key=old.signing_key, check=False, body={
                    "participant": new.public_bundle().to_json_obj(),
                    "possession": statements.b64(new.possession_proof()), "reason": "x"})
            await expect_problem(await old_session.request(
                "PUT", f"/v1/participants/{name}/keys",
                json={"statement": statements.b64(change.encode())}), 403, "forbidden")
            answer = await statements.change_keys(admin, anchor, new)
            await expect_problem(await admin.request(
                "PUT", "/v1/participants/prosecutor/keys", json={}), 400, "invalid-request")
            changed = answer.body
            assert answer.status == 200, changed
            assert changed["fingerprint"] == new.public_bundle().fingerprint

            # The old key no longer verifies: refused, and (unsigned as far as the
            # server can tell) not an audit entry.
            await expect_unlogged_problem(await old_session.request("GET", "/v1/cases"), 401,
                                          "signature-invalid")
            assert (await new_session.request("GET", "/v1/cases")).status == 200
            shown = await json_of(await new_session.request("GET", f"/v1/participants/{name}"))
            assert shown["pq_recipient"] == new.public_bundle().pq_recipient
            assert shown["key_index"] == changed["key_index"] > shown["enrolment_index"]

        entry = await entry_at(deployment, changed["key_index"])
        assert entry["action"] == "participant.key_change" and entry["actor"] == "admin"
        assert entry["details"]["fingerprint"] == new.public_bundle().fingerprint
        assert entry["details"]["previous_fingerprint"] == old.public_bundle().fingerprint
        assert entry["details"]["pq_recipient"] == new.public_bundle().pq_recipient
        # The verifier replays the key change: later requests by the new key verify.
        report, _ = await verify_audit_log(deployment)
        assert report.ok, [str(f) for f in report.findings]

    run(scenario())


def test_membership_changes_write_case_events(deployment: Deployment) -> None:
    anchor = deployment.anchor

    async def scenario() -> None:
        async with deployment.session("prosecutor") as pro:
            answer, case_id, key = await statements.create_case(pro, anchor)
            assert answer.status == 201
            answer = await statements.add_member(pro, anchor, case_id, "coordinator2", {1: key})
            assert answer.status == 201 and answer.audit_index is not None
            added = answer.audit_index
            answer, _ = await statements.remove_member(pro, anchor, case_id, "coordinator2")
            assert answer.status == 200 and answer.audit_index is not None
            removed = answer.audit_index
            # A refused change writes no event.
            await expect_problem(await pro.request(
                "POST", f"/v1/cases/{case_id}/members/coordinator2/remove", json={
                    "statement": "", "envelopes": {}}), 404, "not-found")

        store = await deployment.open_store()
        try:
            async with store.transaction("read_events") as tx:
                events = await tx.case_events(case_id)
                later = await tx.case_events(case_id, after=added)
        finally:
            await store.close()
        assert [(e.audit_index, e.kind) for e in events] == [
            (added, "membership"), (removed, "membership")]
        assert json.loads(events[0].payload) == {
            "change": "added", "participant": "coordinator2", "role": "coordinator",
            "epoch": 1}
        assert json.loads(events[1].payload)["change"] == "removed"
        assert [e.audit_index for e in later] == [removed]

    run(scenario())


def test_refusals_with_garbage_ids_are_still_logged(deployment: Deployment) -> None:
    """A hostile id in the URL (control characters, over-long) must not stop the refusal
    from being logged: found by schemathesis (GET /v1/participants/%04e%C3%92 gave 400 'audit')."""
    async def scenario() -> None:
        async with deployment.session("prosecutor") as session:
            for raw, shown in [("%04e%C3%92", "?e\u00d2"), ("x" * 300, "x" * 256),
                               ("%ED%A0%80", None)]:
                index = await expect_problem(
                    await session.request("GET", f"/v1/participants/{raw}"), 404, "not-found")
                entry = await entry_at(deployment, index)
                assert (entry["action"], entry["outcome"]) == ("participant.show", "denied")
                if shown is not None:
                    assert entry["object"] == shown
                assert "\x04" not in json.dumps(entry)
        await verify_audit_log(deployment)

    run(scenario())
