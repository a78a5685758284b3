"""Hostile-input fuzzing of RFC 9421 Signature-Input / Signature, RFC 9530 Content-Digest
and the RFC 9651 Structured Field parser under them, and of ``verify_request`` on
mutated signed requests.

Parsers may raise only :class:`HttpSigError` leaves; what parses serializes to a
fixed point; a signed request that was changed in any way that matters
(components, parameters, signature, body) is never accepted.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from exchange.wire._sfv import (
    parse_dictionary,
    parse_item,
    serialize_dictionary,
    serialize_item,
)
from exchange.wire.httpsig import (
    ContentDigestVerifier,
    HttpSigError,
    content_digest,
    parse_content_digest,
    parse_signature,
    parse_signature_input,
    sign_request,
    verify_request,
)
from tests.fuzz._fuzz import FUZZ, hostile_text, mutated_text, only

KEY = SigningKey(bytes(range(32)))
NOW = 1_700_000_000
METHOD = "POST"
TARGET = "https://exchange.example/v1/cases/c1/uploads?kind=evidence&x=1"
BODY = b'{"name":"exhibit-7"}'
PROFILE = ("@method", "@target-uri", "content-digest", "content-type", "content-length")
HEADERS = {
    "Content-Type": "application/json",
    "Content-Length": str(len(BODY)),
    "Content-Digest": content_digest(BODY),
}
SIG_INPUT, SIGNATURE = sign_request(
    method=METHOD, target_uri=TARGET, headers=HEADERS, covered_components=PROFILE, key=KEY,
    keyid="prosecutor-1", created=NOW, expires=NOW + 60, nonce="n-0001", tag="exchange",
)
SIGNED = {**HEADERS, "Signature-Input": SIG_INPUT, "Signature": SIGNATURE}
FIELDS = (SIG_INPUT, SIGNATURE, HEADERS["Content-Digest"],
          'sig1=("@method" "@query-param";name="a");created=1;keyid="k", s2=?0;x=:AA==:',
          "sha-512=:" + "A" * 86 + "==:, md5=:AAAAAAAAAAAAAAAAAAAAAA==:")


def _verify(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]],
            body: bytes | None) -> object:
    return verify_request(
        method=method, target_uri=target, headers=headers,
        public_key_lookup=lambda keyid: bytes(KEY.verify_key) if keyid == "prosecutor-1" else None,
        now=NOW + 5, max_skew_s=30, required_components=PROFILE, expected_tag="exchange",
        body=body,
    )


ORIGINAL = _verify(METHOD, TARGET, SIGNED, BODY)


# -- structured fields -------------------------------------------------------------------


def _check_fields(value: str | bytes) -> None:
    members = only(HttpSigError, parse_dictionary, value)
    if members is not None:
        text = serialize_dictionary(members)
        assert parse_dictionary(text) == members
        assert serialize_dictionary(parse_dictionary(text)) == text
    item = only(HttpSigError, parse_item, value)
    if item is not None:
        assert parse_item(serialize_item(item)) == item
    inputs = only(HttpSigError, parse_signature_input, value)
    if inputs is not None:
        again = parse_signature_input(", ".join(m.serialize() for m in inputs.values()))
        assert again == inputs
    only(HttpSigError, parse_signature, value)
    only(HttpSigError, parse_content_digest, value)
    checker = only(HttpSigError, ContentDigestVerifier, value)
    if checker is not None:
        checker.update(BODY)
        only(HttpSigError, checker.verify)


@FUZZ
@given(value=st.one_of(hostile_text, st.binary(max_size=200),
                       st.text(st.sampled_from('abc019-*=:;,()" ?\\@%.\t/+'), max_size=80)))
def test_fields_random(value: str | bytes) -> None:
    _check_fields(value)


@FUZZ
@given(data=st.data())
def test_fields_mutations(data: st.DataObject) -> None:
    valid = data.draw(st.sampled_from(FIELDS))
    _check_fields(data.draw(mutated_text(valid, FIELDS)))


@FUZZ
@given(value=st.sampled_from([
    '"' + "a" * 200_000, ":" + "A" * 200_000, " " * 200_000 + "a", "a=(" + '"x" ' * 50_000,
    "a;" * 100_000, "a=1" + ";b" * 50_000, "9" * 100_000, "a=" + "9" * 100_000,
    ", ".join(f"k{i}=?1" for i in range(20_000)), "a=" + '"\\' * 50_000,
]))
def test_fields_large_hostile_values_stay_linear(value: str) -> None:
    _check_fields(value)


# -- verify_request on mutated signed requests -------------------------------------------


def _check_request(method: str, target: str, headers: dict[str, str] | list[tuple[str, str]],
                   body: bytes | None) -> None:
    verified = only(HttpSigError, _verify, method, target, headers, body)
    if verified is not None:
        # Accepted only if nothing that matters changed (e.g. optional whitespace did).
        assert verified.covered == ORIGINAL.covered  # type: ignore[attr-defined]
        assert verified.params == ORIGINAL.params  # type: ignore[attr-defined]
        assert verified.signature == ORIGINAL.signature  # type: ignore[attr-defined]
        assert body in (None, BODY)


@FUZZ
@given(data=st.data())
def test_verify_request_with_one_mutated_part(data: st.DataObject) -> None:
    method, target, body = METHOD, TARGET, BODY
    headers = dict(SIGNED)
    part = data.draw(st.sampled_from(["header", "method", "target", "body"]))
    if part == "header":
        name = data.draw(st.sampled_from(sorted(SIGNED)))
        headers[name] = data.draw(mutated_text(SIGNED[name], FIELDS))
    elif part == "method":
        method = data.draw(st.one_of(mutated_text(METHOD), st.just("post"), hostile_text))
    elif part == "target":
        target = data.draw(st.one_of(mutated_text(TARGET), hostile_text))
    else:
        body = data.draw(st.one_of(st.binary(max_size=40),
                                   st.just(BODY[:-1]), st.just(BODY + b" ")))
    _check_request(method, target, headers, body)


@FUZZ
@given(data=st.data())
def test_verify_request_with_added_dropped_or_repeated_fields(data: st.DataObject) -> None:
    pairs = list(SIGNED.items())
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from(["drop", "repeat", "add", "case"]))
        at = data.draw(st.integers(0, len(pairs) - 1)) if pairs else 0
        if op == "drop" and pairs:
            del pairs[at]
        elif op == "repeat" and pairs:
            name, value = pairs[at]
            pairs.append((name, data.draw(st.sampled_from([value, *FIELDS, ""]))))
        elif op == "add":
            pairs.append((data.draw(st.sampled_from(["Signature-Input", "Signature",
                                                     "Content-Digest", "X-Other"])),
                          data.draw(st.one_of(st.sampled_from(FIELDS), hostile_text))))
        elif op == "case" and pairs:
            name, value = pairs[at]
            pairs[at] = (name.swapcase(), value)
    _check_request(METHOD, TARGET, pairs, BODY)


def test_original_request_verifies() -> None:
    _check_request(METHOD, TARGET, SIGNED, BODY)
    _check_request(METHOD, TARGET, SIGNED, None)
