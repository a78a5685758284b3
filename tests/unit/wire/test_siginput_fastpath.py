"""The canonical fast path of Signature-Input and Signature parsing agrees with the general one.

``parse_signature_input`` and ``parse_signature`` recognise a single, canonically
serialized member with one regular expression (``exchange.wire._siginput``).
The general RFC 9651 parser stays the reference: a ``bytes`` value always
takes it, so parsing the same text as ``str`` and as ``bytes`` must give the
same members, or the same error, for every input. The fast path may only
decline, never decide differently.
"""

from __future__ import annotations

import random
import string

import pytest
from hypothesis import given
from hypothesis import strategies as st
from nacl.signing import SigningKey

from exchange.wire._siginput import _canonical_input, _canonical_signature
from exchange.wire.httpsig import (
    HttpSigError,
    parse_signature,
    parse_signature_input,
    sign_request,
)
from tests.fuzz._fuzz import FUZZ, mutated_text

KEY = SigningKey(bytes(range(32)))

CANONICAL_INPUTS = [
    'sig1=("@method" "@target-uri");created=1796650482;expires=1796650782;'
    'keyid="p-alice";nonce="abc_DEF-123";alg="ed25519";tag="exchange-v1"',
    'sig1=("@method" "@target-uri" "content-type" "content-length" "content-digest");'
    'created=0;expires=999999999999999;keyid="k";nonce="n"',
    'sig-b21=();created=1618884473;keyid="test-key-rsa-pss";nonce="b3k2pp5k7z-50gnwp.yemd"',
    'proxy.sig*=("@authority");keyid="a b!#$%&()*+,-./:;<=>?@[]^_`{|}~"',
    "sig1=()",
    'sig1=("@query");alg="ed25519";created=1',  # any parameter order is kept
]

# Each declines the fast path; the general parser then accepts it or names the fault.
NON_CANONICAL_INPUTS = [
    'sig1=("@method");created=01',  # leading zero: 1 on the wire would sign differently
    'sig1=( "@method");created=1',  # space after "("
    'sig1=("@method"  "@path");created=1',  # two spaces
    'sig1=("@method") ;created=1',
    ' sig1=("@method");created=1',
    'sig1=("@method");created=1 ',
    'sig1=("@method");created=1;created=2',  # duplicate parameter
    'sig1=("@method");created="1"',  # mistyped
    'sig1=("@method");keyid=7',
    'sig1=("@method");alg=ed25519',  # a token, not a string
    'sig1=("@method");keyid',  # a boolean
    'sig1=("@method");keyid="a\\"b"',  # an escape
    'sig1=("@method");created=1.5',
    'sig1=("@query-param";name="a")',  # a parameter on a component
    'sig1=("@method" "@method")',  # covered twice
    'sig1=("@bogus")',  # unknown derived component
    'sig1=("Content-Type")',  # not lowercase
    'sig1=("@méthod")',  # not ASCII
    'sig1=("@method"),sig2=("@path")',  # two members
    'sig1=("@method");created=1,',
    'sig1=("@method");unknown="x"',
    'sig1=("@method");created=1234567890123456',  # sixteen digits
    "Sig1=()",
    "sig1=",
    "",
]

CANONICAL_SIGNATURES = [
    "sig1=:" + "A" * 86 + "==:",
    "sig-b21=:YQ==:",
    "s=::",
]

NON_CANONICAL_SIGNATURES = [
    "sig1=:YR==:",  # non-canonical padding bits
    "sig1=:YQ:",  # unpadded
    "sig1=:YQ==:;x=1",
    "sig1=:YQ==:, sig2=:YQ==:",
    " sig1=:YQ==:",
    "sig1=YQ==",
    "sig1=:Y Q==:",
]


def _outcome(parse, value: str) -> tuple[str, object]:  # type: ignore[no-untyped-def]
    try:
        return ("ok", parse(value))
    except HttpSigError as err:
        return (type(err).__name__, str(err))


def _raw(value: str) -> bytes:
    """The same text as bytes: the general parser's way in."""
    return value.encode("utf-8", "surrogatepass")


def _agree_input(value: str) -> None:
    assert _outcome(parse_signature_input, value) == _outcome(parse_signature_input, _raw(value))


def _agree_signature(value: str) -> None:
    assert _outcome(parse_signature, value) == _outcome(parse_signature, _raw(value))


@pytest.mark.parametrize("value", CANONICAL_INPUTS)
def test_canonical_input_takes_the_fast_path_and_agrees(value: str) -> None:
    fast = _canonical_input(value)
    assert fast is not None
    assert fast == parse_signature_input(value.encode("ascii"))
    (member,) = fast.values()
    assert member.serialize() == value  # signature_params is the text itself


def test_our_clients_own_fields_take_the_fast_path() -> None:
    signature_input, signature = sign_request(
        method="GET", target_uri="https://exchange.example/v1/cases", headers=[],
        covered_components=["@method", "@target-uri"], key=KEY, keyid="p-alice",
        created=1_800_000_000, expires=1_800_000_300, nonce="n0nce", tag="exchange-v1",
    )
    assert _canonical_input(signature_input) is not None
    assert _canonical_signature(signature) is not None
    _agree_input(signature_input)
    _agree_signature(signature)


@pytest.mark.parametrize("value", NON_CANONICAL_INPUTS)
def test_non_canonical_input_declines_and_the_general_parser_decides(value: str) -> None:
    assert _canonical_input(value) is None
    _agree_input(value)


@pytest.mark.parametrize("value", CANONICAL_SIGNATURES)
def test_canonical_signature_agrees(value: str) -> None:
    fast = _canonical_signature(value)
    assert fast is not None
    assert fast == parse_signature(value.encode("ascii"))


@pytest.mark.parametrize("value", NON_CANONICAL_SIGNATURES)
def test_non_canonical_signature_declines(value: str) -> None:
    assert _canonical_signature(value) is None
    _agree_signature(value)


@FUZZ
@given(st.one_of(*(mutated_text(v, tuple(CANONICAL_INPUTS)) for v in CANONICAL_INPUTS)))
def test_mutated_inputs_parse_alike_on_both_paths(value: str) -> None:
    _agree_input(value)


@FUZZ
@given(st.one_of(*(mutated_text(v, tuple(CANONICAL_SIGNATURES)) for v in CANONICAL_SIGNATURES)))
def test_mutated_signatures_parse_alike_on_both_paths(value: str) -> None:
    _agree_signature(value)


def _near_canonical(rnd: random.Random) -> str:
    """A Signature-Input value from a grammar near our client's (some take the fast path)."""
    names = ['"@method"', '"@target-uri"', '"content-type"', '"@query-param";name="a"',
             '"@authority"', '"x"', '"@bogus"', '"Content-Type"', '"@method" ', '""']
    chars = string.printable[:95] + 'é\\"'
    covered = " ".join(rnd.choice(names) for _ in range(rnd.randint(0, 4)))
    params = ""
    for _ in range(rnd.randint(0, 7)):
        name = rnd.choice(["created", "expires", "keyid", "nonce", "alg", "tag", "bogus",
                           "Created"])
        draw = rnd.random()
        if draw < 0.35:
            value: str | None = str(rnd.choice([0, 1, 7, 10**14, 10**15, 10**16,
                                                rnd.randint(0, 10**12)]))
        elif draw < 0.4:
            value = "0" + str(rnd.randint(0, 99))
        elif draw < 0.85:
            value = '"' + "".join(rnd.choice(chars) for _ in range(rnd.randint(0, 6))) + '"'
        elif draw < 0.9:
            value = "ed25519"
        else:
            value = None
        params += f";{name}" + (f"={value}" if value is not None else "")
    label = rnd.choice(["sig1", "s", "Sig", "sig-1.*", "1sig"])
    return (" " if rnd.random() < 0.1 else "") + f"{label}=({covered}){params}"


def test_values_from_a_near_canonical_grammar_parse_alike_on_both_paths() -> None:
    rnd = random.Random(9421)
    fast = 0
    for _ in range(20_000):
        value = _near_canonical(rnd)
        _agree_input(value)
        fast += _canonical_input(value) is not None
    assert fast > 300  # the grammar does reach the fast path, so both paths were compared
