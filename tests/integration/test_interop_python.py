"""Independent Python clients against a real server: tuspy and http-message-signatures.

Nobody here wrote them: ``tuspy`` uploads through the signing hook
(``exchange.client.httpauth``), is interrupted after one chunk and resumed by
a fresh uploader from the server's offset; pyauth's ``http-message-signatures``
signs requests (covering more than our profile, ``@authority`` included) that
the server accepts, and verifies the requests our own hook produces.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import random
import secrets
from collections.abc import Iterator
from pathlib import Path

import http_message_signatures as hms
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tusclient import client as tusclient
from tusclient import exceptions as tus_errors

from exchange.client.httpauth import SignatureAuth, requests_signing
from exchange.wire.httpsig import content_digest
from tests import statements
from tests.integration.test_server_evidence import deployed_with, new_case
from tests.server_harness import Deployment, run

MIB = 1024 * 1024
LIMITS = {"max_chunk_bytes": 1 * MIB, "max_concurrent_uploads": 3}


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed_with(tmp_path_factory.mktemp("interop"), "sqlite", LIMITS) as d:
        yield d


def _case(dep: Deployment) -> str:
    async def make() -> str:
        async with dep.session("prosecutor") as pro:
            case_id, _ = await new_case(dep, pro)
            return case_id
    return run(make())


def _commit(dep: Deployment, url: str, data: bytes, case_id: str) -> dict[str, object]:
    path = url[len(dep.url):]

    async def commit() -> dict[str, object]:
        async with dep.session("prosecutor") as pro:
            head = await statements.case_head(pro, dep.anchor, case_id)
            return await pro.commit_upload(path, sealed_manifest=b"m", epoch=1,
                                           ciphertext_sha256=hashlib.sha256(data).hexdigest(),
                                           case_head=head)
    return run(commit())


def test_tuspy_uploads_interrupted_and_resumed_through_the_signing_hook(
    dep: Deployment, tmp_path: Path,
) -> None:
    case_id = _case(dep)
    data = random.Random(16).randbytes(3 * MIB + 77)
    source = tmp_path / "evidence.age"
    source.write_bytes(data)
    auth = SignatureAuth(dep.cast["prosecutor"])
    client = tusclient.TusClient(f"{dep.url}/v1/cases/{case_id}/uploads")
    with requests_signing(auth):
        first = client.uploader(str(source), chunk_size=MIB, metadata={"name": "e.age"})
        first.upload_chunk()  # then the process "dies": only one chunk went out
        assert first.offset == MIB
        url = first.url
        resumed = client.uploader(str(source), chunk_size=MIB, url=url)
        assert resumed.get_offset() == MIB  # HEAD, signed
        resumed.upload()
        assert resumed.offset == len(data)
    record = _commit(dep, url, data, case_id)
    assert record["ciphertext_size"] == len(data)


def test_tuspy_default_chunking_gets_a_clear_413(dep: Deployment, tmp_path: Path) -> None:
    """tuspy's default chunk is the whole file: over the limit it gets 413 with the limit."""
    case_id = _case(dep)
    source = tmp_path / "big.age"
    source.write_bytes(bytes(MIB + 1))
    client = tusclient.TusClient(f"{dep.url}/v1/cases/{case_id}/uploads")
    with requests_signing(SignatureAuth(dep.cast["prosecutor"])):
        uploader = client.uploader(str(source))
        with pytest.raises(tus_errors.TusCommunicationError) as caught:
            uploader.upload()
    assert caught.value.status_code == 413
    problem = json.loads(caught.value.response_content)
    assert problem["max_bytes"] == MIB and str(MIB) in problem["detail"]


def _pyauth_signer(identity_key: bytes, keyid: str) -> object:
    key = Ed25519PrivateKey.from_private_bytes(identity_key)
    resolver = hms.resolvers.MappingKeyResolver(public_keys={keyid: key.public_key()},
                                                private_keys={keyid: key})
    return resolver


def test_pyauth_signed_requests_are_accepted(dep: Deployment) -> None:
    """pyauth's signer, with its default components (@method @authority @target-uri)
    and a proxy's second signature in front: the server verifies ours and answers."""
    identity = dep.cast["prosecutor"]
    resolver = _pyauth_signer(bytes(identity.signing_key), identity.id)
    signer = hms.HTTPMessageSigner(signature_algorithm=hms.algorithms.ED25519,
                                   key_resolver=resolver)
    now = datetime.datetime.now(datetime.UTC)
    request = requests.Request("GET", f"{dep.url}/v1/participants/{identity.id}").prepare()
    signer.sign(request, key_id=identity.id, created=now,
                expires=now + datetime.timedelta(seconds=60), nonce=secrets.token_hex(12),
                label="client")
    response = requests.Session().send(request, timeout=10)
    assert response.status_code == 200, response.text

    # A body: pyauth computes and covers Content-Digest itself.
    body = b'{"participant": "x"}'
    post = requests.Request("POST", f"{dep.url}/v1/cases/no-such-case/members", data=body,
                            headers={"Content-Type": "application/json"}).prepare()
    signer.sign(post, key_id=identity.id, created=now, nonce=secrets.token_hex(12),
                expires=now + datetime.timedelta(seconds=60), label="client", body=body,
                covered_component_ids=("@method", "@authority", "@target-uri",
                                       "content-type", "content-length"))
    # A proxy adds its own (HMAC) signature: RFC 9421 §4.3.
    post.headers["Signature-Input"] += ', proxy=("@method");created=1;keyid="p";alg="hmac-sha256"'
    post.headers["Signature"] += ", proxy=:AAAA:"
    answer = requests.Session().send(post, timeout=10)
    # Authenticated (the case does not exist), not a signature refusal.
    assert answer.status_code == 403, answer.text  # as any case the caller may not see


def test_requests_auth_signs_plain_calls(dep: Deployment) -> None:
    auth = SignatureAuth(dep.cast["prosecutor"])
    listed = requests.get(f"{dep.url}/v1/cases", auth=auth, timeout=10)
    assert listed.status_code == 200, listed.text
    assert isinstance(listed.json()["cases"], list)
    # A JSON body: the hook adds and covers its Content-Digest.
    refused = requests.post(f"{dep.url}/v1/cases/no-such-case/members", auth=auth,
                            json={"participant": "x", "envelope": "AAAA"}, timeout=10)
    # Authenticated; an unknown case answers as one the caller may not see (403).
    assert refused.status_code == 403, refused.text
    assert refused.json()["type"].rsplit("/", 1)[1] not in (
        "signature-invalid", "digest-missing", "component-missing", "signature-missing")


def test_unsigned_request_gets_a_challenge(dep: Deployment) -> None:
    response = requests.get(f"{dep.url}/v1/cases", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Signature ")
    accept = response.headers["Accept-Signature"]
    assert accept.startswith('sig1=("@method" "@target-uri")')
    for param in ("keyid", "created", "expires", "nonce"):
        assert f";{param}" in accept


def test_our_hook_is_verified_by_pyauth(dep: Deployment) -> None:
    identity = dep.cast["prosecutor"]
    resolver = _pyauth_signer(bytes(identity.signing_key), identity.id)
    verifier = hms.HTTPMessageVerifier(signature_algorithm=hms.algorithms.ED25519,
                                       key_resolver=resolver)
    body = b"some ciphertext bytes"
    request = requests.Request("PATCH", "https://exchange.example/v1/uploads/u1", data=body,
                               headers={"Content-Type": "application/offset+octet-stream",
                                        "Upload-Offset": "0",
                                        "Tus-Resumable": "1.0.0"}).prepare()
    SignatureAuth(identity)(request)
    assert request.headers["Content-Digest"] == content_digest(body)
    results = verifier.verify(request, body=body, require_components=(
        "@method", "@target-uri", "content-digest", "content-type", "upload-offset"))
    assert [r.label for r in results] == ["sig1"]
    request.headers["Upload-Offset"] = "1"
    with pytest.raises(hms.InvalidSignature):
        verifier.verify(request, body=body)
