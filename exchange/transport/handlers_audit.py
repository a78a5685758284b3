"""Audit-log routes: checkpoint, C2SP tlog-tiles, proofs and tlog-proof receipts (thin).

The tlog-tiles read API puts the tile index in several path segments
(``tile/0/x001/x234/067.p/8``), and route placeholders match one segment
each, so the tile routes are registered once per segment count (up to
:data:`MAX_TILE_SEGMENTS`: three index groups plus the partial-width suffix,
i.e. logs of up to 256·10⁹ entries) and all of them parse the raw path with
``exchange.audit.tiles.parse_tile_path``, which accepts only canonical paths.
Entry-bundle routes are registered first so ``tile/entries/...`` never
reaches the hash-tile routes. See ``exchange.service.auditlog`` for who may
read what and why checkpoint and tile fetches are not logged (only refused).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from exchange.audit.tiles import TileError, TileId, parse_tile_path
from exchange.errors import ExchangeError
from exchange.ops.logkey import read_rotations
from exchange.service import auditlog
from exchange.service.auditlog import (
    AUDIT_READ,
    ENTRY_READERS,
    Fetched,
    prefetch,
    read_op,
    release,
)
from exchange.transport.auth import authenticate, perform, signed_request
from exchange.transport.openapi import B64, json_content, obj, operation
from exchange.transport.problems import AUDIT_INDEX_HEADER, is_outage
from exchange.transport.routing import SERVICE_KEY, Route, respond_json
from exchange.transport.witnesses import WITNESSES_KEY

__all__ = ["IMMUTABLE", "MAX_TILE_SEGMENTS", "SHORT", "routes", "tile_cache_control"]

#: Path segments after ``tile/<L>/`` (or ``tile/entries/``) the routes accept.
MAX_TILE_SEGMENTS = 4
_PREFIX = "/v1/audit/"
_TAGS = ("audit",)
_TEXT = "text/plain; charset=utf-8"
_OCTETS = "application/octet-stream"


#: C2SP tlog-tiles: full tiles and entry bundles never change, so clients and
#: caches keep them for a year; partial tiles and the checkpoint move on, so
#: they are cached for seconds only. Entry bundles are for auditors and
#: admins: a shared cache must not hand them to anyone else ("private").
IMMUTABLE = "max-age=31536000, immutable"
SHORT = "max-age=5"


def _binary(body: bytes, content_type: str, audit_index: int | None, *,
            cache: str = "no-store") -> web.Response:
    """Return a non-JSON body with its caching rule (default: never cached)."""
    headers = {"Cache-Control": cache}
    if audit_index is not None:
        headers[AUDIT_INDEX_HEADER] = str(audit_index)
    response = web.Response(body=body, headers=headers)
    response.headers["Content-Type"] = content_type
    return response


def tile_cache_control(tile_id: TileId) -> str:
    """Return the Cache-Control of a tile: public hash tiles, private entry bundles."""
    scope = "private" if tile_id.level is None else "public"
    return f"{scope}, {SHORT if tile_id.partial else IMMUTABLE}"


def _accepts_gzip(request: web.Request) -> bool:
    for coding in request.headers.get("Accept-Encoding", "").lower().split(","):
        name, _, params = coding.strip().partition(";")
        if name.strip() in ("gzip", "*") and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return True
    return False


async def checkpoint(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/checkpoint: the latest signed checkpoint note (authenticated, unlogged)."""
    await authenticate(request, AUDIT_READ, object="checkpoint")
    witnesses = request.app.get(WITNESSES_KEY)
    if witnesses is not None and witnesses.witnessed is not None:
        # With witnesses, the checkpoint is the newest one a quorum cosigned.
        return _binary(witnesses.witnessed.note, _TEXT, None)
    kept = await auditlog.current_checkpoint(request.app[SERVICE_KEY].store)
    return _binary(kept.note, _TEXT, None, cache=f"private, {SHORT}")


async def log_keys(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/log-keys: the log-key transitions, oldest first (authenticated, unlogged).

    Each carries the note both the old and the new key signed; a client
    takes a new key from nothing else (``exchange.audit.checkpoint.open_transition``).
    """
    await authenticate(request, AUDIT_READ, object="log-keys")
    rotations = read_rotations(request.app[SERVICE_KEY].config.data_dir)
    return respond_json({"rotations": [
        {"index": r.index, "new_key": r.new_key, "transition": r.to_json()["transition"]}
        for r in rotations]}, audit_index=None)


async def tile(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/tile/...: a hash tile (anyone) or an entry bundle (auditors, admins).

    Authenticated, refusals logged, successful reads not (see ``exchange.service.auditlog``).
    Entry bundles are gzip-compressed when the client accepts it (tlog-tiles
    allows it; the JSON-ish entries shrink well), hash tiles never are (random).
    """
    service = request.app[SERVICE_KEY]
    store = service.store
    path = request.rel_url.raw_path[len(_PREFIX):]
    readers = ENTRY_READERS if path.startswith("tile/entries/") else None
    fetched: Fetched[bytes]
    tile_id: TileId | None = None
    try:
        tile_id = parse_tile_path(path)
    except TileError as err:
        fetched = Fetched(error=auditlog.tile_error(err))
    else:
        path = tile_id.path()
        if tile_id.level is None:
            readers = ENTRY_READERS
            fetched = await prefetch(auditlog.entry_bundle(store, tile_id))
        else:
            fetched = await prefetch(auditlog.hash_tile(store, tile_id))
    actor = await authenticate(request, AUDIT_READ, object=path[:120])
    try:
        value = release(fetched, actor, path[:120], readers=readers)
    except ExchangeError as err:
        if is_outage(err):
            raise
        raise await service.log_denied(signed_request(request), AUDIT_READ, err, actor=actor,
                                       object=path[:120]) from err
    assert tile_id is not None  # a malformed path was refused above
    response = _binary(value, _OCTETS, None, cache=tile_cache_control(tile_id))
    if tile_id.level is None:
        response.headers["Vary"] = "Accept-Encoding"
        if _accepts_gzip(request):
            response.enable_compression(web.ContentCoding.gzip)
    return response


async def _proof(request: web.Request, kind: str) -> web.StreamResponse:
    store = request.app[SERVICE_KEY].store
    query = request.rel_url.query

    async def read() -> dict[str, Any]:
        if kind == "inclusion":
            index = auditlog.parse_size(query.get("index"), "index")
            size = auditlog.parse_size(query.get("size"), "size")
            return await auditlog.inclusion_proof(store, index, size)
        old = auditlog.parse_size(query.get("old"), "old")
        new = auditlog.parse_size(query.get("new"), "new")
        return await auditlog.consistency_proof(store, old, new)

    fetched = await prefetch(read())
    resource = f"proof/{kind}"
    # The sizes go into the entry, so an auditor can tie it to the signed query.
    names = ("index", "size") if kind == "inclusion" else ("old", "new")
    op = read_op(fetched, resource, selected=lambda proof: {n: proof[n] for n in names})
    done = await perform(request, AUDIT_READ, op, object=resource)
    return respond_json(done.value, audit_index=done.audit_index)


async def inclusion(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/proof/inclusion?index=I&size=S: RFC 6962 inclusion proof."""
    return await _proof(request, "inclusion")


async def consistency(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/proof/consistency?old=A&new=B: RFC 6962 consistency proof."""
    return await _proof(request, "consistency")


async def receipt(request: web.Request) -> web.StreamResponse:
    """GET /v1/audit/receipt/{index}: the tlog-proof receipt of one entry."""
    store = request.app[SERVICE_KEY].store
    text = request.match_info["index"]

    witnesses = request.app.get(WITNESSES_KEY)
    witnessed = None if witnesses is None else witnesses.witnessed

    async def read() -> auditlog.Receipt:
        return await auditlog.receipt(store, auditlog.parse_size(text, "index"), witnessed)

    fetched = await prefetch(read())
    resource = f"receipt/{text[:30]}"
    op = read_op(fetched, resource, check=auditlog.check_receipt_reader)
    done = await perform(request, AUDIT_READ, op, object=resource)
    return _binary(done.value.text, _TEXT, done.audit_index)


def _size_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": True, "description": description,
            "schema": {"type": "integer", "minimum": 0}}


def _content(media: str, description: str) -> dict[str, Any]:
    return {"200": {"description": description,
                    "content": {media: {"schema": {"type": "string"}}}}}


_HASHES = {"type": "array", "items": B64}


def _tile_templates() -> list[tuple[str, str]]:
    """Return (index path template, what it is): partial tiles first, then any shape.

    A partial tile ends in ``NNN.p/<width>``: its own template names the last
    index group and the width, so a generated client never has to pass
    ``001.p`` as a value. The generic templates still match everything the
    parser accepts (full tiles, and partial ones too).
    """
    out: list[tuple[str, str]] = []
    for count in range(1, MAX_TILE_SEGMENTS):
        groups = "/".join(f"{{s{i}}}" for i in range(1, count + 1))
        out.append((f"{groups}.p/{{width}}", f"partial, {count} index group(s)"))
    for count in range(1, MAX_TILE_SEGMENTS + 1):
        out.append(("/".join(f"{{s{i}}}" for i in range(1, count + 1)),
                    f"{count} index segment(s)"))
    return out


def _tile_routes() -> list[Route]:
    out: list[Route] = []
    for entries in (True, False):
        for segments, shape in _tile_templates():
            level = "entries" if entries else "{level}"
            summary = (
                "C2SP tlog-tiles entry bundle (auditor, admin)" if entries
                else "C2SP tlog-tiles hash tile (32-byte hashes)"
            )
            out.append(Route(
                method="GET", path=f"/v1/audit/tile/{level}/{segments}", handler=tile,
                action=AUDIT_READ,
                openapi=operation(
                    f"{summary}; {shape}", tags=_TAGS,
                    description="The segments spell the tile index in x-prefixed "
                                "three-digit groups, optionally followed by .p/<width> "
                                "(C2SP tlog-tiles).",
                    responses=_content(_OCTETS, "the tile"),
                ),
            ))
    return out


def routes() -> list[Route]:
    """Return the audit-log routes."""
    return [
        Route(method="GET", path="/v1/audit/checkpoint", handler=checkpoint,
              action=AUDIT_READ,
              openapi=operation(
                  "the latest signed checkpoint (C2SP tlog-checkpoint); not logged",
                  tags=_TAGS, problems=(401,),
                  responses=_content("text/plain", "the signed checkpoint note"))),
        Route(method="GET", path="/v1/audit/log-keys", handler=log_keys,
              action=AUDIT_READ,
              openapi=operation(
                  "the log-key transitions (each a checkpoint note signed by the old and the "
                  "new key); not logged", tags=_TAGS, problems=(401,),
                  responses={"200": {"description": "the transitions, oldest first",
                                     "content": json_content(obj({"rotations": {
                                         "type": "array", "items": obj({
                                             "index": {"type": "integer"},
                                             "new_key": {"type": "string"},
                                             "transition": B64},
                                             required=["index", "new_key", "transition"])}},
                                         required=["rotations"]))}})),
        *_tile_routes(),
        Route(method="GET", path="/v1/audit/proof/inclusion", handler=inclusion,
              action=AUDIT_READ,
              openapi=operation(
                  "RFC 6962 inclusion proof of leaf index in the tree of size", tags=_TAGS,
                  parameters=[_size_param("index", "leaf index (0-based)"),
                              _size_param("size", "tree size, at most the current size")],
                  responses={"200": {"description": "the proof", "content": json_content(obj(
                      {"index": {"type": "integer"}, "size": {"type": "integer"},
                       "hashes": _HASHES}, required=["index", "size", "hashes"]))}})),
        Route(method="GET", path="/v1/audit/proof/consistency", handler=consistency,
              action=AUDIT_READ,
              openapi=operation(
                  "RFC 6962 consistency proof between two tree sizes", tags=_TAGS,
                  parameters=[_size_param("old", "the smaller tree size"),
                              _size_param("new", "the larger tree size, at most the "
                                                 "current size")],
                  responses={"200": {"description": "the proof", "content": json_content(obj(
                      {"old": {"type": "integer"}, "new": {"type": "integer"},
                       "hashes": _HASHES}, required=["old", "new", "hashes"]))}})),
        Route(method="GET", path="/v1/audit/receipt/{index}", handler=receipt,
              action=AUDIT_READ,
              openapi=operation(
                  "C2SP tlog-proof receipt of one entry (own entries; auditors any)",
                  tags=_TAGS, responses=_content("text/plain", "the receipt"))),
    ]
