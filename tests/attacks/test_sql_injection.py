"""SQL metacharacters in every field, on SQLite and PostgreSQL: stored verbatim or refused.

Classic payloads go into every value a client controls: free-text fields
(organisation, country: stored, so they must come back byte-for-byte), ids in
paths and bodies (refused by their grammar: 4xx), query parameters, upload
metadata (kept verbatim) and the Last-Event-ID header. Nothing may answer 5xx,
and afterwards every table still answers (participants, cases, the audit log,
which must verify offline): the payloads were data, never SQL.
"""

from __future__ import annotations

import base64
from urllib.parse import quote

from exchange.crypto.keys import ParticipantIdentity
from tests import statements
from tests.faults._tools import TUS, b64, new_case
from tests.server_harness import Deployment, json_of, run, verify_audit_log

PAYLOADS = [
    "x'; DROP TABLE participants; --",
    "' OR '1'='1",
    "\"; DELETE FROM audit_entries; --",
    "1; UPDATE participants SET role='admin' --",
    "%' UNION SELECT entry FROM audit_entries --",
    "$1 $$ ?; \\x00 -- /* */",
]


def test_sql_metacharacters_are_data_never_sql(deployment: Deployment) -> None:
    d = deployment

    async def scenario() -> None:
        async with d.session("admin") as admin, d.session("prosecutor") as pro:
            case_id, _ = await new_case(d, pro, "coordinator")
            statuses: list[tuple[str, int]] = []
            for n, payload in enumerate(PAYLOADS):
                # Free text: stored and returned verbatim.
                who = ParticipantIdentity.generate(f"sql-{n}")
                enrolled = await statements.enrol(admin, d.anchor, who, "coordinator",
                                                  organisation=payload, country=payload[:64])
                assert enrolled.status == 201, enrolled.body
                shown = await json_of(await admin.request("GET", f"/v1/participants/{who.id}"))
                assert shown["organisation"] == payload and shown["country"] == payload[:64]
                assert shown["role"] == "coordinator"
                quoted = quote(payload, safe="")
                # Signed statements that name the payload as a member and as a case id.
                state = await statements.server_state(pro, d.anchor, case_id)
                member = {"id": payload, "role": "coordinator",
                          "fingerprint": state.directory.get("coordinator").fingerprint}
                add = statements.member_add_statement(state, pro, case_id, member,
                                                      {1: b"e"}, check=False)
                placeholder = "case-" + "f" * 24  # swapped for the payload after signing
                create = statements.swap_text(statements.case_create_statement(
                    state, pro, placeholder, recipient=payload, envelope=b"e", metadata=b"m",
                    check=False).encode(), placeholder, payload)
                # Ids in paths, bodies and query strings: refused, never executed.
                for session, method, path, body in (
                    (admin, "GET", f"/v1/participants/{quoted}", None),
                    (pro, "GET", f"/v1/cases/{quoted}", None),
                    (pro, "GET", f"/v1/evidence/{quoted}", None),
                    (pro, "HEAD", f"/v1/uploads/{quoted}", None),
                    (pro, "POST", f"/v1/cases/{case_id}/members",
                     {"statement": b64(add.encode()), "envelopes": {payload: b64(b"e")}}),
                    (pro, "POST", f"/v1/cases/{case_id}/members",
                     {"statement": payload, "envelopes": {"1": payload}}),
                    (pro, "POST", "/v1/cases", {"statement": b64(create),
                                                "metadata": b64(b"m"), "envelope": b64(b"e")}),
                    (pro, "POST", "/v1/cases", {"statement": payload, "metadata": payload,
                                                "envelope": payload}),
                    (pro, "GET", f"/v1/cases/{case_id}/feed?after={quoted}&wait=0", None),
                    (admin, "GET", f"/v1/audit/proof/inclusion?index={quoted}&size=1", None),
                ):
                    headers = dict(TUS) if "/uploads/" in path else {}
                    response = await session.request(method, path, json=body, headers=headers)
                    statuses.append((path, response.status))
                    response.release()
                response = await pro.request("GET", f"/v1/cases/{case_id}/feed?after=0&wait=0",
                                             headers={"Last-Event-ID": payload})
                # Ignored by the long poll (it resumes from ?after=), refused or served: never 5xx.
                assert response.status < 500, response.status
                response.release()
                # Upload metadata is kept verbatim (it is the client's business).
                metadata = "name " + base64.b64encode(payload.encode()).decode()
                response = await pro.request("POST", f"/v1/cases/{case_id}/uploads", headers={
                    **TUS, "Upload-Length": "0", "Upload-Metadata": metadata})
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
                response.release()
                response = await pro.request("DELETE", location, headers=TUS)
                response.release()
            bad = [(p, s) for p, s in statuses if not 400 <= s < 500]
            assert not bad, bad
            # Every table still answers, with everyone in it and nobody promoted.
            listed = await json_of(await admin.request("GET", "/v1/participants"))
            roles = {p["id"]: p["role"] for p in listed["participants"]}
            assert {"admin", "prosecutor", "coordinator", "auditor"} <= set(roles)
            assert [i for i, r in roles.items() if r == "admin"] == ["admin"]
            assert case_id in {c["case_id"] for c in
                               (await json_of(await pro.request("GET", "/v1/cases")))["cases"]}
        report, _ = await verify_audit_log(d)
        assert report.ok, [str(f) for f in report.findings][:5]

    run(scenario())
