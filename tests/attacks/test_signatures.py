"""Signature stripping, component substitution and Host-header games (RFC 9421 at the edge).

Already covered elsewhere (see CATALOGUE.md): unsigned requests, a flipped
signature bit, a path swap on GET, another authority in ``@target-uri``, an
uncovered profile header and a body without a covered Content-Digest
(``tests/integration/test_server_auth.py``). Here: half-stripped signature
headers, a downgraded component list, a stripped Content-Digest on a PATCH,
method/query/percent-encoding/upload-id substitution, and Host games
(absolute-form target, forwarded headers, duplicate Host). Every refusal is a
401/400 problem naming a denied entry, and nothing changed.
"""

from __future__ import annotations

import json
import re

from exchange.wire.tus import PATCH_CONTENT_TYPE
from tests.attacks._raw import raw_request, send
from tests.faults._tools import TUS, new_case, problem_slug
from tests.server_harness import Deployment, json_of, run


def _slug(body: bytes) -> str:
    return problem_slug(json.loads(body))


def test_stripped_and_downgraded_signatures_are_refused(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro:
            headers, _ = pro.prepare("GET", "/v1/cases")
            for drop in ("Signature", "Signature-Input"):
                partial = {k: v for k, v in headers.items() if k != drop}
                status, _, body = await send(d.url, "GET", "/v1/cases", partial)
                assert status == 401, (drop, status, body)
            # A component list without @target-uri (re-signed by the key owner, so the
            # signature itself is valid): the profile requires it.
            signed = pro.sign("GET", "/v1/cases", {})
            signed["Signature-Input"] = re.sub(r' "@target-uri"', "", signed["Signature-Input"])
            status, _, body = await send(d.url, "GET", "/v1/cases", signed)
            assert status in (400, 401), (status, body)

            # A PATCH whose Content-Digest header is stripped after signing.
            case_id, _ = await new_case(d, pro)
            upload = await pro.create_upload(case_id, 4)
            signed, _ = pro.prepare("PATCH", upload.path, data=b"abcd", headers={
                **TUS, "Upload-Offset": "0", "Content-Type": PATCH_CONTENT_TYPE})
            del signed["Content-Digest"]
            status, _, body = await send(d.url, "PATCH", upload.path, signed, b"abcd")
            assert status in (400, 401), (status, body)
            assert await pro.upload_offset(upload.path) == 0

    run(scenario())


def test_component_substitution_is_refused(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro, d.session("auditor") as auditor:
            case_id, _ = await new_case(d, pro)
            first = await pro.create_upload(case_id, 4)
            second = await pro.create_upload(case_id, 4)
            cases: list[tuple[str, str, dict[str, str], bytes | None]] = []
            # Signed GET, sent as DELETE to the same path.
            headers, _ = pro.prepare("GET", first.path)
            cases.append(("DELETE", first.path, {**headers, **TUS}, None))
            # Signed PATCH for one upload, sent to another.
            body = b"abcd"
            headers, _ = pro.prepare("PATCH", first.path, data=body, headers={
                **TUS, "Upload-Offset": "0", "Content-Type": PATCH_CONTENT_TYPE})
            cases.append(("PATCH", second.path, headers, body))
            # Signed query, other query sent (audit proof parameters).
            headers, _ = auditor.prepare("GET", "/v1/audit/proof/inclusion?index=0&size=1")
            cases.append(("GET", "/v1/audit/proof/inclusion?index=1&size=2", headers, None))
            # Percent-encoding games: signed one spelling, sent another.
            headers, _ = pro.prepare("GET", f"/v1/cases/{case_id}")
            cases.append(("GET", f"/v1/cases/%63{case_id[1:]}", headers, None))
            headers, _ = pro.prepare("GET", "/v1/cases")
            cases.append(("GET", "/v1//cases", headers, None))
            cases.append(("GET", "/v1/cases/", headers, None))
            for method, path, headers, payload in cases:
                status, response_headers, text = await send(d.url, method, path, headers,
                                                            payload)
                assert status in (400, 401, 404), (method, path, status, text)
                if status != 404:
                    assert _slug(text) in ("signature-invalid", "component-missing"), text
                    # Not verified, so not an access by anyone: counted, never audited.
                    assert "Exchange-Audit-Index" not in response_headers
            for upload in (first, second):
                assert await pro.upload_offset(upload.path) == 0  # nothing appended or deleted

    run(scenario())


def test_host_header_games(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    host = d.url.split("//", 1)[1]

    async def scenario() -> None:
        async with d.session("prosecutor") as pro:
            # Forwarding headers change nothing: the public URL is configured, not learned.
            headers, _ = pro.prepare("GET", "/v1/cases")
            forwarded = {**headers, "X-Forwarded-Host": "evil.example",
                         "X-Forwarded-Proto": "https", "Forwarded": "host=evil.example"}
            status, _, _ = await send(d.url, "GET", "/v1/cases", forwarded)
            assert status == 200
            # A signature made for the forwarded authority does not verify.
            evil = pro.__class__("https://evil.example", d.cast["prosecutor"],
                                 session=pro.session)
            headers, _ = evil.prepare("GET", "/v1/cases")
            status, _, body = await send(d.url, "GET", "/v1/cases", {
                **headers, "Host": "evil.example", "X-Forwarded-Host": "evil.example"})
            assert status == 401 and _slug(body) == "signature-invalid"
            # Absolute-form request target naming another host, signed for it.
            lines = ["GET https://evil.example/v1/cases HTTP/1.1", f"Host: {host}",
                     *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
            answer = await raw_request(d.url, "\r\n".join(lines).encode())
            assert answer.split(b" ", 2)[1] in (b"400", b"401", b"404"), answer[:200]
            # Two Host headers: a malformed request.
            headers, _ = pro.prepare("GET", "/v1/cases")
            lines = ["GET /v1/cases HTTP/1.1", f"Host: {host}", "Host: evil.example",
                     *(f"{k}: {v}" for k, v in headers.items()), "Connection: close", "", ""]
            answer = await raw_request(d.url, "\r\n".join(lines).encode())
            assert answer.split(b" ", 2)[1] in (b"200", b"400"), answer[:200]
            # Either way the server is fine afterwards.
            listed = await json_of(await pro.request("GET", "/v1/cases"))
            assert "cases" in listed

    run(scenario())
