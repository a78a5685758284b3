"""``verify_request(selected=...)``: a pre-selected signature verifies as a fresh parse does."""

from __future__ import annotations

import pytest

from exchange.wire.httpsig import SignatureExpired, SignatureInvalid, select_signature
from tests.unit.wire.test_httpsig import BODY, NOW, URI, _replace, _request, _verify


def test_selected_gives_the_same_result_as_parsing_again() -> None:
    headers = _request()
    assert _verify(headers, selected=select_signature(headers)) == _verify(headers)


def test_selected_still_checks_the_signature_over_the_headers() -> None:
    headers = _request()
    selected = select_signature(headers)
    tampered = _replace(headers, "content-length", str(len(BODY) + 1))
    with pytest.raises(SignatureInvalid):
        _verify(tampered, selected=selected)


def test_selected_still_checks_the_profile() -> None:
    headers = _request(created=NOW - 30, expires=NOW - 10)
    with pytest.raises(SignatureExpired):
        _verify(headers, selected=select_signature(headers))


def test_selected_with_another_target_uri_fails() -> None:
    headers = _request()
    with pytest.raises(SignatureInvalid):
        _verify(headers, target_uri=URI + "x", selected=select_signature(headers))
