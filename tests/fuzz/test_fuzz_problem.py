"""Hostile problem+json answers on the client side (RFC 9457 bodies from a hostile server).

``exchange.transport.client_evidence`` (``problem_from_body``, ``RequestRefused``,
and the real ``create_upload`` / ``upload_offset`` against a hostile aiohttp
server on 127.0.0.1) and ``exchange.client.problems.refusal``: every body (huge,
non-JSON, deeply nested, wrong types, control characters) becomes one typed
error with a bounded, printable message, read with bounded memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from exchange.client.errors import ServerRefused
from exchange.client.problems import refusal
from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from exchange.transport.client_evidence import (
    MAX_PROBLEM_BYTES,
    RequestRefused,
    problem_from_body,
)
from exchange.wire.tus import TusError
from tests.fuzz._fuzz import FUZZ, HOSTILE_CHARS, hostile_text, only, peak_python_memory

IDENTITY = ParticipantIdentity.generate("prosecutor-1")
_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text)
json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=8)
problems = st.fixed_dictionaries({}, optional={
    "type": st.one_of(json_values, hostile_text.map(lambda t: "https://x.invalid/problems/" + t)),
    "title": json_values, "status": json_values, "detail": json_values,
    "audit_index": json_values,
})
HOSTILE_BODIES = (
    b"", b"not json", b"<html>502 bad gateway</html>", b"\xff\xfe\x00", b"[" * 100_000,
    b'{"a":' * 50_000, b"1" * 5000, b'{"type":"' + b"a" * 100_000 + b'"}', b"null", b"[]",
    b'{"type":7,"detail":["x"]}', b'{"type":"https://x/p/\\u001b[2Jx","detail":"\\r\\nok\\u0007"}',
    b'{"type":"x","type":"y"}', b'{"detail":"\\ud800"}', b'{"status":1e999}',
)


def _check_message(err: Exception, limit: int = 400) -> None:
    message = str(err)
    assert len(message) <= limit, f"message of {len(message)} characters"
    assert message.isprintable(), f"message with control characters: {message[:80]!r}"


def _check_request_refused(status: int, body: Any) -> None:
    err = only((), RequestRefused, status, body)
    assert err is not None
    _check_message(err)
    assert err.status == status
    assert err.problem_type == "http-error" or err.problem_type.replace("-", "").isalnum()


@FUZZ
@given(status=st.integers(400, 599), body=st.one_of(problems, json_values))
def test_request_refused_from_hostile_problem_values(status: int, body: Any) -> None:
    _check_request_refused(status, body)


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), st.sampled_from(HOSTILE_BODIES),
                      problems.map(lambda p: json.dumps(p).encode())))
def test_problem_from_body_never_raises(data: bytes) -> None:
    body = only((), problem_from_body, data)
    assert body is None or isinstance(body, dict)
    _check_request_refused(400, body)


@FUZZ
@given(status=st.integers(400, 599), body=st.one_of(problems, json_values))
def test_client_refusal_is_one_typed_error(status: int, body: Any) -> None:
    err = only((), refusal, status, body, audit_index=3, doing="uploading")
    assert isinstance(err, ServerRefused) and err.status == status
    assert len(str(err)) <= 600


def test_client_refusal_message_is_sanitised() -> None:
    body = {"type": "https://x.invalid/problems/nope", "detail": "\x1b[2J\r\nfake prompt$ "}
    _check_message(refusal(400, body))


# -- a real hostile server ---------------------------------------------------------------


def _run_against(handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                 client: Callable[[SignedSession], Awaitable[object]]) -> object:
    async def main() -> object:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with SignedSession(f"http://127.0.0.1:{port}", IDENTITY) as session:
                return await client(session)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_error_bodies_from_a_real_server(body: bytes) -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=403, body=body, content_type="application/problem+json")

    async def client(session: SignedSession) -> object:
        with pytest.raises(RequestRefused) as caught:
            await session.create_upload("c1", 10)
        return caught.value

    err = _run_against(handler, client)
    assert isinstance(err, RequestRefused) and err.status == 403
    _check_message(err)


def test_huge_error_body_is_not_read_whole() -> None:
    """A 64 MiB error body: the client reads past the cap by one byte at most, then stops."""
    piece = b"x" * (1 << 20)
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=500, headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            for _ in range(64):
                await response.write(piece)
                sent += len(piece)
        except (ConnectionError, RuntimeError):
            pass
        return response

    async def client(session: SignedSession) -> object:
        with (peak_python_memory(8 * MAX_PROBLEM_BYTES + (2 << 20)),
              pytest.raises(RequestRefused) as caught):
            await session.create_upload("c1", 10)
        return caught.value

    err = _run_against(handler, client)
    assert isinstance(err, RequestRefused) and err.body is None and err.status == 500


@pytest.mark.parametrize("offset", [None, "", "-1", "1.5", "9" * 5000, "0x10", "\u0663"])
def test_hostile_upload_offset_is_a_typed_error(offset: str | None) -> None:
    async def handler(request: web.Request) -> web.Response:
        headers = {} if offset is None else {"Upload-Offset": offset}
        return web.Response(status=200, headers=headers)

    async def client(session: SignedSession) -> object:
        with pytest.raises(TusError) as caught:
            await session.upload_offset("/v1/uploads/u1")
        return caught.value

    _check_message(_run_against(handler, client))  # type: ignore[arg-type]
    assert set(HOSTILE_CHARS)  # the shared alphabet feeds hostile_text above
