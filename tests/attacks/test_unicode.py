"""Unicode tricks in names and ids: RTL override, homoglyphs, NUL, overlong UTF-8, lone surrogates.

Ids (participant ids inside bundles, case ids, ids in paths) follow a narrow
ASCII grammar, so a homoglyph of ``admin`` or an id with a right-to-left
override is refused (400), never confused with the real one. Free text
(organisation) is either stored and returned exactly, or refused; a NUL or
lone surrogate never reaches the audit log as a control character (the log
still verifies). Overlong UTF-8 in a path is a 4xx. Nothing answers 5xx.
"""

from __future__ import annotations

from exchange.crypto.keys import ParticipantIdentity
from tests import statements
from tests.attacks._raw import send
from tests.faults._tools import b64, new_case
from tests.server_harness import Deployment, json_of, run, verify_audit_log

RLO = "\u202e"
#: ``admin`` with a Cyrillic "а", and ``prosecutor`` with a Greek omicron.
HOMOGLYPHS = ["\u0430dmin", "pr\u03bfsecutor"]
TRICKY_IDS = [*HOMOGLYPHS, f"user{RLO}nimda", "admin\u0000", "ADMIN", "admin\u200b",
              "e\u0301vil", "x" * 200]
TRICKY_TEXT = [f"Ministry {RLO}txt.exe", "Min\u0456stry", "nul\u0000byte", "\ud800lone",
               "zero\u200bwidth", "e\u0301"]
#: Stands for the organisation in a signed statement before a hand-made escape replaces it.
PLACEHOLDER = "organisation-placeholder"
#: A well-formed case id no test creates: swapped for a hostile one after signing.
UNUSED_CASE = "case-" + "0" * 24


def test_unicode_tricks_in_ids_and_names(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("admin") as admin, d.session("prosecutor") as pro:
            case_id, _ = await new_case(d, pro)
            state = await statements.server_state(pro, d.anchor, case_id)
            for tricky in TRICKY_IDS:
                who = ParticipantIdentity.generate("victim")
                bundle = who.public_bundle().to_json_obj()
                bundle["id"] = tricky
                enrol = statements.enrol_statement(
                    state, admin, bundle, who.possession_proof(), "admin", organisation="o",
                    country="DE", check=False)
                response = await admin.request("POST", "/v1/participants", json={
                    "statement": b64(enrol.encode())})
                assert response.status == 400, (tricky, await response.text())
                response.release()
                response = await pro.request("POST", "/v1/cases", json={
                    "statement": b64(statements.swap_text(statements.case_create_statement(
                        state, pro, UNUSED_CASE, recipient="x", envelope=b"e", metadata=b"m",
                        check=False).encode(), UNUSED_CASE, tricky)),
                    "metadata": b64(b"m"), "envelope": b64(b"e")})
                assert response.status == 400, (tricky, await response.text())
                response.release()
                member = {"id": tricky, "role": "coordinator",
                          "fingerprint": state.directory.get("coordinator").fingerprint}
                add = statements.member_add_statement(state, pro, case_id, member, {1: b"e"},
                                                      check=False)
                response = await pro.request("POST", f"/v1/cases/{case_id}/members", json={
                    "statement": b64(add.encode()), "envelopes": {"1": b64(b"e")}})
                assert 400 <= response.status < 500, (tricky, response.status)
                response.release()
            kept = {}
            for n, text in enumerate(TRICKY_TEXT):
                who = ParticipantIdentity.generate(f"uni-{n}")
                state = await statements.server_state(admin, d.anchor)
                # The text goes in as a JSON escape after signing: a lone surrogate has no
                # canonical (UTF-8) form, so only a hand-made statement can carry one.
                surrogate = "\ud800" in text
                encoded = statements.enrol_statement(
                    state, admin, who.public_bundle().to_json_obj(), who.possession_proof(),
                    "coordinator", organisation=PLACEHOLDER if surrogate else text,
                    country="DE").encode()
                if surrogate:
                    encoded = statements.swap_text(encoded, PLACEHOLDER, text)
                response = await admin.request("POST", "/v1/participants",
                                               json={"statement": b64(encoded)})
                status = response.status
                response.release()
                assert status in (201, 400), (text, status)
                if status == 201:
                    kept[who.id] = text
            for pid, text in kept.items():
                shown = await json_of(await admin.request("GET", f"/v1/participants/{pid}"))
                assert shown["organisation"] == text
            assert "uni-1" in kept  # a homoglyph in free text is just text, shown exactly
            # Overlong UTF-8 and raw non-ASCII bytes in a path.
            for path in ("/v1/cases/%C0%AE%C0%AE%C0%AF", "/v1/participants/%C0%80admin",
                         "/v1/participants/%D0%B0dmin"):
                headers, _ = pro.prepare("GET", path)
                status, _, _ = await send(d.url, "GET", path, headers)
                assert 400 <= status < 500, (path, status)
            listed = await json_of(await admin.request("GET", "/v1/participants"))
            ids = {p["id"] for p in listed["participants"]}
            assert not [i for i in ids if not i.isascii()], ids
        report, entries = await verify_audit_log(d)
        assert report.ok, [str(f) for f in report.findings][:5]
        # The entry format refuses control characters and lone surrogates: ok means none.
        assert len(entries) == report.entries

    run(scenario())
