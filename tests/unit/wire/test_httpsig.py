"""Our RFC 9421 profile: sign → verify, and each way a request can fail verification."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from nacl.signing import SigningKey

from exchange.errors import CryptoError
from exchange.wire import httpsig
from exchange.wire.httpsig import (
    ClockSkew,
    ComponentId,
    ComponentMissing,
    ContentDigestVerifier,
    DigestMismatch,
    DigestMissing,
    HttpSigError,
    SignatureAmbiguous,
    SignatureBaseError,
    SignatureExpired,
    SignatureInputMember,
    SignatureInvalid,
    SignatureMissing,
    SignatureParams,
    SignatureParamsInvalid,
    StructuredFieldError,
    UnknownKey,
    UnsupportedAlgorithm,
    UnsupportedComponent,
    VerifiedSignature,
    content_digest,
    parse_signature_input,
    resolve_components,
    select_signature,
    sign_request,
    signature_base,
    verify_request,
)

KEY = SigningKey(bytes(range(32)))
OTHER_KEY = SigningKey(bytes(range(1, 33)))
KEYID = "p-alice"
NOW = 1_800_000_000
SKEW_S = 60
URI = "https://exchange.example/v1/uploads/abc"
BODY = b"ciphertext chunk"
PROFILE = ["@method", "@target-uri", "content-type", "content-length", "content-digest"]


def _lookup(keyid: str) -> bytes | None:
    return bytes(KEY.verify_key) if keyid == KEYID else None


def _request(
    *,
    covered: list[str] | None = None,
    key: SigningKey = KEY,
    created: int = NOW,
    expires: int | None = NOW + 300,
    nonce: str | None = "n0nce-1",
    label: str = "sig1",
    tag: str | None = "exchange",
) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", "application/offset+octet-stream"),
        ("Content-Length", str(len(BODY))),
        ("Content-Digest", content_digest(BODY)),
    ]
    signature_input, signature = sign_request(
        method="PATCH",
        target_uri=URI,
        headers=headers,
        covered_components=PROFILE if covered is None else covered,
        key=key,
        keyid=KEYID,
        created=created,
        expires=expires,
        nonce=nonce,
        label=label,
        tag=tag,
    )
    return [*headers, ("Signature-Input", signature_input), ("Signature", signature)]


def _verify(headers: list[tuple[str, str]], **overrides: Any) -> VerifiedSignature:
    kwargs: dict[str, Any] = {
        "method": "PATCH",
        "target_uri": URI,
        "headers": headers,
        "public_key_lookup": _lookup,
        "now": NOW,
        "max_skew_s": SKEW_S,
        "required_components": PROFILE,
        "expected_tag": "exchange",
        "body": BODY,
    }
    kwargs.update(overrides)
    return verify_request(**kwargs)


def _replace(headers: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(n, value if n.lower() == name else v) for n, v in headers]


def _without(headers: list[tuple[str, str]], name: str) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n.lower() != name]


def _field(headers: list[tuple[str, str]], name: str) -> str:
    [value] = [v for n, v in headers if n.lower() == name]
    return value


# Round trip ---------------------------------------------------------------------------------


def test_sign_verify_round_trip() -> None:
    headers = _request()
    verified = _verify(headers)
    assert verified.label == "sig1"
    assert verified.keyid == KEYID
    assert verified.nonce == "n0nce-1"
    assert verified.params == SignatureParams(
        created=NOW, expires=NOW + 300, keyid=KEYID, nonce="n0nce-1", alg="ed25519", tag="exchange"
    )
    assert [c.name for c in verified.components] == PROFILE
    assert verified.covered[:2] == (('"@method"', "PATCH"), ('"@target-uri"', URI))
    assert verified.signature_input_member == _field(headers, "signature-input")
    assert verified.signature_member == _field(headers, "signature")
    assert _field(headers, "signature-input") == (
        'sig1=("@method" "@target-uri" "content-type" "content-length" "content-digest")'
        f';created={NOW};expires={NOW + 300};keyid="{KEYID}";nonce="n0nce-1"'
        ';alg="ed25519";tag="exchange"'
    )


def test_evidence_alone_rebuilds_a_verifiable_base() -> None:
    """The audit verifier sees only the stored evidence, never the original request."""
    verified = _verify(_request())
    label, params_value = verified.signature_input_member.split("=", 1)
    assert label == verified.label
    base = signature_base(verified.covered, params_value)
    KEY.verify_key.verify(base, verified.signature)
    signature_b64 = verified.signature_member.split("=", 1)[1].strip(":")
    assert base64.b64decode(signature_b64) == verified.signature


def test_verify_accepts_mapping_headers_and_verify_key() -> None:
    headers = dict(_request())
    verified = _verify(headers, public_key_lookup={KEYID: KEY.verify_key}.get)
    assert verified.keyid == KEYID


def test_header_names_are_case_insensitive() -> None:
    headers = [(n.upper(), v) for n, v in _request()]
    _verify(headers)


def test_streamed_body_checked_after_signature() -> None:
    headers = _request()
    _verify(headers, body=None)
    verifier = ContentDigestVerifier(_field(headers, "content-digest"))
    for i in range(len(BODY)):
        verifier.update(BODY[i : i + 1])
    verifier.verify()


def test_head_style_request_without_body() -> None:
    headers_in: list[tuple[str, str]] = []
    signature_input, signature = sign_request(
        method="HEAD", target_uri=URI, headers=headers_in,
        covered_components=["@method", "@target-uri"], key=KEY.encode(), keyid=KEYID,
        created=NOW, expires=NOW + 300, nonce="n2",
    )
    headers = [("Signature-Input", signature_input), ("Signature", signature)]
    verified = _verify(
        headers, method="HEAD", body=None, expected_tag=None,
        required_components=["@method", "@target-uri"],
    )
    assert verified.covered == (('"@method"', "HEAD"), ('"@target-uri"', URI))


def test_select_signature_exposes_keyid_before_lookup() -> None:
    member, signature = select_signature(_request())
    assert member.params.keyid == KEYID
    assert len(signature) == 64


# Failures: each names its exception -------------------------------------------------------


def test_required_component_not_covered() -> None:
    headers = _request(covered=PROFILE[:-1])
    with pytest.raises(ComponentMissing, match="content-digest"):
        _verify(headers)


def test_covered_field_absent_from_request() -> None:
    headers = _without(_request(), "content-type")
    with pytest.raises(ComponentMissing, match="content-type"):
        _verify(headers)


def test_more_components_than_required_are_accepted_and_checked() -> None:
    """A superset of the profile (pyauth's default adds @authority) verifies, and the
    extra component is part of what was checked: another authority fails."""
    headers = _request(covered=[*PROFILE, "@authority"])
    verified = _verify(headers)
    assert ('"@authority"', "exchange.example") in verified.covered
    with pytest.raises(SignatureInvalid):
        _verify(headers, target_uri="https://other.example/v1/uploads/abc")


def test_several_signatures_ours_is_chosen_by_label() -> None:
    """RFC 9421 §4.3: a proxy's signature next to ours; ours (sig1) is the one verified,
    wherever it sits in the fields."""
    ours = _request()
    proxy = _request(key=OTHER_KEY, label="proxy", covered=["@method", "@target-uri"])
    inputs = f"{_field(proxy, 'signature-input')}, {_field(ours, 'signature-input')}"
    sigs = f"{_field(proxy, 'signature')}, {_field(ours, 'signature')}"
    both = [*_without(_without(ours, "signature-input"), "signature"),
            ("Signature-Input", inputs), ("Signature", sigs)]
    assert _verify(both).label == "sig1"


def test_several_signatures_first_fitting_profile_is_used() -> None:
    """Without our label, the first signature shaped like the profile is verified; one
    with another algorithm is skipped, one that does not verify is refused."""
    ours = _request(label="client")
    other = [("Signature-Input", 'hmac=("@method");created=1;keyid="k";alg="hmac-sha256"'),
             ("Signature", "hmac=:AAAA:")]
    mixed = [*_without(_without(ours, "signature-input"), "signature"),
             ("Signature-Input", f"{other[0][1]}, {_field(ours, 'signature-input')}"),
             ("Signature", f"{other[1][1]}, {_field(ours, 'signature')}")]
    assert _verify(mixed).label == "client"
    forged = _request(key=OTHER_KEY, label="first")
    wrong_first = [*_without(_without(ours, "signature-input"), "signature"),
                   ("Signature-Input", f"{_field(forged, 'signature-input')}, "
                                       f"{_field(ours, 'signature-input')}"),
                   ("Signature", f"{_field(forged, 'signature')}, {_field(ours, 'signature')}")]
    with pytest.raises(SignatureInvalid):
        _verify(wrong_first)
    two_hmac = [("Signature-Input", f"{other[0][1]}, h2=(\"@method\");alg=\"hmac-sha256\""),
                ("Signature", f"{other[1][1]}, h2=:AAAA:")]
    with pytest.raises(SignatureAmbiguous, match="fits the ed25519 profile"):
        _verify([*ours[:3], *two_hmac])


def test_wrong_method() -> None:
    with pytest.raises(SignatureInvalid):
        _verify(_request(), method="POST")


def test_wrong_target_uri() -> None:
    with pytest.raises(SignatureInvalid):
        _verify(_request(), target_uri=URI + "x")


def test_tampered_covered_field() -> None:
    headers = _replace(_request(), "content-type", "application/json")
    with pytest.raises(SignatureInvalid):
        _verify(headers, body=None)


def test_tampered_signature_params() -> None:
    headers = _request()
    tampered = _field(headers, "signature-input").replace('nonce="n0nce-1"', 'nonce="n0nce-2"')
    with pytest.raises(SignatureInvalid):
        _verify(_replace(headers, "signature-input", tampered))


@pytest.mark.parametrize("bit", [0, 7, 255, 511])
def test_tampered_signature(bit: int) -> None:
    headers = _request()
    _, signature = select_signature(headers)
    flipped = bytearray(signature)
    flipped[bit // 8] ^= 1 << (bit % 8)
    value = "sig1=:" + base64.b64encode(bytes(flipped)).decode() + ":"
    with pytest.raises(SignatureInvalid):
        _verify(_replace(headers, "signature", value))


def test_truncated_signature() -> None:
    headers = _request()
    _, signature = select_signature(headers)
    value = "sig1=:" + base64.b64encode(signature[:63]).decode() + ":"
    with pytest.raises(SignatureInvalid):
        _verify(_replace(headers, "signature", value))


def test_signed_by_another_key() -> None:
    with pytest.raises(SignatureInvalid):
        _verify(_request(key=OTHER_KEY))


def test_body_digest_mismatch() -> None:
    with pytest.raises(DigestMismatch):
        _verify(_request(), body=BODY + b"!")


def test_digest_field_without_sha256() -> None:
    sha512_only = "sha-512=:" + base64.b64encode(bytes(64)).decode() + ":"
    with pytest.raises(DigestMissing):
        ContentDigestVerifier(sha512_only)
    with pytest.raises(DigestMissing):
        ContentDigestVerifier(None)


def test_expired() -> None:
    headers = _request(expires=NOW + 30)
    with pytest.raises(SignatureExpired):
        _verify(headers, now=NOW + 31)


@pytest.mark.parametrize("offset", [SKEW_S + 1, -(SKEW_S + 1)])
def test_clock_skew(offset: int) -> None:
    headers = _request(created=NOW + offset, expires=NOW + offset + 300)
    with pytest.raises(ClockSkew):
        _verify(headers)


def test_skew_window_is_inclusive() -> None:
    _verify(_request(created=NOW - SKEW_S, expires=NOW + 1))
    _verify(_request(created=NOW + SKEW_S, expires=NOW + SKEW_S + 1))


def test_unknown_key() -> None:
    with pytest.raises(UnknownKey):
        _verify(_request(), public_key_lookup=lambda keyid: None)
    with pytest.raises(UnknownKey):
        _verify(_request(), public_key_lookup={}.__getitem__)


def _sign_member(member: SignatureInputMember, key: SigningKey = KEY) -> list[tuple[str, str]]:
    """Sign an arbitrary member directly, bypassing sign_request's own choices."""
    headers = [("Content-Type", "x/y"), ("Content-Length", "1"), ("Content-Digest", "sha-256=:=:")]
    headers = _replace(headers, "content-digest", content_digest(BODY))
    covered = resolve_components(member.components, method="PATCH", target_uri=URI, headers=headers)
    signature = key.sign(signature_base(covered, member.signature_params)).signature
    signature_value = f"{member.label}=:{base64.b64encode(signature).decode()}:"
    return [*headers, ("Signature-Input", member.serialize()), ("Signature", signature_value)]


def _member(**params: Any) -> SignatureInputMember:
    defaults: dict[str, Any] = {
        "created": NOW, "expires": NOW + 300, "keyid": KEYID, "nonce": "n", "tag": "exchange",
    }
    defaults.update(params)
    return SignatureInputMember(
        label="sig1",
        components=tuple(ComponentId(name=n) for n in PROFILE),
        params=SignatureParams(**defaults),
    )


def test_member_helper_signs_verifiable_requests() -> None:
    _verify(_sign_member(_member(alg="ed25519")))


@pytest.mark.parametrize("alg", ["hmac-sha256", "rsa-pss-sha512", "Ed25519", ""])
def test_wrong_alg(alg: str) -> None:
    with pytest.raises(UnsupportedAlgorithm):
        _verify(_sign_member(_member(alg=alg)))


@pytest.mark.parametrize("missing", ["created", "expires", "nonce", "keyid"])
def test_missing_parameter(missing: str) -> None:
    with pytest.raises(SignatureParamsInvalid, match=missing):
        _verify(_sign_member(_member(**{missing: None})))


def test_wrong_tag() -> None:
    with pytest.raises(SignatureParamsInvalid, match="tag"):
        _verify(_request(tag="other-app"))


def test_expires_before_created() -> None:
    with pytest.raises(SignatureParamsInvalid, match="after created"):
        _verify(_sign_member(_member(expires=NOW)))


def test_unknown_signature_parameter() -> None:
    headers = _request()
    extended = _field(headers, "signature-input") + ";context=1"
    with pytest.raises(SignatureParamsInvalid, match="context"):
        _verify(_replace(headers, "signature-input", extended))


def test_stripped_signature() -> None:
    with pytest.raises(SignatureMissing):
        _verify(_without(_request(), "signature"))
    with pytest.raises(SignatureMissing):
        _verify(_without(_request(), "signature-input"))
    with pytest.raises(SignatureMissing):
        _verify(_without(_without(_request(), "signature"), "signature-input"))


def test_label_without_its_signature() -> None:
    headers = _request()
    relabelled = _field(headers, "signature").replace("sig1=", "sig2=")
    with pytest.raises(SignatureMissing, match="sig1"):
        _verify(_replace(headers, "signature", relabelled))
    with pytest.raises(SignatureMissing, match="sig9"):
        _verify(headers, label="sig9")


def test_duplicated_label_on_two_field_lines() -> None:
    headers = _request()
    duplicate = ("Signature-Input", _field(headers, "signature-input"))
    with pytest.raises(StructuredFieldError, match="duplicate dictionary key 'sig1'"):
        _verify([*headers, duplicate])
    other = _request(created=NOW + 1)
    with pytest.raises(StructuredFieldError, match="duplicate"):
        _verify([*headers, ("Signature", _field(other, "signature"))])


def test_two_labels_default_to_ours_or_take_an_explicit_choice() -> None:
    first = _request()
    second = _request(label="sig2", nonce="other")
    headers = [
        *first[:3],
        ("Signature-Input", _field(first, "signature-input")),
        ("Signature-Input", _field(second, "signature-input")),
        ("Signature", _field(first, "signature") + ", " + _field(second, "signature")),
    ]
    assert _verify(headers).label == "sig1"
    assert _verify(headers, label="sig2").nonce == "other"
    assert _verify(headers, label="sig1").nonce == "n0nce-1"


def test_malformed_signature_fields() -> None:
    headers = _request()
    with pytest.raises(StructuredFieldError):
        _verify(_replace(headers, "signature-input", "sig1=:AAAA:"))
    with pytest.raises(StructuredFieldError):
        _verify(_replace(headers, "signature", 'sig1=("@method")'))
    with pytest.raises(StructuredFieldError):
        _verify(_replace(headers, "signature", "sig1=:AAAA:;x=1"))
    with pytest.raises(UnsupportedComponent):
        _verify(_replace(headers, "signature-input", 'sig1=("@method";sf);created=1'))
    with pytest.raises(StructuredFieldError):
        _verify(_replace(headers, "signature-input", "sig1=(method);created=1"))


def test_required_body_needs_digest_component() -> None:
    with pytest.raises(ValueError, match="content-digest"):
        _verify(_request(), required_components=["@method", "@target-uri"])


# Error contract ------------------------------------------------------------------------------

LEAVES: dict[type[HttpSigError], tuple[str, int]] = {
    httpsig.SignatureMissing: ("signature-missing", 401),
    httpsig.SignatureInvalid: ("signature-invalid", 401),
    httpsig.SignatureExpired: ("signature-expired", 401),
    httpsig.ClockSkew: ("clock-skew", 401),
    httpsig.UnknownKey: ("unknown-key", 401),
    httpsig.ComponentMissing: ("component-missing", 400),
    httpsig.DigestMismatch: ("digest-mismatch", 400),
    httpsig.DigestMissing: ("digest-missing", 400),
    httpsig.StructuredFieldError: ("malformed-field", 400),
    httpsig.UnsupportedAlgorithm: ("unsupported-algorithm", 400),
    httpsig.SignatureParamsInvalid: ("signature-params-invalid", 400),
    httpsig.SignatureAmbiguous: ("signature-ambiguous", 400),
    httpsig.UnsupportedComponent: ("component-unsupported", 400),
    httpsig.SignatureBaseError: ("signature-base-invalid", 400),
}


@pytest.mark.parametrize("leaf", list(LEAVES), ids=lambda c: c.__name__)
def test_problem_types_and_statuses(leaf: type[HttpSigError]) -> None:
    assert issubclass(leaf, CryptoError)
    assert (leaf.problem_type, leaf.http_status) == LEAVES[leaf]


def test_problem_types_are_distinct() -> None:
    slugs = [slug for slug, _ in LEAVES.values()]
    assert len(set(slugs)) == len(slugs)


# Signature base and components --------------------------------------------------------------


@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "tab\there", "caf\u00e9", "nul\x00"])
def test_signature_base_rejects_unprintable_values(bad: str) -> None:
    with pytest.raises(SignatureBaseError):
        signature_base([('"x"', bad)], "()")
    with pytest.raises(ValueError):  # the lead's original contract still holds
        signature_base([('"x"', "ok")], bad)


def test_signature_base_rejects_forged_line_and_duplicates() -> None:
    forged = 'PATCH\n"@target-uri": https://evil.example/'
    with pytest.raises(SignatureBaseError):
        signature_base([('"@method"', forged)], '("@method")')
    with pytest.raises(SignatureBaseError, match="twice"):
        signature_base([('"@method"', "GET"), ('"@method"', "GET")], "()")
    with pytest.raises(SignatureBaseError):
        signature_base([('"@signature-params"', "()")], "()")


def test_signature_base_layout() -> None:
    assert signature_base([('"@method"', "GET"), ('"x"', "")], '("@method" "x")') == (
        b'"@method": GET\n"x": \n"@signature-params": ("@method" "x")'
    )


def _values(uri: str, *names: str, headers: Any = ()) -> list[str]:
    covered = resolve_components(
        [ComponentId(name=n) for n in names], method="GET", target_uri=uri, headers=headers
    )
    return [value for _, value in covered]


def test_derived_components() -> None:
    uri = "HTTPS://Exchange.Example:443/a/b%2Fc?x=1&y=%20"
    assert _values(uri, "@method", "@scheme", "@authority", "@path", "@query",
                   "@request-target", "@target-uri") == [
        "GET", "https", "exchange.example", "/a/b%2Fc", "?x=1&y=%20", "/a/b%2Fc?x=1&y=%20", uri,
    ]


@pytest.mark.parametrize(
    ("uri", "authority", "path", "query", "target"),
    [
        ("http://h.example:80", "h.example", "/", "?", "/"),
        ("http://h.example:8080/", "h.example:8080", "/", "?", "/"),
        ("https://h.example:80/p", "h.example:80", "/p", "?", "/p"),
        ("https://[::1]:443/p?", "[::1]", "/p", "?", "/p"),
        ("https://[::1]/p?q", "[::1]", "/p", "?q", "/p?q"),
    ],
)
def test_uri_normalisation(uri: str, authority: str, path: str, query: str, target: str) -> None:
    assert _values(uri, "@authority", "@path", "@query", "@request-target") == [
        authority, path, query, target,
    ]


@pytest.mark.parametrize(
    "uri", ["/relative", "ftp://h/x", "https://user@h/x", "https://h/x#frag", "https://[::1/x",
            "https://h/\u00e9"],
)
def test_bad_target_uri(uri: str) -> None:
    with pytest.raises(SignatureBaseError):
        _values(uri, "@path")


def test_field_values_per_rfc9421_section_2_1() -> None:
    headers = [("X-Multi", "  a  "), ("Other", "z"), ("x-multi", "\tb, c "), ("X-Empty", "")]
    assert _values("https://h/", "x-multi", "x-empty", headers=headers) == ["a, b, c", ""]


def test_query_param_examples_from_rfc9421_section_2_2_8() -> None:
    uri = (
        "https://example.com/parameters?var=this%20is%20a%20big%0Amultiline%20value"
        "&bar=with+plus+whitespace&fa%C3%A7ade%22%3A%20=something"
    )
    components = [
        ComponentId(name="@query-param", query_param="var"),
        ComponentId(name="@query-param", query_param="bar"),
        ComponentId(name="@query-param", query_param="fa%C3%A7ade%22%3A%20"),
    ]
    covered = resolve_components(components, method="GET", target_uri=uri)
    assert covered == (
        ('"@query-param";name="var"', "this%20is%20a%20big%0Amultiline%20value"),
        ('"@query-param";name="bar"', "with%20plus%20whitespace"),
        ('"@query-param";name="fa%C3%A7ade%22%3A%20"', "something"),
    )


def test_query_param_absent_or_repeated() -> None:
    component = [ComponentId(name="@query-param", query_param="a")]
    with pytest.raises(ComponentMissing):
        resolve_components(component, method="GET", target_uri="https://h/?b=1")
    with pytest.raises(SignatureBaseError, match="2 times"):
        resolve_components(component, method="GET", target_uri="https://h/?a=1&a=2")


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: ComponentId(name="@nope"), UnsupportedComponent),
        (lambda: ComponentId(name="Content-Type"), UnsupportedComponent),
        (lambda: ComponentId(name=""), UnsupportedComponent),
        (lambda: ComponentId(name="@query-param"), UnsupportedComponent),
        (lambda: ComponentId(name="@path", query_param="x"), UnsupportedComponent),
        (lambda: SignatureParams(created=-1), SignatureParamsInvalid),
        (lambda: SignatureParams(keyid="k\n"), SignatureParamsInvalid),
        (lambda: SignatureParams(created=1, keyid="k", order=("keyid",)), SignatureParamsInvalid),
        (lambda: SignatureParams(created=True), TypeError),
        (lambda: SignatureParams(keyid=b"k"), TypeError),
    ],
)
def test_value_objects_validate_themselves(make: Callable[[], object], error: type) -> None:
    with pytest.raises(error):
        make()


def test_parameter_order_is_kept_from_the_wire() -> None:
    value = 'sig1=("@method");keyid="k";nonce="n";created=5'
    member = parse_signature_input(value)["sig1"]
    assert member.params.order == ("keyid", "nonce", "created")
    assert member.serialize() == value
    assert member.params != SignatureParams(created=5, keyid="k", nonce="n")


def test_sign_request_rejects_bad_keys() -> None:
    kwargs: dict[str, Any] = {
        "method": "GET", "target_uri": URI, "headers": [], "covered_components": ["@method"],
        "keyid": KEYID, "created": NOW,
    }
    with pytest.raises(ValueError, match="32 bytes"):
        sign_request(key=bytes(31), **kwargs)
    with pytest.raises(TypeError):
        sign_request(key="not a key", **kwargs)


def test_digest_verifier_is_single_use() -> None:
    verifier = ContentDigestVerifier(content_digest(b""))
    verifier.verify()
    with pytest.raises(RuntimeError):
        verifier.update(b"x")
    with pytest.raises(RuntimeError):
        verifier.verify()


def test_digest_checks_every_supported_member() -> None:
    good = content_digest(BODY)
    bad512 = "sha-512=:" + base64.b64encode(bytes(64)).decode() + ":"
    verifier = ContentDigestVerifier(f"{good}, {bad512}")
    verifier.update(BODY)
    with pytest.raises(DigestMismatch, match="sha-512"):
        verifier.verify()


@pytest.mark.parametrize(
    "value", ["sha-256=:AAAA:", "sha-256=1", "sha-256=(:AAAA:)", "sha-256"],
)
def test_digest_field_malformed(value: str) -> None:
    with pytest.raises(HttpSigError):
        ContentDigestVerifier(value)
