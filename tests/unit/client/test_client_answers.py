"""The client library against a hostile server on 127.0.0.1: answers it must not trust.

Success bodies that are huge, not JSON, nested past the recursion limit or of
the wrong shape; error bodies with control characters; upload creations and
commits whose headers or bodies lack what tus and our API promise. Each must
become one typed error (``MalformedReply``/``MalformedAnswer``/``ServerRefused``)
with a printable, bounded message, read with bounded memory.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from exchange.audit.note import Ed25519Signer
from exchange.client.errors import ClientError, MalformedReply, ServerRefused
from exchange.client.session import Client
from exchange.client.upload import _create, _offset
from exchange.crypto.anchor import AnchorAdmin, TrustAnchor
from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client_evidence import (
    MAX_ANSWER_BYTES,
    MalformedAnswer,
    commit_upload,
    create_upload,
)

IDENTITY = ParticipantIdentity.generate("prosecutor-1")
LOG_KEY = Ed25519Signer.generate("example.invalid/log").verifier().vkey()
ANCHOR = TrustAnchor(origin="example.invalid/log", log_key=LOG_KEY,
                     admins=(AnchorAdmin(IDENTITY.public_bundle()),))
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _against(handler: Handler, work: Callable[[Client], Awaitable[Any]],
             state_dir: Path) -> Any:
    """Run ``work`` with a Client talking to ``handler`` on 127.0.0.1; return its result."""

    async def main() -> Any:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            async with Client(IDENTITY, f"http://127.0.0.1:{port}", anchor=ANCHOR,
                              state_dir=state_dir) as client:
                return await work(client)
        finally:
            await runner.cleanup()

    return asyncio.run(main())


def _answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=status, body=body, headers=headers,
                            content_type="application/json")

    return handler


def _raises(kind: type[BaseException], handler: Handler, work: Callable[[Client], Awaitable[Any]],
            tmp_path: Path) -> BaseException:
    async def catch(client: Client) -> BaseException:
        with pytest.raises(kind) as caught:
            await work(client)
        return caught.value

    err: BaseException = _against(handler, catch, tmp_path)
    message = str(err)
    assert message.isprintable() and len(message) <= 600, message[:200]
    return err


@pytest.mark.parametrize("body", [b"not json", b"[" * 100_000, b'{"a":' * 50_000, b"\xff\xfe",
                                  b""], ids=["text", "deep-list", "deep-object", "bad-utf8",
                                             "empty"])
def test_call_with_unparseable_success_body_is_malformed_reply(body: bytes,
                                                                tmp_path: Path) -> None:
    err = _raises(MalformedReply, _answer(200, body),
                  lambda c: c.call("GET", "/v1/cases", doing="listing cases"), tmp_path)
    assert str(err).startswith("listing cases: the server at http://127.0.0.1")


def test_call_with_huge_success_body_reads_at_most_the_cap(tmp_path: Path) -> None:
    """A 100 MiB answer streamed without Content-Length: refused once past the cap."""
    piece = b" " * (1 << 20)
    sent = 0

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            for _ in range(100):
                await response.write(piece)
                sent += len(piece)
        except (ConnectionError, RuntimeError):
            pass
        return response

    err = _raises(MalformedReply, handler, lambda c: c.call("GET", "/v1/cases"), tmp_path)
    assert f"larger than {MAX_ANSWER_BYTES} bytes" in str(err)


def test_call_text_refuses_an_answer_past_the_cap(tmp_path: Path) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_length = MAX_ANSWER_BYTES + 1
        await response.prepare(request)
        return response  # never sends the body: the client must not wait for it

    # Decided from Content-Length alone: reading would end in a network error instead.
    err = _raises(MalformedReply, handler, lambda c: c.call_text("/v1/audit/checkpoint"),
                  tmp_path)
    assert "larger than" in str(err)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"type":"https://x/p/\\u001b[2J",'
                                  b'"detail":"\\r\\nfake prompt$ \\u0007"}',
                                  b"x" * (1 << 20)], ids=["deep", "control", "huge"])
def test_error_bodies_become_printable_refusals(body: bytes, tmp_path: Path) -> None:
    err = _raises(ServerRefused, _answer(403, body),
                  lambda c: c.call("GET", "/v1/cases", doing="listing\x1b[2J cases"), tmp_path)
    assert isinstance(err, ServerRefused) and err.status == 403
    assert err.slug == "http-error"
    assert str(err).startswith("listing\\x1b[2J cases: ")


def test_call_text_error_body_deeply_nested(tmp_path: Path) -> None:
    err = _raises(ServerRefused, _answer(500, b'{"a":' * 50_000),
                  lambda c: c.call_text("/v1/audit/checkpoint"), tmp_path)
    assert isinstance(err, ServerRefused) and err.status == 500


def test_reply_records_refuses_wrong_shapes(tmp_path: Path) -> None:
    async def work(client: Client) -> Any:
        reply = await client.call("GET", "/v1/cases/c1/evidence")
        return reply.records("evidence", "listing evidence")

    _raises(MalformedReply, _answer(200, b'{"evidence": [1, 2]}'), work, tmp_path)
    _raises(MalformedReply, _answer(200, b'["evidence"]'), work, tmp_path)
    assert _against(_answer(200, b'{"evidence": [{"a": 1}]}'), work, tmp_path) == [{"a": 1}]
    assert _against(_answer(200, b"{}"), work, tmp_path) == []


# -- tus creation, offset and commit answers --------------------------------------------

GOOD_ID = "u" * 32
GOOD_HEADERS = {"Location": f"/v1/uploads/{GOOD_ID}", "Upload-Expires": "x"}
GOOD_BODY = b'{"upload_id": "' + GOOD_ID.encode() + b'", "length": 10}'


@pytest.mark.parametrize(("headers", "body", "found"), [
    ({"Upload-Expires": "x"}, GOOD_BODY, "location ''"),
    ({**GOOD_HEADERS, "Location": "http://elsewhere.invalid/v1/uploads/u1"}, GOOD_BODY,
     "location"),
    ({**GOOD_HEADERS, "Location": "/v1/uploads/../cases"}, GOOD_BODY, "location"),
    (GOOD_HEADERS, b'{"length": 10}', "names upload 'none'"),
    (GOOD_HEADERS, b'{"upload_id": "other", "length": 10}', "names upload 'other'"),
    (GOOD_HEADERS, b'{"upload_id": "' + GOOD_ID.encode() + b'", "length": "10"}', "declares"),
    (GOOD_HEADERS, b'{"upload_id": "' + GOOD_ID.encode() + b'", "length": 11}', "declares"),
    ({"Location": GOOD_HEADERS["Location"]}, GOOD_BODY, "without upload-expires"),
    (GOOD_HEADERS, b"[1]", "names upload"),
    (GOOD_HEADERS, b"{" * 10_000, "not valid json"),
], ids=range(10))
def test_create_upload_checks_the_answer(headers: dict[str, str], body: bytes, found: str,
                                         tmp_path: Path) -> None:
    err = _raises(MalformedAnswer, _answer(201, body, headers),
                  lambda c: create_upload(c.http, "c1", 10), tmp_path)
    assert found in str(err).lower()


def test_create_upload_accepts_a_proper_answer(tmp_path: Path) -> None:
    handle = _against(_answer(201, GOOD_BODY, GOOD_HEADERS),
                      lambda c: create_upload(c.http, "c1", 10), tmp_path)
    assert (handle.path, handle.upload_id, handle.length) == (GOOD_HEADERS["Location"],
                                                              GOOD_ID, 10)


def test_client_upload_creation_turns_a_bad_answer_into_a_client_error(tmp_path: Path) -> None:
    err = _raises(MalformedReply, _answer(201, b"{}", GOOD_HEADERS),
                  lambda c: _create(c, "c1", 10), tmp_path)
    assert str(err).startswith("starting the upload to case 'c1': ")


@pytest.mark.parametrize("offset", [None, "-1", "1e3", "9" * 40])
def test_client_upload_offset_malformed(offset: str | None, tmp_path: Path) -> None:
    headers = {} if offset is None else {"Upload-Offset": offset}
    _raises(MalformedReply, _answer(200, b"", headers),
            lambda c: _offset(c, GOOD_HEADERS["Location"]), tmp_path)


def test_client_upload_offset_gone_is_none(tmp_path: Path) -> None:
    assert _against(_answer(404, b"{}"), lambda c: _offset(c, "/v1/uploads/x"),
                    tmp_path) is None


@pytest.mark.parametrize("body", [b"[]", b'{"evidence": 1}', b'{"evidence_id": 7}', b"nope"])
def test_commit_upload_checks_the_record(body: bytes, tmp_path: Path) -> None:
    _raises(MalformedAnswer, _answer(201, body),
            lambda c: commit_upload(c.http, "/v1/uploads/x", sealed_manifest=b"m",
                                    ciphertext_sha256="0" * 64, epoch=1, case_head="0" * 64),
        tmp_path)


def test_malformed_reply_is_a_client_error() -> None:
    assert issubclass(MalformedReply, ClientError)
