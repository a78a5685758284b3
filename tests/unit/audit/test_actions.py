"""The action table (``exchange.audit.actions``): in step with the server's routes, and
each binding catches a request for something other than what its entry names."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.web_urldispatcher import _unquote_path_safe
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from exchange.audit.actions import (
    ACTION_ROUTES,
    MAX_TILE_SEGMENTS,
    RETIRED_ACTIONS,
    ActionRoute,
    check_binding,
    decode_segment,
    loggable,
    request_target,
    routes_for,
    split_target,
)
from exchange.audit.entry import KNOWN_ACTIONS, LEGACY_ACTIONS, LOG_INIT, SERVER_ACTIONS
from exchange.config import ServerConfig
from exchange.crypto.statement import STATEMENT_TYPES
from exchange.service.core import Service, _loggable_id
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.sqlite_store import SqliteStore
from exchange.transport import handlers_audit
from exchange.transport.app import build_app, collect_routes
from exchange.transport.routing import ROUTES_KEY

_TABLE = {(r.method, r.path, r.action) for r in ACTION_ROUTES}


def _server_routes(tmp_path: Path) -> set[tuple[str, str, str | None, bool]]:
    """(method, path, action, signed) of every route the app's router serves."""

    async def walk() -> set[tuple[str, str, str | None, bool]]:
        store = await SqliteStore.open(tmp_path)
        try:
            config = ServerConfig(data_dir=tmp_path, origin="walk.test/log")
            service = Service(store=store, blobs=FsBlobStore(tmp_path), config=config)
            app = build_app(service, base_url="http://127.0.0.1:1")
            out = set()
            for resource_route in app.router.routes():
                info = resource_route.get_info()
                path = info.get("formatter") or info.get("path")
                assert isinstance(path, str)
                route = app[ROUTES_KEY][(resource_route.method, path)]
                out.add((route.method, route.path, route.action, route.signed))
            return out
        finally:
            await store.close()

    return asyncio.run(walk())


#: Routes the table may name that the server does not serve (none: they are in step).
_STATEMENT_ROUTES: set[tuple[str, str]] = set()


def test_table_and_server_routes_are_in_step(tmp_path: Path) -> None:
    walked = _server_routes(tmp_path)
    discovered = {(r.method, r.path, r.action, r.signed) for r in collect_routes()}
    assert walked == discovered  # the router serves exactly the discovered routes
    signed = {(m, p, a) for m, p, a, is_signed in walked if is_signed}
    assert signed - _TABLE == set(), "signed routes missing from exchange.audit.actions"
    retired = {row for row in _TABLE if row[2] in RETIRED_ACTIONS}
    assert _TABLE - signed == retired, "table rows no signed route of the server has"
    assert not {a for _, _, a in signed} & RETIRED_ACTIONS
    assert len(_TABLE) == len(ACTION_ROUTES)  # no duplicate rows
    assert handlers_audit.MAX_TILE_SEGMENTS == MAX_TILE_SEGMENTS


def test_statement_routes_log_exactly_the_statement_types_without_a_route() -> None:
    by_route = {(r.method, r.path): r.action for r in ACTION_ROUTES
                if (r.method, r.path) not in _STATEMENT_ROUTES}
    routed = {a for a in by_route.values() if a in STATEMENT_TYPES}
    via_statements = {r.action for r in ACTION_ROUTES if (r.method, r.path) in _STATEMENT_ROUTES}
    assert routed | via_statements == set(STATEMENT_TYPES)
    assert routed & via_statements == set()


def test_every_action_but_the_servers_own_has_a_route() -> None:
    assert {r.action for r in ACTION_ROUTES} == (KNOWN_ACTIONS - {LOG_INIT} - LEGACY_ACTIONS
                                                 - SERVER_ACTIONS)
    assert all(routes_for(action) == () for action in {LOG_INIT, *SERVER_ACTIONS})


# -- bindings, route by route ---------------------------------------------------------

_SAMPLE = {"cid": "case-1", "pid": "p-9", "n": "3", "uid": "u" * 16, "eid": "ev-1",
           "index": "7", "level": "0", "s1": "x001", "s2": "x002", "s3": "x003", "s4": "004",
           "width": "7"}


def _path(route: ActionRoute) -> str:
    return route.path.format_map(_SAMPLE)


def _query(route: ActionRoute) -> str:
    return "&".join(f"{name}={i + 5}" for i, (name, _) in enumerate(route.query))


def _entry(route: ActionRoute, outcome: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"action": route.action, "outcome": outcome, "case": None,
                             "object": None, "details": {}}
    for binding in route.ok if outcome == "ok" else route.denied:
        value: object = binding.render(_SAMPLE, _SAMPLE)
        if binding.field == "details.epoch":
            value = int(str(value))  # logged parsed, as the service does
        if binding.field.startswith("details."):
            entry["details"][binding.field[8:]] = value
        else:
            entry[binding.field] = value
    for i, (_, field_name) in enumerate(route.query):
        entry["details"][field_name[8:]] = i + 5
    return entry


def _bound_fields(route: ActionRoute, outcome: str) -> list[str]:
    bindings = route.ok if outcome == "ok" else route.denied
    fields = [b.field for b in bindings]
    if outcome == "ok":
        fields += [field_name for _, field_name in route.query]
    return fields


def _set(entry: dict[str, Any], field_name: str, value: object) -> dict[str, Any]:
    out = dict(entry, details=dict(entry["details"]))
    if field_name.startswith("details."):
        out["details"][field_name[8:]] = value
    else:
        out[field_name] = value
    return out


@pytest.mark.parametrize("route", ACTION_ROUTES, ids=lambda r: f"{r.method} {r.path}")
@pytest.mark.parametrize("outcome", ["ok", "denied"])
def test_each_route_backs_its_own_entry_and_nothing_else(route: ActionRoute,
                                                         outcome: str) -> None:
    path, query = _path(route), _query(route)
    entry = _entry(route, outcome)
    assert check_binding(entry, route.method, path, query) is None
    for field_name in _bound_fields(route, outcome):
        problem = check_binding(_set(entry, field_name, "someone-else"), route.method, path,
                                query)
        assert problem is not None, field_name
        assert field_name in problem.expected and "someone-else" in problem.found
        if outcome == "ok":  # an ok entry must name the bound value, not leave it out
            assert check_binding(_set(entry, field_name, None), route.method, path,
                                 query) is not None
        else:  # a refusal before the handler parsed the path names nothing
            assert check_binding(_set(entry, field_name, None), route.method, path,
                                 query) is None
    other = "POST" if route.method != "POST" else "GET"
    problem = check_binding(entry, other, path, query)
    assert problem is not None and route.method in problem.expected
    assert check_binding(entry, route.method, path + "/extra", query) is not None


def test_a_listing_cannot_back_a_download() -> None:
    entry = {"action": "evidence.download", "outcome": "ok", "case": "c1", "object": "ev-1",
             "details": {}}
    problem = check_binding(entry, "GET", "/v1/cases", "")
    assert problem is not None
    assert problem.expected == "GET /v1/evidence/{eid}/content"
    assert "GET /v1/cases" in problem.found
    unknown = check_binding(dict(entry, action="evidence.shred"), "GET", "/v1/cases", "")
    assert unknown is not None and "no signed route" in unknown.message


def test_denied_entries_compare_the_logged_form_of_garbage_ids() -> None:
    entry = {"action": "case.show", "outcome": "denied", "case": "a?b", "object": None,
             "details": {}}
    assert check_binding(entry, "GET", "/v1/cases/a%00b", "") is None
    assert check_binding(entry, "GET", "/v1/cases/a%01c", "") is not None
    long_id = "x" * 300
    entry = dict(entry, case="x" * 256)
    assert check_binding(entry, "GET", f"/v1/cases/{long_id}", "") is None


def test_proof_queries_bind_the_logged_sizes() -> None:
    route = next(r for r in ACTION_ROUTES if r.path.endswith("/proof/inclusion"))
    entry = _entry(route, "ok")
    assert check_binding(entry, "GET", _path(route), "index=5&size=6") is None
    assert check_binding(entry, "GET", _path(route), "size=6&index=5&index=9") is None
    assert check_binding(entry, "GET", _path(route), "index=5&size=7") is not None
    assert check_binding(entry, "GET", _path(route), "index=5") is not None


def test_a_proof_entry_that_names_no_sizes_is_bound_by_its_signed_query() -> None:
    """Servers before the binding logged proof reads without sizes; the query binds them."""
    for route in (r for r in ACTION_ROUTES if r.query):
        entry = _entry(route, "ok")
        for _, field_name in route.query:
            del entry["details"][field_name[8:]]
        assert check_binding(entry, "GET", _path(route), _query(route)) is None, route.path
        # What the entry does restate is still bound: a wrong or null size is refused.
        name, field_name = route.query[0]
        for claimed in (999, None):
            wrong = _set(entry, field_name, claimed)
            problem = check_binding(wrong, "GET", _path(route), _query(route))
            assert problem is not None and f"query {name}" in problem.expected
        # And the route still is: a listing cannot back a proof entry without sizes.
        assert check_binding(entry, "GET", "/v1/cases", "") is not None


def test_tile_entries_log_the_raw_path() -> None:
    entry = {"action": "audit.read", "outcome": "ok", "case": None,
             "object": "tile/0/x001/002.p/5",
             "details": {"resource": "tile/0/x001/002.p/5"}}
    assert check_binding(entry, "GET", "/v1/audit/tile/0/x001/002.p/5", "") is None
    assert check_binding(entry, "GET", "/v1/audit/tile/0/x001/003.p/5", "") is not None
    denied = {"action": "audit.read", "outcome": "denied", "case": None,
              "object": "tile/entries/%41", "details": {}}
    assert check_binding(denied, "GET", "/v1/audit/tile/entries/%41", "") is None


# -- decoding and splitting -------------------------------------------------------------

_PIECES = st.one_of(
    st.sampled_from(list("aZ09-._~!$&'()*+,;=:@%Ffé")),
    st.integers(0, 255).map(lambda b: f"%{b:02X}"),
    st.integers(0, 255).map(lambda b: f"%{b:02x}"),
    st.sampled_from(["%E2%82%AC", "%C3%A9", "%F0%9F%98%80", "%ED%A0%80", "%2F", "%25"]),
)


@given(st.lists(_PIECES, min_size=1, max_size=10).map("".join))
def test_decode_segment_agrees_with_the_router(raw: str) -> None:
    # What aiohttp's DynamicResource._match does with a matched raw segment.
    routed = _unquote_path_safe(URL.build(path="/s/" + raw, encoded=True).path_safe[3:])
    assert decode_segment(raw) == routed


@given(st.text(max_size=300))
def test_loggable_mirrors_the_service(value: str) -> None:
    assert loggable(value) == _loggable_id(value)


def test_split_target_and_request_target() -> None:
    assert split_target("https://x.example:8443/v1/cases?a=b?c") == (
        "https://x.example:8443", "/v1/cases", "a=b?c")
    assert split_target("https://x.example") is None
    assert split_target("/v1/cases") is None
    covered = [['"@method"', "GET"], ['"@target-uri"', "http://h/v1/cases/c"],
               ["content-type", "x"]]
    assert request_target(covered) == ("GET", "http://h", "/v1/cases/c", "")
    assert request_target(covered[1:]) is None
    assert request_target(covered[:1]) is None


def test_patterns_match_one_raw_segment_per_placeholder() -> None:
    route = routes_for("case.show")[0]
    assert route.pattern.fullmatch("/v1/cases/a%2Fb")
    assert not route.pattern.fullmatch("/v1/cases/a/b")
    assert not route.pattern.fullmatch("/v1/cases/")
