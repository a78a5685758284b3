"""The stored RFC 9421 member reader used by the verifier: strict, and exact about keyid."""

from __future__ import annotations

import time

import pytest

from exchange.audit._sigparse import SignatureSyntaxError, parse_signature, parse_signature_input


def test_reads_components_params_and_signature_params() -> None:
    member = ('sig1=("@method" "@query-param";name="a%20b" "content-digest");created=1;'
              'keyid="p\\"1";nonce="n;x";tag="t"')
    parsed = parse_signature_input(member)
    assert parsed.label == "sig1"
    assert parsed.components == ('"@method"', '"@query-param";name="a%20b"', '"content-digest"')
    assert parsed.signature_params == member.split("=", 1)[1]
    assert parsed.string_param("keyid") == 'p"1'
    assert parsed.string_param("nonce") == "n;x"
    assert parsed.string_param("created") is None
    assert parse_signature("sig1=:AAAA:") == ("sig1", b"\x00\x00\x00")


@pytest.mark.parametrize("member", [
    'sig1=("@method"',
    'sig1=("@method" )',
    'sig1=("@method");keyid="a";keyid="b"',
    'sig1=("@method");created=01',          # parses, but not the canonical spelling
    'sig1=("@method"),sig2=("@path")',      # one member only
    'sig1=("@method");keyid=',
    'Sig1=("@method")',
    'sig1=("@method")trailing',
    'sig1=("@method";x="unterminated)',
    '("@method")',
])
def test_rejects_malformed_signature_input(member: str) -> None:
    with pytest.raises(SignatureSyntaxError):
        parse_signature_input(member)


@pytest.mark.parametrize("member", ["sig1=AAAA", "sig1=:AA*A:", "sig1=:AAA:", "=:AAAA:"])
def test_rejects_malformed_signature(member: str) -> None:
    with pytest.raises(SignatureSyntaxError):
        parse_signature(member)


@pytest.mark.parametrize("tail", [
    'keyid="' + "a" * 4000,  # unterminated string: used to backtrack exponentially
    'keyid="' + "a\\\\" * 1300,
    'keyid="' + "a" * 4000 + '\\',
])
def test_hostile_strings_fail_fast(tail: str) -> None:
    # A stored entry is untrusted: the verifier must reject it in linear time,
    # not hang (the old pattern took ~1 s at 24 characters, doubling per char).
    member = 'sig1=("@method");' + tail
    started = time.perf_counter()
    with pytest.raises(SignatureSyntaxError):
        parse_signature_input(member)
    assert time.perf_counter() - started < 0.5


def test_strings_are_printable_ascii_only() -> None:
    with pytest.raises(SignatureSyntaxError):
        parse_signature_input('sig1=("@method");keyid="caf\u00e9"')
    with pytest.raises(SignatureSyntaxError):
        parse_signature_input('sig1=("@m\u00e9thod");keyid="p1"')
    assert parse_signature_input('sig1=("@method");keyid="a\\\\b"').string_param("keyid") == "a\\b"
