"""``exchange.client.upload._stream`` against a small tus server on 127.0.0.1 that checks
every PATCH's Exchange-Prefix-Digest (or Content-Digest), can cut a PATCH off half-way
and can say, like a restarted server process, that it cannot check prefix digests.

The server keeps the bytes in memory; what it holds at the end must be the
one-pass age file, whatever connection drops happened (the client asks HEAD
for the offset and regenerates the ciphertext from there).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from pathlib import Path

import pytest
from aiohttp import web

from exchange.audit.note import Ed25519Signer
from exchange.client.session import Client
from exchange.client.upload import _Rate, _stream
from exchange.crypto.age import X25519Identity
from exchange.crypto.anchor import AnchorAdmin, TrustAnchor
from exchange.crypto.keys import ParticipantIdentity
from exchange.crypto.resumable import ResumableAge

MIB = 1024 * 1024
IDENTITY = ParticipantIdentity.generate("prosecutor-1")
LOG_KEY = Ed25519Signer.generate("example.invalid/log").verifier().vkey()
ANCHOR = TrustAnchor(origin="example.invalid/log", log_key=LOG_KEY,
                     admins=(AnchorAdmin(IDENTITY.public_bundle()),))
PATH = "/v1/uploads/" + "u" * 32


class _TusServer:
    def __init__(self, length: int, cut: set[int], *, no_prefix: set[int] | None = None,
                 old: bool = False) -> None:
        self.old = old
        self.data = bytearray()
        self.length = length
        self.cut = cut  # PATCH numbers (1-based) to cut off half-way, once each
        self.no_prefix = no_prefix or set()  # PATCH numbers refusing a prefix digest
        self.patches = 0
        self.offsets: list[int] = []
        self.bindings: list[str] = []  # how each accepted PATCH bound its body

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {"Tus-Resumable": "1.0.0"}
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers,
                                                     "Upload-Offset": str(len(self.data))})
        assert request.method == "PATCH"
        self.patches += 1
        offset = int(request.headers["Upload-Offset"])
        self.offsets.append(offset)
        if offset != len(self.data):
            return web.json_response({"type": "x/upload-offset-mismatch"}, status=409)
        if self.patches in self.cut:
            self.cut.discard(self.patches)
            await request.content.read(64 * 1024)
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        body = await request.read()
        prefix = request.headers.get("Exchange-Prefix-Digest")
        if prefix is not None and self.patches in self.no_prefix:
            return web.json_response({"type": "x/prefix-digest-unavailable"}, status=409)
        if prefix is not None and self.old:  # a server older than prefix digests
            return web.json_response({"type": "x/component-missing"}, status=400)
        hashed = bytes(self.data) + body if prefix is not None else body
        found = "sha-256=:" + base64.b64encode(hashlib.sha256(hashed).digest()).decode() + ":"
        if (prefix if prefix is not None else request.headers.get("Content-Digest")) != found:
            return web.json_response({"type": "x/digest-mismatch"}, status=400)
        self.bindings.append("prefix" if prefix is not None else "content")
        self.data += body
        return web.Response(status=204, headers={**headers, "Upload-Offset": str(len(self.data))})


def _run(tmp_path: Path, plaintext: bytes, *, start: int, cut: set[int],
         chunk_bytes: int, no_prefix: set[int] | None = None,
         old: bool = False) -> tuple[_TusServer, bytes, str]:
    recipient = X25519Identity.generate().recipient()
    age = ResumableAge.new([recipient])
    stream = age.stream()
    cipher = age.header + stream.update(plaintext) + stream.finalize()
    server = _TusServer(len(cipher), cut, no_prefix=no_prefix, old=old)
    server.data += cipher[:max(start, 0)]
    source = tmp_path / "plain.bin"
    source.write_bytes(plaintext)

    async def main() -> str:
        app = web.Application(client_max_size=64 * MIB)
        app.router.add_route("*", "/{tail:.*}", server.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        fd = os.open(source, os.O_RDONLY)
        try:
            async with Client(IDENTITY, f"http://127.0.0.1:{port}", anchor=ANCHOR,
                              state_dir=tmp_path / "state") as client:
                done = await _stream(client, fd, age=age, upload_path=PATH, offset=start,
                                     length=len(cipher), chunk_bytes=chunk_bytes,
                                     progress=None, rate=_Rate(None))
        finally:
            os.close(fd)
            await runner.cleanup()
        assert done.produced == len(cipher)
        assert done.plaintext_sha256 == hashlib.sha256(plaintext).hexdigest()
        return done.ciphertext_sha256

    sha = asyncio.run(main())
    return server, cipher, sha


@pytest.mark.parametrize(("start", "cut"), [(0, set()), (0, {2}), (0, {1, 3}), (100_000, {2})])
def test_stream_survives_dropped_patches_and_sends_the_age_file(
        tmp_path: Path, start: int, cut: set[int]) -> None:
    plaintext = os.urandom(3 * MIB + 777)
    server, cipher, sha = _run(tmp_path, plaintext, start=start, cut=set(cut),
                               chunk_bytes=MIB)
    assert bytes(server.data) == cipher
    assert sha == hashlib.sha256(cipher).hexdigest()
    # Every PATCH after a drop started again where the server was.
    assert server.offsets[0] == start
    assert not server.cut


def test_prefix_digests_by_default_and_content_digests_once_a_server_cannot_check_them(
        tmp_path: Path) -> None:
    """A restarted server process (no running hash) answers prefix-digest-unavailable:
    that PATCH and the rest of the run go with Content-Digests of their own bytes."""
    plaintext = os.urandom(3 * MIB + 777)
    server, cipher, _ = _run(tmp_path, plaintext, start=0, cut=set(), chunk_bytes=MIB,
                             no_prefix={2})
    assert bytes(server.data) == cipher
    assert server.bindings[0] == "prefix"
    assert set(server.bindings[1:]) == {"content"} and len(server.bindings) > 2


def test_a_server_older_than_prefix_digests_gets_content_digests(tmp_path: Path) -> None:
    """An older server's profile requires content-digest on every body (400
    component-missing): the upload goes on with Content-Digests from the first PATCH."""
    plaintext = os.urandom(2 * MIB + 5)
    server, cipher, _ = _run(tmp_path, plaintext, start=0, cut=set(), chunk_bytes=MIB,
                             old=True)
    assert bytes(server.data) == cipher
    assert set(server.bindings) == {"content"}


def test_nothing_to_send_only_hashes(tmp_path: Path) -> None:
    plaintext = os.urandom(100_000)
    server, cipher, sha = _run(tmp_path, plaintext, start=-1, cut=set(), chunk_bytes=MIB)
    assert server.patches == 0 and sha == hashlib.sha256(cipher).hexdigest()
