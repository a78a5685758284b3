"""RFC 9421 Appendix B and RFC 9530 examples, read in place from the shared vectors.

Every signature base of B.2.x is rebuilt from the test messages and compared
byte for byte (base construction does not depend on the algorithm); the
non-Ed25519 signatures are then checked against *our* base with cryptography,
which proves the base independently of the printed text. Ed25519 (B.2.6 and
the B.4 transformations) goes through ``verify_request`` itself.
"""

from __future__ import annotations

import base64
import json
from functools import cache
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from exchange.wire.httpsig import (
    ContentDigestVerifier,
    DigestMismatch,
    SignatureInvalid,
    StructuredFieldError,
    content_digest,
    parse_content_digest,
    parse_signature,
    parse_signature_input,
    resolve_components,
    sign_request,
    signature_base,
    verify_request,
)
from tests.support import vectors_dir

B2_IDS = ["B.2.1", "B.2.2", "B.2.3", "B.2.4", "B.2.5", "B.2.6"]
ED25519_KEY = "test-key-ed25519"


@cache
def _load() -> dict[str, Any]:
    path = vectors_dir("http-signatures") / "rfc9421.json"
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    return data


@pytest.fixture
def rfc9421() -> dict[str, Any]:
    return _load()["rfc9421"]


@pytest.fixture
def rfc9530() -> dict[str, Any]:
    return _load()["rfc9530"]


def _example(rfc9421: dict[str, Any], example_id: str) -> dict[str, Any]:
    [example] = [e for e in rfc9421["signature_examples"] if e["id"] == example_id]
    return example


def _headers(message: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in message["headers"]]


def _covered(rfc9421: dict[str, Any], example: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """Resolve the example's components against its message, as a verifier would."""
    member = parse_signature_input(example["signature_input_header"])[example["label"]]
    message = rfc9421["messages"][example["message"]]
    headers = _headers(message)
    if example["message"] == "test-response":
        # Erratum (FORMAT.md, specs/http.md): B.2 prints a wrong Content-Digest for the
        # response; the B.2.4 signature base uses the real sha-512 of the body.
        headers = [
            (n, "sha-512=" + message["body_sha512_computed"] if n == "Content-Digest" else v)
            for n, v in headers
        ]
        return resolve_components(member.components, headers=headers, status=message["status"])
    return resolve_components(
        member.components,
        method=message["method"],
        target_uri=message["url_for_libraries"],
        headers=headers,
    )


def _ed25519_public(rfc9421: dict[str, Any]) -> bytes:
    return bytes.fromhex(rfc9421["keys"][ED25519_KEY]["derived_not_in_rfc"]["public_key_hex"])


def _ed25519_seed(rfc9421: dict[str, Any]) -> bytes:
    return bytes.fromhex(rfc9421["keys"][ED25519_KEY]["derived_not_in_rfc"]["private_seed_hex"])


def test_all_b2_examples_present(rfc9421: dict[str, Any]) -> None:
    assert sorted(e["id"] for e in rfc9421["signature_examples"]) == B2_IDS


def test_derived_raw_ed25519_key_matches_pem(rfc9421: dict[str, Any]) -> None:
    key = rfc9421["keys"][ED25519_KEY]
    private = serialization.load_pem_private_key(key["private_key_pem"].encode(), None)
    assert isinstance(private, ed25519.Ed25519PrivateKey)
    assert private.private_bytes_raw() == _ed25519_seed(rfc9421)
    assert private.public_key().public_bytes_raw() == _ed25519_public(rfc9421)


@pytest.mark.parametrize("example_id", B2_IDS)
def test_signature_input_round_trips(rfc9421: dict[str, Any], example_id: str) -> None:
    example = _example(rfc9421, example_id)
    members = parse_signature_input(example["signature_input_header"])
    assert list(members) == [example["label"]]
    member = members[example["label"]]
    assert member.serialize() == example["signature_input_header"]
    assert member.signature_params == example["signature_params_serialized"]
    assert [c.serialize() for c in member.components] == example["covered_components"]
    for name, value in example["signature_params"].items():
        assert getattr(member.params, name) == value
    signature = parse_signature(example["signature_header"])[example["label"]]
    assert signature == base64.b64decode(example["signature_base64"])


@pytest.mark.parametrize("example_id", B2_IDS)
def test_signature_base_reproduced(rfc9421: dict[str, Any], example_id: str) -> None:
    example = _example(rfc9421, example_id)
    member = parse_signature_input(example["signature_input_header"])[example["label"]]
    base = signature_base(_covered(rfc9421, example), member.signature_params)
    assert base == example["signature_base"].encode("ascii")


@pytest.mark.parametrize("example_id", ["B.2.1", "B.2.2", "B.2.3", "B.2.4", "B.2.5"])
def test_other_algorithm_signature_verifies_over_our_base(
    rfc9421: dict[str, Any], example_id: str
) -> None:
    example = _example(rfc9421, example_id)
    member = parse_signature_input(example["signature_input_header"])[example["label"]]
    base = signature_base(_covered(rfc9421, example), member.signature_params)
    signature = base64.b64decode(example["signature_base64"])
    key = rfc9421["keys"][example["key_id"]]
    algorithm = example["algorithm"]
    if algorithm == "hmac-sha256":
        mac = hmac.HMAC(base64.b64decode(key["secret_base64"]), hashes.SHA256())
        mac.update(base)
        mac.verify(signature)
        return
    public = serialization.load_pem_public_key(key["public_key_pem"].encode())
    if algorithm == "ecdsa-p256-sha256":
        assert isinstance(public, ec.EllipticCurvePublicKey)
        r, s = int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        public.verify(encode_dss_signature(r, s), base, ec.ECDSA(hashes.SHA256()))
    else:
        assert algorithm == "rsa-pss-sha512"
        assert isinstance(public, rsa.RSAPublicKey)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA512()), salt_length=64)
        public.verify(signature, base, pss, hashes.SHA512())


def test_b26_verifies(rfc9421: dict[str, Any]) -> None:
    example = _example(rfc9421, "B.2.6")
    message = rfc9421["messages"]["test-request"]
    headers = [
        *_headers(message),
        ("Signature-Input", example["signature_input_header"]),
        ("Signature", example["signature_header"]),
    ]
    verified = verify_request(
        method=message["method"],
        target_uri=message["url_for_libraries"],
        headers=headers,
        public_key_lookup={ED25519_KEY: _ed25519_public(rfc9421)}.get,
        now=example["signature_params"]["created"],  # the vectors date from 2021
        max_skew_s=0,
        required_components=[c.strip('"') for c in example["covered_components"]],
        require_expires=False,
        require_nonce=False,
    )
    assert verified.label == "sig-b26"
    assert verified.keyid == ED25519_KEY
    assert verified.nonce is None
    assert verified.signature == base64.b64decode(example["signature_base64"])
    # The audit verifier's path: the base from the evidence alone.
    params_value = verified.signature_input_member.split("=", 1)[1]
    assert signature_base(verified.covered, params_value) == example["signature_base"].encode()
    assert verified.signature_input_member == example["signature_input_header"]
    assert verified.signature_member == example["signature_header"]


def test_b26_resigning_gives_the_same_signature(rfc9421: dict[str, Any]) -> None:
    example = _example(rfc9421, "B.2.6")
    message = rfc9421["messages"]["test-request"]
    signature_input, signature = sign_request(
        method=message["method"],
        target_uri=message["url_for_libraries"],
        headers=_headers(message),
        covered_components=[c.strip('"') for c in example["covered_components"]],
        key=_ed25519_seed(rfc9421),
        keyid=ED25519_KEY,
        created=example["signature_params"]["created"],
        label=example["label"],
        include_alg=False,
    )
    assert signature_input == example["signature_input_header"]
    assert signature == example["signature_header"]


def _transformations(rfc9421: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = rfc9421["transformations"]
    return result


def test_b4_has_six_variants(rfc9421: dict[str, Any]) -> None:
    variants = _transformations(rfc9421)["variants"]
    assert [v["signature_valid"] for v in variants] == [True, True, True, True, False, False]


@pytest.mark.parametrize("index", range(6))
def test_b4_transformation(rfc9421: dict[str, Any], index: int) -> None:
    transformations = _transformations(rfc9421)
    variant = transformations["variants"][index]
    method, target, _ = variant["start_line"].split(" ")
    headers = _headers(variant)
    [host] = [v for n, v in headers if n.lower() == "host"]

    def verify() -> None:
        verify_request(
            method=method,
            target_uri=f"https://{host}{target}",
            headers=headers,
            public_key_lookup={ED25519_KEY: _ed25519_public(rfc9421)}.get,
            now=1618884473,
            max_skew_s=0,
            required_components=["@method", "@path", "@authority", "accept"],
            require_expires=False,
            require_nonce=False,
        )

    if variant["signature_valid"]:
        verify()
    else:
        with pytest.raises(SignatureInvalid):
            verify()


def test_b4_original_base(rfc9421: dict[str, Any]) -> None:
    transformations = _transformations(rfc9421)
    variant = transformations["variants"][0]
    member = parse_signature_input(transformations["signature_input_header"])["transform"]
    covered = resolve_components(
        member.components,
        method="GET",
        target_uri="https://example.org/demo?name1=Value1&Name2=value2",
        headers=_headers(variant),
    )
    assert signature_base(covered, member.signature_params) == (
        transformations["signature_base"].encode()
    )


# RFC 9530 -------------------------------------------------------------------------------------


def test_rfc9530_examples_with_body_verify(rfc9530: dict[str, Any]) -> None:
    checked = 0
    for example in rfc9530["examples"]:
        if "body" not in example:
            continue
        body = example["body"].encode()
        verifier = ContentDigestVerifier(example["field_value"], require_sha256=False)
        for i in range(0, len(body) + 1, 4):  # incremental, in uneven chunks
            verifier.update(body[i : i + 4])
        verifier.verify()
        if example["field_value"].startswith("sha-256="):
            assert content_digest(body) == example["field_value"]
        checked += 1
    assert checked == 4


def test_rfc9530_two_algorithm_example_is_the_brotli_digest(rfc9530: dict[str, Any]) -> None:
    # Erratum: the sha-256 member printed in §2 (d435Qo...) is not the digest of the plain
    # JSON body, so checking that body against it must fail on sha-256 and only sha-256.
    [example] = [e for e in rfc9530["examples"] if "body" not in e]
    assert sorted(parse_content_digest(example["field_value"])) == ["sha-256", "sha-512"]
    verifier = ContentDigestVerifier(example["field_value"])
    verifier.update(b'{"hello": "world"}\n')
    with pytest.raises(DigestMismatch, match="sha-256") as caught:
        verifier.verify()
    assert "sha-512" not in str(caught.value)


def test_rfc9530_overpadded_typo_is_rejected(rfc9530: dict[str, Any]) -> None:
    [good] = [e for e in rfc9530["examples"] if e["section"] == "B.1"]
    assert good["field_value"].endswith("=:")
    typo = good["field_value"][:-1] + "=:"  # RK/0...FabDg==: as printed in B.5, B.6, B.10, C.1
    with pytest.raises(StructuredFieldError, match="canonical"):
        ContentDigestVerifier(typo)


def test_rfc9530_appendix_d_ignores_deprecated_algorithms(rfc9530: dict[str, Any]) -> None:
    sample = rfc9530["sample_digest_values_appendix_D"]
    field = ", ".join(f"{alg}={sample[alg]}" for alg in ("md5", "sha", "sha-256", "sha-512"))
    verifier = ContentDigestVerifier(field)
    assert verifier.algorithms == ("sha-256", "sha-512")
    verifier.update(sample["input"].encode())
    verifier.verify()
    assert content_digest(sample["input"].encode()) == "sha-256=" + sample["sha-256"]


def test_rfc9421_message_digests(rfc9421: dict[str, Any]) -> None:
    request = rfc9421["messages"]["test-request"]
    [request_digest] = [v for n, v in _headers(request) if n == "Content-Digest"]
    verifier = ContentDigestVerifier(request_digest, require_sha256=False)
    verifier.update(request["body"].encode())
    verifier.verify()
    response = rfc9421["messages"]["test-response"]
    [printed] = [v for n, v in _headers(response) if n == "Content-Digest"]
    wrong = ContentDigestVerifier(printed, require_sha256=False)  # the B.2 erratum
    wrong.update(response["body"].encode())
    with pytest.raises(DigestMismatch):
        wrong.verify()
    corrected = "sha-512=" + response["body_sha512_computed"]
    right = ContentDigestVerifier(corrected, require_sha256=False)
    right.update(response["body"].encode())
    right.verify()
