"""Which signed request can produce which audit entry (DESIGN.md §7; RFC 9421 §2.2.1-2.2.2).

An entry embeds its requester's RFC 9421 signature so an auditor can prove
the actor asked for *that* access. The signature alone proves only that the
actor asked for *something*: a compromised server could append "X downloaded
evidence E" backed by a genuine listing request of X. This table closes that
gap offline: for every action a signed request can produce, the HTTP method
and route template(s) that log it, and which path (or query) parameters must
equal which entry fields. :func:`check_binding` applies it to one entry.

Signed statements (issue 10) are logged under their type: the types with a
route of their own keep it (``participant.enrol`` on ``POST /v1/participants``,
``case.member_add`` on ``POST /v1/cases/{cid}/members``…), the others are
posted to their chain's statements route (:data:`DIRECTORY_STATEMENTS`,
:data:`CASE_STATEMENTS`), which therefore logs several actions.

The table mirrors ``exchange/transport/handlers_*.py`` (``Route``) and what
the services put into ``case``/``object``/``details``; a test walks the
server's routes and fails when the two drift apart. The audit package does
no I/O and imports nothing from the server, so the facts are restated here.

Path parameters are matched on the raw (percent-encoded) path of the signed
``@target-uri`` and decoded the way the server's router decodes them
(:func:`decode_segment`). ``ok`` entries must carry exactly the bound values.
A ``denied`` entry may name fewer (a refusal before the handler parsed the
path leaves ``case``/``object`` null, and denied details never carry bound
keys); what it does name must equal the value the server would have logged,
i.e. after :func:`loggable` (control characters replaced, bounded).

Query parameters bound to details (a proof's sizes) bind the values an ``ok``
entry restates: present, they must equal the signed query exactly (a null
too is a claim, and refused). An entry that leaves such a key out restates
nothing the request could contradict, and the query itself is part of the
signed request the entry embeds. Servers before the binding (before commit
2dd926b) logged proof reads without their sizes: their logs must keep
verifying after an upgrade (``tests/ops/test_upgrade.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl

__all__ = [
    "ACTION_ROUTES",
    "CASE_STATEMENTS",
    "DIRECTORY_STATEMENTS",
    "MAX_TILE_SEGMENTS",
    "RETIRED_ACTIONS",
    "ActionRoute",
    "Binding",
    "Mismatch",
    "check_binding",
    "decode_segment",
    "loggable",
    "request_target",
    "routes_for",
    "split_target",
]

#: Path segments after ``tile/<L>/`` the tile routes accept (transport/handlers_audit.py).
MAX_TILE_SEGMENTS = 4
#: The service's bound on a request-supplied id copied into a denied entry.
MAX_LOGGED_ID_CHARS = 256
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
_PLACEHOLDER = re.compile(r"\{([a-z][a-z0-9_]*)\}")
_ESCAPES = re.compile(r"(?:%[0-9A-Fa-f]{2})+")


@dataclass(frozen=True, slots=True)
class Binding:
    """One entry field the request's path determines.

    ``field`` is ``case``, ``object`` or ``details.<key>``; ``template`` is a
    ``str.format`` template over the path parameters (``"epoch/{n:.20}"``
    truncates like the handler does); ``limit`` bounds the whole value the way
    the service does; ``raw`` formats with the segments as sent (the tile
    handlers log the undecoded path).
    """

    field: str
    template: str
    limit: int | None = None
    raw: bool = False

    def render(self, decoded: Mapping[str, str], raw: Mapping[str, str]) -> str:
        """Return the value the server logs for these path parameters."""
        value = self.template.format_map(raw if self.raw else decoded)
        return value if self.limit is None else value[:self.limit]


@dataclass(frozen=True, slots=True)
class ActionRoute:
    """A route that logs ``action``: method, aiohttp path template, bound fields.

    ``ok`` binds fields of ``ok`` entries, ``denied`` those of denied entries
    (they differ: a refused commit names the upload as its object, a committed
    one the new evidence id and the upload in ``details.upload_id``).
    ``query`` binds query parameters to ``details`` keys of ok entries.
    """

    action: str
    method: str
    path: str
    ok: tuple[Binding, ...] = ()
    denied: tuple[Binding, ...] = ()
    query: tuple[tuple[str, str], ...] = ()
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Placeholders match one raw segment; the router matches a superset of
        # what it routes, which is all a check of logged (routed) requests needs.
        pattern, last = "", 0
        for match in _PLACEHOLDER.finditer(self.path):
            pattern += re.escape(self.path[last:match.start()]) + f"(?P<{match[1]}>[^/]+)"
            last = match.end()
        object.__setattr__(self, "pattern", re.compile(pattern + re.escape(self.path[last:])))


def _route(action: str, method: str, path: str, *both: Binding, ok: tuple[Binding, ...] = (),
           denied: tuple[Binding, ...] = (),
           query: tuple[tuple[str, str], ...] = ()) -> ActionRoute:
    """Return a route whose ``both`` bindings hold for ok and denied entries alike."""
    return ActionRoute(action, method, path, ok=both + ok, denied=both + denied, query=query)


#: Statement types posted to the chain's statements route (the others keep their routes).
DIRECTORY_STATEMENTS = ("admin.set", "server.url", "participant.reinstate", "participant.role")
CASE_STATEMENTS = ("case.epoch_rotate", "case.envelope_add", "case.policy")

_CASE = Binding("case", "{cid}")
_PID = Binding("object", "{pid}")
_UID = Binding("object", "{uid}")


def _tile_routes() -> list[ActionRoute]:
    out: list[ActionRoute] = []
    shapes = [*("/".join(f"{{s{i}}}" for i in range(1, count + 1)) + ".p/{width}"
                for count in range(1, MAX_TILE_SEGMENTS)),
              *("/".join(f"{{s{i}}}" for i in range(1, count + 1))
                for count in range(1, MAX_TILE_SEGMENTS + 1))]
    for level in ("entries", "{level}"):
        for segments in shapes:
            resource = f"tile/{level}/{segments}"
            # ok entries log the canonical path, which the parser accepted only
            # if it equals the raw one; refusals log the raw path as sent.
            out.append(_route(
                "audit.read", "GET", f"/v1/audit/{resource}",
                Binding("object", resource, limit=120, raw=True),
                ok=(Binding("details.resource", resource, limit=120, raw=True),),
            ))
    return out


ACTION_ROUTES: tuple[ActionRoute, ...] = (
    # participants (exchange/service/participants.py)
    _route("participant.enrol", "POST", "/v1/participants"),
    _route("participant.list", "GET", "/v1/participants"),
    _route("participant.show", "GET", "/v1/participants/{pid}", _PID),
    _route("participant.suspend", "POST", "/v1/participants/{pid}/suspend", _PID,
           ok=(Binding("details.participant", "{pid}"),)),
    _route("participant.key_change", "PUT", "/v1/participants/{pid}/keys", _PID,
           ok=(Binding("details.participant", "{pid}"),)),
    _route("participant.reinstate", "POST", "/v1/participants/{pid}/reinstate", _PID,
           ok=(Binding("details.participant", "{pid}"),)),
    _route("participant.role", "POST", "/v1/participants/{pid}/role", _PID,
           ok=(Binding("details.participant", "{pid}"),)),
    _route("admin.set", "POST", "/v1/directory/admins"),
    _route("server.url", "POST", "/v1/directory/server-url"),
    _route("directory.read", "GET", "/v1/directory/statements"),
    # cases, members, epochs, envelopes (exchange/service/cases.py)
    _route("case.create", "POST", "/v1/cases"),
    _route("case.list", "GET", "/v1/cases"),
    _route("case.show", "GET", "/v1/cases/{cid}", _CASE),
    _route("case.member_add", "POST", "/v1/cases/{cid}/members", _CASE),
    _route("case.member_remove", "POST", "/v1/cases/{cid}/members/{pid}/remove", _CASE, _PID,
           ok=(Binding("details.participant", "{pid}"),)),
    _route("case.epoch_rotate", "POST", "/v1/cases/{cid}/epochs", _CASE),
    _route("envelope.get", "GET", "/v1/cases/{cid}/epochs/{n}/envelope", _CASE,
           Binding("object", "epoch/{n:.20}"), ok=(Binding("details.epoch", "{n}"),)),
    _route("case.envelope_add", "POST", "/v1/cases/{cid}/envelopes", _CASE),
    _route("case.policy", "POST", "/v1/cases/{cid}/policy", _CASE),
    _route("case.statements", "GET", "/v1/cases/{cid}/statements", _CASE),
    # an owner's erase-now (exchange/service/retention.py); the erasures it causes are
    # server-originated evidence.erase entries citing it (entry.SERVER_ACTIONS)
    _route("case.erase", "POST", "/v1/cases/{cid}/erase", _CASE),
    _route("case.erase", "POST", "/v1/cases/{cid}/evidence/{eid}/erase", _CASE,
           Binding("object", "{eid}")),
    _route("case.feed", "GET", "/v1/cases/{cid}/feed", _CASE),
    _route("membership.feed", "GET", "/v1/memberships/feed"),
    # uploads and evidence (exchange/service/uploads.py, evidence.py)
    # Retired: OPTIONS /v1/uploads is unsigned tus discovery now (RETIRED_ACTIONS).
    _route("upload.options", "OPTIONS", "/v1/uploads"),
    _route("upload.create", "POST", "/v1/cases/{cid}/uploads", _CASE),
    _route("upload.status", "HEAD", "/v1/uploads/{uid}", _UID),
    _route("upload.append", "PATCH", "/v1/uploads/{uid}", _UID),
    _route("upload.terminate", "DELETE", "/v1/uploads/{uid}", _UID),
    # A commit's entry names the new evidence; the upload it consumed is in details.
    _route("evidence.commit", "POST", "/v1/uploads/{uid}/commit",
           ok=(Binding("details.upload_id", "{uid}"),), denied=(_UID,)),
    _route("evidence.list", "GET", "/v1/cases/{cid}/evidence", _CASE),
    _route("evidence.show", "GET", "/v1/evidence/{eid}", Binding("object", "{eid}")),
    _route("evidence.download", "GET", "/v1/evidence/{eid}/content", Binding("object", "{eid}")),
    # the audit log itself (exchange/service/auditlog.py, transport/handlers_audit.py)
    _route("audit.read", "GET", "/v1/audit/checkpoint", Binding("object", "checkpoint")),
    _route("audit.read", "GET", "/v1/audit/log-keys", Binding("object", "log-keys")),
    *_tile_routes(),
    _route("audit.read", "GET", "/v1/audit/proof/inclusion", Binding("object", "proof/inclusion"),
           ok=(Binding("details.resource", "proof/inclusion"),),
           query=(("index", "details.index"), ("size", "details.size"))),
    _route("audit.read", "GET", "/v1/audit/proof/consistency",
           Binding("object", "proof/consistency"),
           ok=(Binding("details.resource", "proof/consistency"),),
           query=(("old", "details.old"), ("new", "details.new"))),
    _route("audit.read", "GET", "/v1/audit/receipt/{index}",
           Binding("object", "receipt/{index:.30}"),
           ok=(Binding("details.resource", "receipt/{index:.30}"),)),
)


#: Actions no signed route produces any more, kept so older logs still verify
#: (a refused OPTIONS /v1/uploads used to be logged as ``upload.options``).
RETIRED_ACTIONS = frozenset({"upload.options"})


def _by_action() -> Mapping[str, tuple[ActionRoute, ...]]:
    table: dict[str, list[ActionRoute]] = {}
    for route in ACTION_ROUTES:
        table.setdefault(route.action, []).append(route)
    return MappingProxyType({action: tuple(routes) for action, routes in table.items()})


_BY_ACTION = _by_action()


def routes_for(action: str) -> tuple[ActionRoute, ...]:
    """Return the routes that log ``action`` (empty: no signed request produces it)."""
    return _BY_ACTION.get(action, ())


def loggable(value: str) -> str:
    """Return ``value`` as the service copies a request-supplied id into a denied entry.

    Mirrors ``exchange.service.core._loggable_id`` (a test holds the two
    together): control characters and lone surrogates become ``?``, at most
    :data:`MAX_LOGGED_ID_CHARS` characters, never empty.
    """
    return _CONTROL.sub("?", value)[:MAX_LOGGED_ID_CHARS] or "?"


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def _decode_run(match: re.Match[str]) -> str:
    text = match.group()
    data = bytes.fromhex(text.replace("%", ""))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i = 0
    while i < len(data):
        size = _utf8_length(data[i])
        if size:
            try:
                out.append(data[i:i + size].decode("utf-8"))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append(text[3 * i:3 * i + 3])  # not UTF-8: the router keeps the escape
        i += 1
    return "".join(out)


def decode_segment(raw: str) -> str:
    """Return a raw path segment percent-decoded as the server's router decodes it.

    Runs of escapes are decoded as UTF-8; bytes that are not valid UTF-8 keep
    their ``%XX`` text (aiohttp/yarl do the same), so a decoded value is
    never a guess. A test compares this with the router on random segments.
    """
    return raw if "%" not in raw else _ESCAPES.sub(_decode_run, raw)


def split_target(target_uri: str) -> tuple[str, str, str] | None:
    """Return (scheme://authority, path, query) of an ``@target-uri``; None if not absolute.

    The server builds ``@target-uri`` as its public base URL (no path) plus
    the raw request target, so the path starts at the first ``/`` after the
    authority.
    """
    start = target_uri.find("://")
    if start <= 0:
        return None
    slash = target_uri.find("/", start + 3)
    if slash < 0:
        return None
    origin, rest = target_uri[:slash], target_uri[slash:]
    path, _, query = rest.partition("?")
    return origin, path, query


def request_target(covered: Iterable[Sequence[str]]) -> tuple[str, str, str, str] | None:
    """Return (method, scheme://authority, path, query) of the covered components, or None.

    ``covered`` is the entry's [identifier, value] pairs; None when ``@method``
    or an absolute ``@target-uri`` is missing.
    """
    method = target = None
    for name, value in covered:
        if name == '"@method"':
            method = value
        elif name == '"@target-uri"':
            target = value
    parts = None if target is None else split_target(target)
    if method is None or parts is None:
        return None
    return method, *parts


@dataclass(frozen=True, slots=True)
class Mismatch:
    """Why a request does not back an entry: expected vs found (for a finding)."""

    expected: str
    found: str
    message: str


def _restates(entry: Mapping[str, Any], name: str) -> bool:
    """Whether ``entry`` carries field ``name`` at all (a null value counts as carried)."""
    if name.startswith("details."):
        return name[8:] in entry["details"]
    return name in entry


def _entry_value(entry: Mapping[str, Any], name: str) -> object:
    if name.startswith("details."):
        return entry["details"].get(name[8:])
    return entry[name]


def _equal(have: object, want: str) -> bool:
    if isinstance(have, str):
        return have == want
    # Integer details (an epoch, a proof's size) are logged parsed; the server
    # accepted only canonical decimals, so the text must be exactly str(int).
    return isinstance(have, int) and not isinstance(have, bool) and str(have) == want


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _bindings_mismatch(route: ActionRoute, match: re.Match[str], query: str, ok: bool,
                       entry: Mapping[str, Any]) -> Mismatch | None:
    raw = match.groupdict()
    decoded = {name: decode_segment(value) for name, value in raw.items()} if raw else raw
    for binding in route.ok if ok else route.denied:
        want = binding.render(decoded, raw)
        have = _entry_value(entry, binding.field)
        if ok and _equal(have, want):
            continue
        if not ok and (have is None or have == loggable(want)):
            continue
        return Mismatch(f"{binding.field} {_short(want if ok else loggable(want))}",
                        f"{binding.field} {_short(have)}",
                        f"the signed request ({route.method} {route.path}) is for another "
                        f"{binding.field} than the entry names")
    if ok and route.query:
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            params.setdefault(name, value)
        for name, field_name in route.query:
            if not _restates(entry, field_name):
                continue  # bound by the embedded signed query alone (module notes)
            have = _entry_value(entry, field_name)
            given = params.get(name)
            if given is None or not _equal(have, given):
                return Mismatch(f"{field_name} {_short(given)} (query {name})",
                                f"{field_name} {_short(have)}",
                                f"the signed request ({route.method} {route.path}) selects "
                                f"another {name} than the entry names")
    return None


def check_binding(entry: Mapping[str, Any], method: str, path: str,
                  query: str) -> Mismatch | None:
    """Return why the request (method, raw path, raw query) cannot have logged ``entry``.

    None when one route of the entry's action matches the method and path
    and every bound field agrees (exactly for ok entries, see the module
    notes for denied ones).
    """
    action = entry["action"]
    routes = routes_for(action)
    if not routes:
        return Mismatch("an action a signed request produces", _short(action),
                        f"no signed route logs {action!r}")
    ok = entry["outcome"] == "ok"
    first: Mismatch | None = None
    for route in routes:
        if route.method != method:
            continue
        match = route.pattern.fullmatch(path)
        if match is None:
            continue
        problem = _bindings_mismatch(route, match, query, ok, entry)
        if problem is None:
            return None
        first = first or problem
    if first is not None:
        return first
    wanted = " or ".join(sorted({f"{r.method} {r.path}" for r in routes}))
    if len(wanted) > 120:
        methods = "/".join(sorted({r.method for r in routes}))
        wanted = f"{methods} on one of the {len(routes)} routes of {action}"
    return Mismatch(wanted, _short(f"{method} {path}", 120),
                    f"the signed request is not one that logs {action}: the entry is "
                    "backed by a request for something else")
