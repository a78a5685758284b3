"""RFC 9651 Structured Field subset: exact parsing, strict rejection, round trips."""

from __future__ import annotations

import contextlib
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from exchange.wire._components import ComponentId
from exchange.wire._sfv import (
    MAX_INTEGER,
    BareItem,
    Dictionary,
    InnerList,
    Item,
    Token,
    parse_dictionary,
    parse_item,
    serialize_bare_item,
    serialize_dictionary,
    serialize_inner_list,
    serialize_item,
)
from exchange.wire._siginput import SignatureInputMember, SignatureParams
from exchange.wire.httpsig import (
    HttpSigError,
    StructuredFieldError,
    parse_content_digest,
    parse_signature,
    parse_signature_input,
)


def _typed(value: Any) -> Any:
    """A comparison key that tells True from 1 and a Token from a String."""
    if isinstance(value, dict):
        return [(k, _typed(v)) for k, v in value.items()]
    if isinstance(value, Item):
        return ("item", _typed(value.value), _typed(value.params))
    if isinstance(value, InnerList):
        return ("list", [_typed(i) for i in value.items], _typed(value.params))
    return (type(value).__name__, value)


def test_parse_signature_input_shape() -> None:
    parsed = parse_dictionary(
        'sig1=("@method" "x";name="a b");created=1;keyid="k\\"q";alg=ed25519, sig2=()'
    )
    assert _typed(parsed) == _typed(
        {
            "sig1": InnerList(
                (Item("@method"), Item("x", {"name": "a b"})),
                {"created": 1, "keyid": 'k"q', "alg": Token("ed25519")},
            ),
            "sig2": InnerList(()),
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a=1, b=?0, c=?1, d", {"a": Item(1), "b": Item(False), "c": Item(True), "d": Item(True)}),
        ("a;x;y=-5", {"a": Item(True, {"x": True, "y": -5})}),
        ("  a=:AQI=:  ", {"a": Item(b"\x01\x02")}),
        ("a=1,b=2 ,\tc=3", {"a": Item(1), "b": Item(2), "c": Item(3)}),
        ("a=( 1  2 )", {"a": InnerList((Item(1), Item(2)))}),
        ("a=*tok/en:x", {"a": Item(Token("*tok/en:x"))}),
        ("a=::", {"a": Item(b"")}),
        ("", {}),
        (b"k=\"v\"", {"k": Item("v")}),
    ],
)
def test_valid_dictionaries(text: str | bytes, expected: Dictionary) -> None:
    assert _typed(parse_dictionary(text)) == _typed(expected)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=1,", "trailing ','"),
        ("a=1 b=2", "','"),
        ("A=1", "key"),
        ("a=1, a=2", "duplicate dictionary key 'a'"),
        ("a;x;x", "duplicate parameter key 'x'"),
        ("a=1.5555", "1 to 3 fractional digits"),
        ("a=1234567890123.5", "at most 12 allowed"),
        ("a=1.", "1 to 3 fractional digits"),
        ("a=@1659578233", "dates are not supported"),
        ('a=%"x"', "display strings are not supported"),
        ("a=1234567890123456", "at most 15"),
        ("a=-", "digit"),
        ('a="unterminated', "not terminated"),
        ('a="bad\\n"', "backslash"),
        ('a="tab\there"', "printable"),
        ("a=:AQI:", "canonical"),
        ("a=:AQI==:", "canonical"),
        ("a=:AQJ=:", "canonical"),
        ("a=:AQ I=:", "base64"),
        ("a=:AQI=", "not terminated"),
        ("a=?2", "'0' or '1'"),
        ("a=(1 2", "')'"),
        ("a=(1,2)", "' ' or ')'"),
        ("a=\u00e9", "not ascii"),
        (b"a=\xff", "not ascii"),
        ("a=1 ;x", "','"),
        ("a=!", "bare item"),
    ],
)
def test_malformed_dictionaries(text: str | bytes, message: str) -> None:
    with pytest.raises(StructuredFieldError, match="(?i)" + re.escape(message)):
        parse_dictionary(text)


def test_parse_item() -> None:
    assert _typed(parse_item(' "x";a=1 ')) == _typed(Item("x", {"a": 1}))
    with pytest.raises(StructuredFieldError, match="end of field value"):
        parse_item("1 2")


@pytest.mark.parametrize(
    "value",
    [MAX_INTEGER + 1, "caf\u00e9", "line\n"],
)
def test_serializer_refuses_out_of_range(value: BareItem) -> None:
    with pytest.raises(StructuredFieldError):
        serialize_bare_item(value)


@pytest.mark.parametrize("bad", ["", "1abc", "a b", "a,b", 'a"'])
def test_token_validates_itself(bad: str) -> None:
    with pytest.raises(StructuredFieldError):
        Token(bad)


def test_serialize_examples() -> None:
    assert serialize_item(Item('a"b\\c', {"k": True, "n": Token("t")})) == '"a\\"b\\\\c";k;n=t'
    assert serialize_dictionary(
        {"a": Item(True, {"p": 1}), "b": InnerList((Item(1), Item(b"\x00")), {"q": False})}
    ) == "a;p=1, b=(1 :AA==:);q=?0"
    with pytest.raises(StructuredFieldError):
        serialize_dictionary({"Bad": Item(1)})


# Property tests -------------------------------------------------------------------------------

keys = st.from_regex(r"[a-z*][a-z0-9_\-.*]{0,6}", fullmatch=True)
tokens = st.from_regex(r"[A-Za-z*][A-Za-z0-9!#$%&'*+\-.^_`|~:/]{0,8}", fullmatch=True).map(Token)
sf_strings = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12)
bare_items: st.SearchStrategy[BareItem] = st.one_of(
    st.integers(-MAX_INTEGER, MAX_INTEGER),
    st.booleans(),
    sf_strings,
    st.binary(max_size=24),
    tokens,
)
params = st.dictionaries(keys, bare_items, max_size=3)
items = st.builds(Item, bare_items, params)
inner_lists = st.builds(InnerList, st.lists(items, max_size=4).map(tuple), params)
dictionaries = st.dictionaries(keys, st.one_of(items, inner_lists), max_size=4)


@given(dictionaries)
def test_dictionary_round_trip(value: Dictionary) -> None:
    text = serialize_dictionary(value)
    parsed = parse_dictionary(text)
    assert _typed(parsed) == _typed(value)
    assert serialize_dictionary(parsed) == text


@given(items)
def test_item_round_trip(value: Item) -> None:
    text = serialize_item(value)
    assert _typed(parse_item(text)) == _typed(value)


PARSERS = [
    parse_dictionary,
    parse_item,
    parse_signature_input,
    parse_signature,
    parse_content_digest,
]


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@given(data=st.one_of(st.binary(max_size=64), st.text(max_size=64)))
def test_parsers_only_raise_httpsig_errors_on_junk(parser: Any, data: str | bytes) -> None:
    with contextlib.suppress(HttpSigError):
        parser(data)


_ALPHABET = st.sampled_from(list('sig1=()"@;:, ?*-.AZaz09+/\\\t\u00e9'))


@pytest.mark.parametrize("parser", PARSERS, ids=lambda p: p.__name__)
@given(
    seed=st.sampled_from(
        [
            'sig1=("@method" "@target-uri");created=1;expires=2;keyid="k";nonce="n"',
            "sig1=:AQIDBA==:",
            "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:",
        ]
    ),
    edits=st.lists(st.tuples(st.integers(0, 80), _ALPHABET, st.booleans()), max_size=4),
)
def test_parsers_only_raise_httpsig_errors_on_near_misses(
    parser: Any, seed: str, edits: list[tuple[int, str, bool]]
) -> None:
    """Mutate real field values a few characters at a time: structured junk reaches deeper."""
    text = seed
    for offset, char, insert in edits:
        at = offset % (len(text) + 1)
        text = text[:at] + char + text[at + (0 if insert else 1) :]
    with contextlib.suppress(HttpSigError):
        parser(text)


_COMPONENTS = st.one_of(
    st.sampled_from(["@method", "@target-uri", "@authority", "@path", "@query",
                     "content-digest", "content-type", "x-a.b_c~1"]).map(
        lambda name: ComponentId(name=name)),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12).map(
        lambda name: ComponentId(name="@query-param", query_param=name)),
)


@given(components=st.lists(_COMPONENTS, max_size=5, unique=True),
       created=st.integers(0, MAX_INTEGER), keyid=st.text(
           st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=20))
def test_signature_params_is_the_serialized_inner_list(
    components: list[ComponentId], created: int, keyid: str
) -> None:
    """A member's ``@signature-params`` is what the general serializer writes, and parses back.

    The member builds it from each identifier's own serialization (the hot path of
    every signed request); this pins it to RFC 9651's inner-list serialization.
    """
    params = SignatureParams(created=created, keyid=keyid, nonce="n", alg="ed25519")
    member = SignatureInputMember(label="sig1", components=tuple(components), params=params)
    general = serialize_inner_list(
        InnerList(tuple(c.to_item() for c in components), params.to_params()))
    assert member.signature_params == general
    assert parse_signature_input(member.serialize())["sig1"] == member
