"""Protocol conformance over a real server: one test per tus 1.0 header rule, the 401
challenge (RFC 9110 §11.6.1, RFC 9421 §5.1), the upload quota and tlog-tiles caching.

tus rules (tus.io protocol 1.0.0): every response but OPTIONS carries
Tus-Resumable (we send it on OPTIONS too); 412 carries Tus-Version; HEAD
carries Upload-Offset, Upload-Length and Cache-Control: no-store; PATCH
answers carry the new Upload-Offset and (expiration extension) Upload-Expires;
OPTIONS answers discovery (Tus-Version, Tus-Extension, Tus-Max-Size) unsigned.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator

import aiohttp
import pytest

from exchange.audit.tiles import entries_path, tile_path
from exchange.transport.client import SignedSession
from exchange.wire.tus import PATCH_CONTENT_TYPE, TUS_VERSION, parse_expires
from tests.integration.test_server_evidence import deployed_with, new_case
from tests.server_harness import Deployment, run

KIB = 1024
LIMITS = {"max_chunk_bytes": 64 * KIB, "max_concurrent_uploads": 2}
TUS = {"Tus-Resumable": TUS_VERSION}


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed_with(tmp_path_factory.mktemp("conformance"), "sqlite", LIMITS) as d:
        yield d


async def _upload(dep: Deployment, pro: SignedSession, length: int) -> str:
    case_id, _ = await new_case(dep, pro)
    response = await pro.request("POST", f"/v1/cases/{case_id}/uploads",
                                 headers={**TUS, "Upload-Length": str(length)})
    async with response:
        assert response.status == 201
        assert response.headers["Tus-Resumable"] == TUS_VERSION
        parse_expires(response.headers["Upload-Expires"])
        return response.headers["Location"]


async def _terminate(pro: SignedSession, path: str) -> None:
    async with await pro.request("DELETE", path, headers=TUS) as response:
        assert response.status == 204
        assert response.headers["Tus-Resumable"] == TUS_VERSION


async def _patch(pro: SignedSession, path: str, offset: int, body: bytes,
                 **headers: str) -> aiohttp.ClientResponse:
    return await pro.request("PATCH", path, data=body, headers={
        **TUS, "Upload-Offset": str(offset), "Content-Type": PATCH_CONTENT_TYPE, **headers})


def test_options_is_unsigned_discovery(dep: Deployment) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as plain, \
                plain.options(dep.url + "/v1/uploads") as response:
            assert response.status == 204
            h = response.headers
            assert h["Tus-Version"] == TUS_VERSION and h["Tus-Resumable"] == TUS_VERSION
            assert set(h["Tus-Extension"].split(",")) == {"creation", "termination",
                                                          "expiration"}
            assert int(h["Tus-Max-Size"]) > 0
            assert h["Exchange-Max-Chunk-Size"] == str(64 * KIB)
            assert h["Upload-Limit"] == f"max-size={h['Tus-Max-Size']}, " \
                                        f"max-append-size={64 * KIB}"
            assert "Signature" not in h and "Exchange-Audit-Index" not in h
    run(go())


def test_patch_answer_carries_offset_and_expires(dep: Deployment) -> None:
    async def go() -> None:
        async with dep.session("prosecutor") as pro:
            path = await _upload(dep, pro, 10)
            async with await _patch(pro, path, 0, b"abcd") as response:
                assert response.status == 204
                assert response.headers["Upload-Offset"] == "4"
                assert response.headers["Tus-Resumable"] == TUS_VERSION
                parse_expires(response.headers["Upload-Expires"])
            async with await pro.request("HEAD", path, headers=TUS) as head:
                assert head.status == 200
                assert (head.headers["Upload-Offset"], head.headers["Upload-Length"]) == (
                    "4", "10")
                assert head.headers["Cache-Control"] == "no-store"
                assert head.headers["Tus-Resumable"] == TUS_VERSION
            await _terminate(pro, path)
    run(go())


def test_error_answers_carry_tus_resumable_and_412_tus_version(dep: Deployment) -> None:
    async def go() -> None:
        async with dep.session("prosecutor") as pro:
            path = await _upload(dep, pro, 10)
            async with await _patch(pro, path, 3, b"x") as mismatch:
                assert mismatch.status == 409
                assert mismatch.headers["Tus-Resumable"] == TUS_VERSION
            async with await pro.request("HEAD", path, headers={
                    "Tus-Resumable": "0.2.2"}) as old:
                assert old.status == 412
                assert old.headers["Tus-Version"] == TUS_VERSION
                assert old.headers["Tus-Resumable"] == TUS_VERSION
            async with await pro.request("HEAD", "/v1/uploads/nope", headers=TUS) as missing:
                assert missing.status == 404
                assert missing.headers["Tus-Resumable"] == TUS_VERSION
            await _terminate(pro, path)
        async with aiohttp.ClientSession() as plain, \
                plain.head(dep.url + path, headers=TUS) as unsigned:
            assert unsigned.status == 401
            assert unsigned.headers["Tus-Resumable"] == TUS_VERSION
            assert unsigned.headers["WWW-Authenticate"].startswith("Signature ")
            assert '"tus-resumable"' in unsigned.headers["Accept-Signature"]
    run(go())


def test_chunk_over_the_limit_gets_413_with_the_limit(dep: Deployment) -> None:
    async def go() -> None:
        async with dep.session("prosecutor") as pro:
            path = await _upload(dep, pro, 200 * KIB)
            async with await _patch(pro, path, 0, bytes(64 * KIB + 1)) as response:
                assert response.status == 413
                assert response.headers["Tus-Resumable"] == TUS_VERSION
                problem = json.loads(await response.text())
                assert problem["max_bytes"] == 64 * KIB
            await _terminate(pro, path)
    run(go())


def test_quota_counts_unfinished_uploads_only_and_429_says_when(dep: Deployment) -> None:
    async def go() -> None:
        async with dep.session("prosecutor2") as inv:
            done = await _upload(dep, inv, 3)
            async with await _patch(inv, done, 0, b"abc") as response:
                assert response.status == 204
            # The complete upload does not count as unfinished: two more may start.
            paths = [await _upload(dep, inv, 5) for _ in range(2)]
            case_id, _ = await new_case(dep, inv)
            async with await inv.request("POST", f"/v1/cases/{case_id}/uploads",
                                         headers={**TUS, "Upload-Length": "5"}) as refused:
                assert refused.status == 429
                assert refused.headers["Tus-Resumable"] == TUS_VERSION
                assert 0 < int(refused.headers["Retry-After"]) <= 7 * 24 * 3600
            for path in (done, *paths):
                await _terminate(inv, path)
    run(go())


def test_tiles_cache_and_compress_as_tlog_tiles_says(dep: Deployment) -> None:
    async def go() -> None:
        async with dep.session("auditor") as aud:
            async with await aud.request("GET", "/v1/audit/checkpoint") as cp:
                assert cp.headers["Cache-Control"] == "private, max-age=5"
                size = int((await cp.text()).split("\n")[1])
            assert size < 256  # a young log: every tile is partial
            partial = "/v1/audit/" + tile_path(0, 0, size)
            async with await aud.request("GET", partial) as response:
                assert response.status == 200
                assert response.headers["Cache-Control"] == "public, max-age=5"
            bundle = "/v1/audit/" + entries_path(0, size)

            async def get(accept: str | None) -> tuple[aiohttp.ClientResponse, bytes]:
                headers = aud.sign("GET", bundle, {} if accept is None
                                   else {"Accept-Encoding": accept})
                async with aud.session.get(aud.url(bundle), headers=headers,
                                           auto_decompress=False,
                                           skip_auto_headers=("Accept-Encoding",)) as r:
                    return r, await r.read()

            zipped, body = await get("gzip, deflate")
            assert zipped.status == 200
            assert zipped.headers["Content-Encoding"] == "gzip"
            assert zipped.headers["Cache-Control"] == "private, max-age=5"
            assert zipped.headers["Vary"] == "Accept-Encoding"
            plain, raw = await get(None)
            assert plain.status == 200 and "Content-Encoding" not in plain.headers
            assert gzip.decompress(body) == raw
            refused, raw_again = await get("gzip;q=0")
            assert "Content-Encoding" not in refused.headers and raw_again == raw
    run(go())


def test_openapi_names_the_partial_tile_path_and_every_operation(dep: Deployment) -> None:
    async def go() -> None:
        async with aiohttp.ClientSession() as plain, \
                plain.get(dep.url + "/v1/openapi.json") as response:
            document = await response.json()
        paths = document["paths"]
        partial = paths["/v1/audit/tile/{level}/{s1}.p/{width}"]["get"]
        assert {p["name"] for p in partial["parameters"]} == {"level", "s1", "width"}
        for item in paths.values():
            for op in item.values():
                assert op["operationId"]
                for response in op["responses"].values():
                    for content in response.get("content", {}).values():
                        assert content["schema"] != {"type": "object"}, op["operationId"]
        assert paths["/v1/uploads"]["options"]["security"] == []
        patch = paths["/v1/uploads/{uid}"]["patch"]
        # A PATCH binds its body by one of two signed headers (OpenAPI cannot say "one of",
        # so both are documented, each naming the other).
        digests = {p["name"]: p for p in patch["parameters"]
                   if p["name"] in ("Content-Digest", "Exchange-Prefix-Digest")}
        assert set(digests) == {"Content-Digest", "Exchange-Prefix-Digest"}
        assert "Exchange-Prefix-Digest" in digests["Content-Digest"]["description"]
        assert "Content-Digest" in digests["Exchange-Prefix-Digest"]["description"]
        assert set(patch["responses"]["204"]["headers"]) >= {
            "Upload-Offset", "Upload-Expires", "Tus-Resumable", "Exchange-Audit-Index"}
    run(go())
