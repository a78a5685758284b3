"""Path traversal in every id: participant, case, upload, evidence, audit tile and receipt paths.

Each hostile id (encoded and raw ``..``, backslashes, NUL, absolute paths)
is sent, signed by a role allowed to use the route, to every route that takes
an id, and as ids inside JSON bodies and upload metadata. Every answer must be
a 4xx problem (never 2xx, never 5xx), and afterwards nothing outside the data
directory was created, changed or removed, and inside it only the database
and the blob/upload areas changed (``server.json`` and ``log.key`` intact).
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from exchange.crypto.keys import ParticipantIdentity
from tests import statements
from tests.faults._tools import TUS, b64, new_case
from tests.server_harness import Deployment, json_of, run

HOSTILE = [
    "..%2F..%2Fserver.json", "..%2f..%2flog.key", "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..", "...", "..%5C..%5Cserver.json", "%2Fetc%2Fpasswd", "a%00b", "....%2F%2Fx",
    "ev-..%2F..%2Fblobs", "0%2F..%2F..%2Fserver.json",
]
#: Areas of the data directory that requests may legitimately change.
# The rollback guard is rewritten as the log grows, through its lock and an atomic write's
# temporary file (``.published-checkpoint.<random>.tmp``), which a snapshot can catch.
MUTABLE = ("exchange.sqlite3", "blobs", "uploads", "published-checkpoint",
           ".published-checkpoint.")


def snapshot(root: Path) -> dict[str, str]:
    """Return path -> sha256 of every file under ``root``."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _mutable(relative: str, data_dir: str) -> bool:
    inside = relative.removeprefix(data_dir + "/")
    return relative.startswith(data_dir + "/") and inside.startswith(MUTABLE)


def routes(case_id: str) -> list[tuple[str, str, str, dict[str, object] | None]]:
    """(who, method, path template with {x}, JSON body) for every route taking an id."""
    statement = {"statement": b64(b"{}")}
    return [
        ("admin", "GET", "/v1/participants/{x}", None),
        ("admin", "POST", "/v1/participants/{x}/suspend", statement),
        ("admin", "POST", "/v1/participants/{x}/reinstate", statement),
        ("admin", "POST", "/v1/participants/{x}/role", statement),
        ("admin", "PUT", "/v1/participants/{x}/keys", statement),
        ("prosecutor", "GET", "/v1/cases/{x}", None),
        ("prosecutor", "GET", "/v1/cases/{x}/evidence", None),
        ("prosecutor", "GET", "/v1/cases/{x}/statements", None),
        ("prosecutor", "GET", "/v1/cases/{x}/epochs/1/envelope", None),
        ("prosecutor", "GET", f"/v1/cases/{case_id}/epochs/{{x}}/envelope", None),
        ("prosecutor", "POST", "/v1/cases/{x}/members",
         {**statement, "envelopes": {"1": b64(b"e")}}),
        ("prosecutor", "POST", f"/v1/cases/{case_id}/members/{{x}}/remove",
         {**statement, "envelopes": {}}),
        ("prosecutor", "POST", "/v1/cases/{x}/epochs", {**statement, "envelopes": {}}),
        ("prosecutor", "POST", "/v1/cases/{x}/envelopes", {**statement, "envelopes": {}}),
        ("prosecutor", "POST", "/v1/cases/{x}/policy", statement),
        ("prosecutor", "GET", "/v1/cases/{x}/feed?after=0&wait=0", None),
        ("prosecutor", "HEAD", "/v1/uploads/{x}", None),
        ("prosecutor", "DELETE", "/v1/uploads/{x}", None),
        ("prosecutor", "POST", "/v1/uploads/{x}/commit",
         {"sealed_manifest": b64(b"m"), "ciphertext_sha256": "0" * 64, "epoch": 1,
          "case_head": "0" * 64}),
        ("prosecutor", "GET", "/v1/evidence/{x}", None),
        ("prosecutor", "GET", "/v1/evidence/{x}/content", None),
        ("auditor", "GET", "/v1/audit/tile/0/{x}", None),
        ("auditor", "GET", "/v1/audit/tile/{x}/000", None),
        ("auditor", "GET", "/v1/audit/tile/entries/{x}", None),
        ("auditor", "GET", "/v1/audit/receipt/{x}", None),
    ]


def test_traversal_in_every_id_is_refused_and_touches_nothing(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment
    base = d.data_dir.parent
    data_name = d.data_dir.name

    async def scenario() -> None:
        async with d.session("prosecutor") as pro:
            case_id, _ = await new_case(d, pro)
        before = snapshot(base)
        sessions = {who: d.session(who) for who in ("admin", "prosecutor", "auditor")}
        try:
            for who, method, template, body in routes(case_id):
                for hostile in HOSTILE:
                    path = template.replace("{x}", hostile)
                    headers = dict(TUS) if "/uploads/" in path else {}
                    response = await sessions[who].request(method, path, json=body,
                                                           headers=headers)
                    async with response:
                        status = response.status
                    assert 400 <= status < 500, (method, path, status)
            # Hostile ids inside bodies and metadata.
            pro = sessions["prosecutor"]
            # (a case id in a statement's chain and body: the statement module will not
            # build one, so a placeholder is swapped for it after signing)
            admin = sessions["admin"]
            state = await statements.server_state(pro, d.anchor)
            placeholder = "case-" + "f" * 24
            create = statements.case_create_statement(
                state, pro, placeholder, recipient="x", envelope=b"e", metadata=b"m",
                check=False)
            response = await pro.request("POST", "/v1/cases", json={
                "statement": b64(statements.swap_text(create.encode(), placeholder,
                                                      "../../pwned")),
                "metadata": b64(b"m"), "envelope": b64(b"e")})
            assert response.status == 400, await response.text()
            response.release()
            victim = ParticipantIdentity.generate("victim")
            bundle = victim.public_bundle().to_json_obj()
            bundle["id"] = "../../pwned"
            enrol = statements.enrol_statement(state, admin, bundle, victim.possession_proof(),
                                               "coordinator", organisation="o", country="DE",
                                               check=False)
            response = await admin.request("POST", "/v1/participants", json={
                "statement": b64(enrol.encode())})
            assert response.status == 400, await response.text()
            response.release()
            metadata = "filename " + base64.b64encode(b"../../../../tmp/pwned").decode()
            response = await pro.request("POST", f"/v1/cases/{case_id}/uploads", headers={
                **TUS, "Upload-Length": "0", "Upload-Metadata": metadata})
            assert response.status == 201, await response.text()
            upload = response.headers["Location"]
            response.release()
            response = await pro.request("DELETE", upload, headers=TUS)
            assert response.status == 204
            response.release()
            assert (await json_of(await pro.request("GET", "/v1/cases")))["cases"]
        finally:
            for session in sessions.values():
                await session.close()
        after = snapshot(base)
        changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
        unexpected = sorted(k for k in changed if not _mutable(k, data_name))
        assert not unexpected, unexpected
        assert not Path("/tmp/pwned").exists()

    run(scenario())
