"""Schema-driven fuzzing of the API with schemathesis against ``/v1/openapi.json``.

Every generated request is signed (RFC 9421, with Content-Digest for bodies)
by an enrolled participant — the auditor for audit routes, a prosecutor who
owns a case for the rest — so the fuzzing gets past authentication into the
handlers. Path parameters are often replaced by ids that exist (the case, a
member, a low audit index) so the handlers' deeper branches run too. Every
answer must be non-5xx and conform to the document: documented status,
content type, and body schema (problem+json on errors). Bounded and
derandomized: a few examples per operation.
"""

from __future__ import annotations

import os
import secrets
import time
from typing import Any

import hypothesis
import hypothesis.strategies as st
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from exchange.crypto.keys import ParticipantIdentity
from exchange.errors import CryptoError
from exchange.transport.auth import COVERED_HEADERS
from exchange.wire.httpsig import content_digest, sign_request
from tests.integration.test_server_cases import add_member, create_case, new_case_id
from tests.server_harness import Deployment, run

# CI runs a bounded, derandomized pass; a developer can explore further with e.g.
# EXCHANGE_FUZZ_EXAMPLES=200 EXCHANGE_FUZZ_RANDOM=1 pytest tests/integration/test_server_fuzz.py
EXAMPLES_PER_OPERATION = int(os.environ.get("EXCHANGE_FUZZ_EXAMPLES", "15"))
DERANDOMIZE = not os.environ.get("EXCHANGE_FUZZ_RANDOM")
# tus PATCH bodies are raw bytes: small random chunks.
schemathesis.openapi.media_type("application/offset+octet-stream", st.binary(max_size=64))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def signed(prepared: requests.PreparedRequest, base_url: str,
           identity: ParticipantIdentity) -> requests.PreparedRequest:
    """Sign ``prepared`` in place per the server's profile (Content-Digest for bodies)."""
    body = prepared.body
    if isinstance(body, str):
        body = body.encode("utf-8")
        prepared.body = body
    headers = prepared.headers
    if body:
        headers["Content-Digest"] = content_digest(body)
        headers["Content-Length"] = str(len(body))
    present = {name.lower() for name in headers}
    covered = ["@method", "@target-uri", *(h for h in COVERED_HEADERS if h in present)]
    now = int(time.time())
    try:
        signature_input, signature = sign_request(
            method=str(prepared.method).upper(), target_uri=base_url + str(prepared.path_url),
            headers=dict(headers), covered_components=covered, key=identity.signing_key,
            keyid=identity.id, created=now, expires=now + 60, nonce=secrets.token_urlsafe(18),
        )
    except CryptoError:
        # A header value no signature can cover (not printable ASCII): send it
        # unsigned, which exercises the refusal path instead.
        return prepared
    headers["Signature-Input"] = signature_input
    headers["Signature"] = signature
    return prepared


def _known(case: Any, ids: dict[str, str]) -> None:
    for name in list(case.path_parameters or {}):
        if name in ids:
            case.path_parameters[name] = ids[name]
    if case.query and "wait" in case.query:
        case.query["wait"] = 0  # a valid value that keeps the run bounded


def _fuzzer(operation: Any, base_url: str, identity: ParticipantIdentity, ids: dict[str, str],
            http: requests.Session, statuses: list[int]) -> Any:
    """Return the bounded hypothesis test of one operation."""

    @hypothesis.settings(
        max_examples=EXAMPLES_PER_OPERATION, derandomize=DERANDOMIZE, deadline=None,
        database=None, suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=operation.as_strategy(), use_known=st.booleans())
    def check(case: Any, use_known: bool) -> None:
        if use_known:
            _known(case, ids)
        elif case.query and "wait" in case.query:
            case.query["wait"] = 0
        kwargs = case.as_transport_kwargs(base_url=base_url)
        request = requests.Request(
            method=kwargs["method"], url=kwargs["url"], headers=kwargs.get("headers"),
            params=kwargs.get("params"), json=kwargs.get("json"), data=kwargs.get("data"),
        ).prepare()
        response = http.send(signed(request, base_url, identity), timeout=30)
        statuses.append(response.status_code)
        case.validate_response(response, checks=CHECKS)

    return check


def test_schemathesis_finds_no_5xx_or_contract_violation(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    case_id = new_case_id()

    async def seed() -> None:
        async with d.session("prosecutor") as pro:
            key = await create_case(pro, d.cast["prosecutor"], case_id)
            await add_member(pro, case_id, key, d.cast["coordinator"])

    run(seed())
    ids = {"cid": case_id, "pid": "coordinator", "n": "1", "index": "2", "level": "0",
           "s1": "000.p", "s2": "1"}
    schema = schemathesis.openapi.from_url(d.url + "/v1/openapi.json")
    http = requests.Session()
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        identity = d.cast["auditor" if "/audit/" in operation.path else "prosecutor"]

        check = _fuzzer(operation, d.url, identity, ids, http, statuses)
        try:
            check()
        except Exception as err:  # collect every operation's failure, then report all
            failures.append(f"{operation.method.upper()} {operation.path}: {err}"[:2000])
    assert operations >= 20
    # The signatures worked: most answers come from handlers, some of them successes.
    assert sum(200 <= s < 300 for s in statuses) >= operations // 2, statuses
    assert sum(s == 401 for s in statuses) < len(statuses) // 4, statuses
    assert not failures, "\n\n".join(failures)
