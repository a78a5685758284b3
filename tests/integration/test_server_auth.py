"""Authentication at the edge of a real server: every RFC 9421 failure, Expect gate, limits.

Each refusal must give the right status and problem type. A request whose
signature verified is refused with a ``denied`` audit entry naming the
participant; one whose signature did not verify names no entry and leaves the
audit tree as it was (counted in the server's operational log instead). Replay protection is
also checked across two ``serve`` processes sharing one PostgreSQL database.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER
from exchange.wire.httpsig import content_digest
from tests import statements
from tests.server_harness import (
    Deployment,
    deployed,
    entries_at,
    expect_problem,
    expect_unlogged_problem,
    json_of,
    run,
    verify_audit_log,
)

ENROL_PATH = "/v1/participants"


async def send(deployment: Deployment, method: str, path: str, headers: dict[str, str],
               body: bytes | None = None) -> aiohttp.ClientResponse:
    """Send exactly these headers and body (no client-side signing)."""
    async with aiohttp.ClientSession() as http:
        response = await http.request(
            method, deployment.url + path, headers=headers, data=body,
            skip_auto_headers=("Content-Type",),
        )
        await response.read()
        return response


def bundle_body(identity: ParticipantIdentity, role: str = "coordinator") -> dict[str, Any]:
    return {"bundle": identity.public_bundle().to_json_obj(), "role": role}


async def raw_exchange(url: str, head: bytes, *, body: bytes = b"",
                       timeout_s: float = 5.0) -> tuple[bytes, bool]:
    """Write ``head``, wait for the server's answer, send ``body`` only after a 100.

    Returns (everything the server sent, whether the body was sent).
    """
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    writer.write(head)
    await writer.drain()
    sent_body = False
    received = b""
    try:
        first = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        received += first
        if first.startswith(b"HTTP/1.1 100"):
            writer.write(body)
            await writer.drain()
            sent_body = True
            received += await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout_s)
        received += await asyncio.wait_for(reader.read(65536), timeout_s)
    finally:
        writer.close()
    return received, sent_body


def request_head(method: str, path: str, headers: dict[str, str], host: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _tree_size(d: Deployment) -> int:
    store = await d.open_store()
    try:
        return await store.tree_size()
    finally:
        await store.close()


def test_authentication_failures_are_refused_and_not_audited(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        stranger = ParticipantIdentity.generate("stranger")
        now = int(time.time())
        cases: list[tuple[str, None, str, str | None]] = []  # (name, -, slug, claimed)
        size_before = await _tree_size(d)
        expect_problem = expect_unlogged_problem  # none of these verifies
        async with d.session("prosecutor") as pro, SignedSession(d.url, stranger) as unknown:
            # Unsigned.
            index = await expect_problem(await send(d, "GET", "/v1/cases", {}), 401,
                                         "signature-missing")
            cases.append(("unsigned", index, "signature-missing", None))

            # A flipped bit in the signature.
            headers, _ = pro.prepare("GET", "/v1/cases")
            raw = headers["Signature"]
            headers["Signature"] = raw[:10] + ("A" if raw[10] != "A" else "B") + raw[11:]
            index = await expect_problem(await send(d, "GET", "/v1/cases", headers), 401,
                                         "signature-invalid")
            cases.append(("bad signature", index, "signature-invalid", "prosecutor"))

            # A key the server does not know.
            index = await expect_problem(await unknown.request("GET", "/v1/cases"), 401,
                                         "unknown-key")
            cases.append(("unknown key", index, "unknown-key", "stranger"))

            # Signed for one path, sent to another.
            headers, _ = pro.prepare("GET", "/v1/cases")
            index = await expect_problem(await send(d, "GET", ENROL_PATH, headers), 401,
                                         "signature-invalid")
            cases.append(("path swap", index, "signature-invalid", "prosecutor"))

            # Signed for another authority: the server uses its own public URL.
            evil = SignedSession("http://evil.example", d.cast["prosecutor"],
                                 session=pro.session)
            headers, _ = evil.prepare("GET", "/v1/cases")
            index = await expect_problem(await send(d, "GET", "/v1/cases", headers), 401,
                                         "signature-invalid")
            cases.append(("other authority", index, "signature-invalid", "prosecutor"))

            # Clock skew, expiry and an over-long lifetime.
            for name, created, expires, slug in (
                ("skew", now - 200, now + 50, "clock-skew"),
                ("future", now + 200, now + 300, "clock-skew"),
                ("expired", now - 50, now - 5, "signature-expired"),
            ):
                headers = pro.sign("GET", "/v1/cases", {}, created=created, expires=expires)
                status = 401
                index = await expect_problem(await send(d, "GET", "/v1/cases", headers),
                                             status, slug)
                cases.append((name, index, slug, "prosecutor"))

            # A header of the profile that the signature does not cover.
            body = json.dumps(bundle_body(stranger)).encode()
            headers = pro.sign("POST", ENROL_PATH, {"Content-Length": str(len(body)),
                                                    "Content-Digest": content_digest(body)})
            headers["Content-Type"] = "application/json"  # after signing: not covered
            index = await expect_problem(await send(d, "POST", ENROL_PATH, headers, body), 400,
                                         "component-missing")
            cases.append(("uncovered header", index, "component-missing", "prosecutor"))

            # A body without a covered Content-Digest.
            headers = pro.sign("POST", ENROL_PATH, {"Content-Type": "application/json",
                                                    "Content-Length": str(len(body))})
            index = await expect_problem(await send(d, "POST", ENROL_PATH, headers, body), 400,
                                         "component-missing")
            cases.append(("no digest", index, "component-missing", "prosecutor"))

        assert await _tree_size(d) == size_before, "an unauthenticated refusal was audited"
        # Counted in the operational log instead (rate-limited per source address).
        logged = [json.loads(line) for line in d.processes[0].lines
                  if "unauthenticated_request_refused" in line]
        assert logged and {e["source"] for e in logged} == {"127.0.0.1"}
        assert {e["reason"] for e in logged} <= {c[2] for c in cases}
        assert len(logged) < len(cases)

    run(scenario())


def test_a_flood_of_unsigned_requests_leaves_the_audit_tree_unchanged(
    sqlite_deployment: Deployment,
) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        before = await _tree_size(d)
        async with aiohttp.ClientSession() as http:
            async def one(i: int) -> int:
                async with http.get(f"{d.url}/v1/cases/case-{i}/evidence") as response:
                    await response.read()
                    assert AUDIT_INDEX_HEADER not in response.headers
                    return response.status

            statuses = await asyncio.gather(*(one(i) for i in range(300)))
        assert set(statuses) == {401}
        assert await _tree_size(d) == before

    run(scenario())


def test_verified_but_refused_requests_name_their_actor(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("admin") as admin:
            # Replay: the very same signed request twice.
            headers, _ = admin.prepare("GET", "/v1/participants")
            first = await send(d, "GET", "/v1/participants", headers)
            assert first.status == 200
            replay = await expect_problem(await send(d, "GET", "/v1/participants", headers),
                                          401, "replayed-nonce")

            # A signature valid for an hour: well signed, but longer than the profile allows.
            now = int(time.time())
            headers = admin.sign("GET", "/v1/participants", {}, created=now, expires=now + 3600)
            lifetime = await expect_problem(await send(d, "GET", "/v1/participants", headers),
                                            401, "signature-lifetime")

            # Digest mismatch: the body is not the one that was signed.
            newcomer = ParticipantIdentity.generate("newcomer")
            signed_body = json.dumps(bundle_body(newcomer)).encode()
            headers, _ = admin.prepare("POST", ENROL_PATH, data=signed_body,
                                       headers={"Content-Type": "application/json"})
            tampered = signed_body.replace(b"coordinator", b"prosecutor!")
            assert len(tampered) == len(signed_body)
            mismatch = await expect_problem(
                await send(d, "POST", ENROL_PATH, headers, tampered), 400, "digest-mismatch")
            listed = await json_of(await admin.request("GET", "/v1/participants"))
            assert "newcomer" not in {p["id"] for p in listed["participants"]}

            # The host header is not part of what is verified: a valid request still passes.
            headers, _ = admin.prepare("GET", "/v1/participants")
            headers["Host"] = "evil.example:1"
            assert (await send(d, "GET", "/v1/participants", headers)).status == 200

        replay_entry, mismatch_entry, lifetime_entry = await entries_at(
            d, [replay, mismatch, lifetime])
        assert lifetime_entry["actor"] == "admin"
        assert lifetime_entry["reason"] == "signature-lifetime"
        assert replay_entry["actor"] == "admin" and replay_entry["reason"] == "replayed-nonce"
        assert replay_entry["request"] is not None
        assert mismatch_entry["actor"] == "admin"
        assert mismatch_entry["reason"] == "digest-mismatch"
        report, _ = await verify_audit_log(d)
        assert report.ok, [str(f) for f in report.findings]

    run(scenario())


def test_expect_continue_refuses_before_the_body(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    host = urlsplit(d.url).netloc

    async def scenario() -> None:
        body = json.dumps(bundle_body(ParticipantIdentity.generate("gated"))).encode()
        base = {"Content-Type": "application/json", "Content-Length": str(len(body)),
                "Expect": "100-continue"}
        # Unsigned: refused with 401 before a single body byte is sent.
        received, sent = await raw_exchange(d.url, request_head("POST", ENROL_PATH, base, host),
                                            body=body)
        assert not sent
        assert received.startswith(b"HTTP/1.1 401"), received[:200]
        assert b"signature-missing" in received and b"Exchange-Audit-Index" not in received

        # Signed by someone who may not enrol: authenticated, so the body may come,
        # and then the operation is refused (403) and logged.
        async with d.session("coordinator") as coord, d.session("admin") as admin:
            headers, _ = coord.prepare("POST", ENROL_PATH, data=body,
                                       headers={"Content-Type": "application/json"})
            headers["Expect"] = "100-continue"
            received, sent = await raw_exchange(
                d.url, request_head("POST", ENROL_PATH, headers, host), body=body)
            assert sent and b"HTTP/1.1 403" in received and b"forbidden" in received

            # A bad signature is refused at the gate too.
            headers, _ = admin.prepare("POST", ENROL_PATH, data=body,
                                       headers={"Content-Type": "application/json"})
            signature = headers["Signature"]  # flip one base64 character of the value itself
            headers["Signature"] = (signature[:12] + ("A" if signature[12] != "A" else "B")
                                    + signature[13:])
            headers["Expect"] = "100-continue"
            received, sent = await raw_exchange(
                d.url, request_head("POST", ENROL_PATH, headers, host), body=body)
            assert not sent and received.startswith(b"HTTP/1.1 401")

            # A valid signed request through aiohttp's own Expect support.
            gated = ParticipantIdentity.generate("gated")
            state = await statements.server_state(admin, d.anchor)
            enrolment = statements.sign(
                state, kind="participant.enrol", chain="directory", issuer="admin",
                key=d.cast["admin"].signing_key, body={
                    "participant": gated.public_bundle().to_json_obj(),
                    "possession": statements.b64(gated.possession_proof()),
                    "role": "coordinator", "organisation": "", "country": ""})
            response = await admin.request(
                "POST", ENROL_PATH, json={"statement": statements.b64(enrolment.encode())},
                expect_continue=True)
            assert response.status == 201, await response.text()
            response.release()

    run(scenario())


def test_limits_and_problem_shape(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    host = urlsplit(d.url).netloc

    async def scenario() -> None:
        async with d.session("admin") as admin:
            # Oversized JSON: refused from Content-Length, before reading it.
            headers = admin.sign("POST", ENROL_PATH, {
                "Content-Type": "application/json", "Content-Length": str(2 * 1024 * 1024),
                "Content-Digest": "sha-256=:" + "A" * 43 + "=:"})
            received, _ = await raw_exchange(d.url, request_head("POST", ENROL_PATH, headers,
                                                                 host))
            assert received.startswith(b"HTTP/1.1 413"), received[:200]
            assert b"request-too-large" in received and b"Exchange-Audit-Index" in received

            # Oversized JSON sent chunked (no Content-Length): cut off at the limit.
            big = b'{"x": "' + b"a" * (1024 * 1024 + 10) + b'"}'

            async def chunks() -> Any:
                for i in range(0, len(big), 65536):
                    yield big[i:i + 65536]

            response = await admin.request("POST", ENROL_PATH, data=chunks(),
                                           digest=content_digest(big),
                                           headers={"Content-Type": "application/json"})
            await expect_problem(response, 413, "request-too-large")

            # Oversized header block.
            headers, _ = admin.prepare("GET", "/v1/participants")
            headers["X-Padding"] = "p" * (20 * 1024)
            received, _ = await raw_exchange(d.url, request_head("GET", "/v1/participants",
                                                                 headers, host))
            status = int(received.split(b" ", 2)[1])
            assert status in (400, 431), received[:200]

            # Unknown routes and methods are problems too.
            async with aiohttp.ClientSession() as http:
                for method, path, status, slug in (
                    ("GET", "/v1/nothing-here", 404, "not-found"),
                    ("DELETE", "/v1/participants", 405, "method-not-allowed"),
                ):
                    async with http.request(method, d.url + path) as response:
                        assert response.status == status
                        assert response.content_type == "application/problem+json"
                        problem = await response.json(content_type=None)
                        assert problem["type"].endswith("/" + slug)
                        assert set(problem) == {"type", "title", "status", "detail"}

    run(scenario())


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Two ``serve`` processes on one PostgreSQL database and one public URL."""
    base: Path = tmp_path_factory.mktemp("two-processes")
    with deployed(base, "postgres", processes=2,
                  extra_args=("--public-url", "https://exchange.test")) as d:
        yield d


def test_replay_across_two_processes_on_postgres(two_processes: Deployment) -> None:
    d = two_processes

    async def scenario() -> None:
        async with d.session("admin", process=0) as first:
            headers, _ = first.prepare("GET", "/v1/participants")
            response = await first.session.get(d.processes[0].url + "/v1/participants",
                                               headers=headers)
            assert response.status == 200
            response.release()
            response = await first.session.get(d.processes[1].url + "/v1/participants",
                                               headers=headers)
            index = await expect_problem(response, 401, "replayed-nonce")
        (entry,) = await entries_at(d, [index])
        assert entry["actor"] == "admin" and entry["outcome"] == "denied"
        async with d.session("prosecutor", process=1) as other:
            response = await other.request("GET", "/v1/cases")
            assert response.status == 200
            response.release()
        report, _ = await verify_audit_log(d)
        assert report.ok, [str(f) for f in report.findings]

    run(scenario())
