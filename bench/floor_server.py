"""The floor under a signed, logged small read on this stack, for ``bench/server.py`` to compare.

DESIGN.md makes every signed ``GET /v1/cases`` do a fixed list of things: check the RFC 9421
signature (its parameters, the signer's current key, Ed25519 over the signature base),
spend the nonce, run the listing, append an audit entry (the chain's hash, the RFC 6962
leaf, the tree's right edge) in the same transaction, make that transaction durable before
answering (a group commit), and write an operational log line. This server does exactly
those, on the same stack (aiohttp, PyNaCl's libsodium, SQLite with ``synchronous=FULL``,
JSON), in the fewest steps a careful reader would accept as doing them: no RFC 9651
parser (one regular expression for the signing client's own serialization), no error
bodies, no metrics, no validation beyond what the checks need. It is not a server anyone
should run; it is the rate this machine allows *any* implementation of the design in Python,
so ``bench/server.py`` can say how much of the distance to a target is the exchange's own
structure and how much is the stack's.

``LEVEL`` keeps the first steps only, to price each: ``verify`` (the signature, the key
held in memory), ``logged`` (and the participant's row, the nonce, the listing, the audit
entry and the group commit), ``full`` (and the log line). Used as a child process:

    python bench/floor_server.py DIR KEYID PUBLIC_KEY_HEX LEVEL   # prints "floor: PORT"
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError

LEVELS = ("verify", "logged", "full")
_INPUT = re.compile(
    r'sig1=(\("@method" "@target-uri"\);created=(\d+);expires=(\d+);keyid="([^"]+)";'
    r'nonce="([^"]+)";alg="ed25519")')
_SIGNATURE = re.compile(r"sig1=:([A-Za-z0-9+/=]+):")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS participants (id TEXT PRIMARY KEY, key BLOB, status TEXT);
CREATE TABLE IF NOT EXISTS cases (id TEXT PRIMARY KEY, member TEXT);
CREATE TABLE IF NOT EXISTS nonces (nonce TEXT PRIMARY KEY, expires INTEGER);
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, body BLOB, chain BLOB, leaf BLOB);
"""


class _Refused(Exception):
    """The request does not authenticate; the server answers 401."""


class _Log:
    """The audit log's writer: a group commit of the requests queued while the last one ran."""

    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.executescript(_SCHEMA)
        self._chain = b"\0" * 32
        self._edge: list[tuple[int, bytes]] = []  # (subtree size, hash), RFC 6962 right edge
        self._size = 0
        self._queue: list[tuple[dict[str, Any], asyncio.Future[list[str]]]] = []
        self._running = False

    def seed(self, keyid: str, key: bytes) -> None:
        self._db.execute("INSERT OR REPLACE INTO participants VALUES (?, ?, 'active')",
                         (keyid, key))
        self._db.execute("INSERT OR REPLACE INTO cases VALUES ('case-1', ?)", (keyid,))

    async def perform(self, evidence: dict[str, Any]) -> list[str]:
        """Queue one logged listing; return its rows once its entry is durable."""
        done: asyncio.Future[list[str]] = asyncio.get_running_loop().create_future()
        self._queue.append((evidence, done))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await done

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    results = await asyncio.to_thread(self._commit, [e for e, _ in batch])
                except sqlite3.Error as err:
                    results = [err] * len(batch)
                for (_, done), result in zip(batch, results, strict=True):
                    if isinstance(result, Exception):
                        done.set_exception(result)
                    else:
                        done.set_result(result)
        finally:
            self._running = False

    def _commit(self, batch: list[dict[str, Any]]) -> list[list[str] | Exception]:
        db = self._db
        tail = (self._chain, list(self._edge), self._size)  # restored if the batch fails
        db.execute("BEGIN IMMEDIATE")
        try:
            out = self._run(db, batch)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._chain, self._edge, self._size = tail
            raise
        return out

    def _run(self, db: sqlite3.Connection,
             batch: list[dict[str, Any]]) -> list[list[str] | Exception]:
        """Run the batch's units in the open transaction (the chain and edge advance)."""
        out: list[list[str] | Exception] = []
        for evidence in batch:
            actor = evidence["keyid"]
            row = db.execute("SELECT key, status FROM participants WHERE id = ?",
                             (actor,)).fetchone()
            if row is None or row[0] != evidence["key"] or row[1] != "active":
                out.append(_Refused("unknown or suspended signer"))
                continue
            try:
                db.execute("INSERT INTO nonces VALUES (?, ?)",
                           (evidence["nonce"], evidence["expires"]))
            except sqlite3.IntegrityError:
                out.append(_Refused("replayed nonce"))
                continue
            cases = [r[0] for r in db.execute("SELECT id FROM cases WHERE member = ?", (actor,))]
            body = json.dumps({**evidence, "key": None, "action": "case.list",
                               "result": len(cases)},
                              sort_keys=True, separators=(",", ":")).encode()
            self._chain = hashlib.sha256(self._chain + body).digest()
            leaf = hashlib.sha256(b"\0" + body).digest()
            self._append_leaf(leaf)
            db.execute("INSERT INTO entries VALUES (?, ?, ?, ?)",
                       (self._size, body, self._chain, leaf))
            self._size += 1
            out.append(cases)
        return out

    def _append_leaf(self, leaf: bytes) -> None:
        size, node = 1, leaf
        while self._edge and self._edge[-1][0] == size:
            _, left = self._edge.pop()
            node = hashlib.sha256(b"\1" + left + node).digest()
            size *= 2
        self._edge.append((size, node))


def _authenticate(request: web.Request, keys: dict[str, bytes], origin: str) -> dict[str, Any]:
    """Check the signature's parameters and Ed25519; return what the audit entry records."""
    given = _INPUT.fullmatch(request.headers.get("Signature-Input", ""))
    signature = _SIGNATURE.fullmatch(request.headers.get("Signature", ""))
    if given is None or signature is None:
        raise _Refused("no signature in the signing client's form")
    params, created, expires, keyid, nonce = given.groups()
    now = int(time.time())
    if not int(created) - 60 <= now <= int(expires) or int(expires) - int(created) > 300:
        raise _Refused("outside the signature's lifetime")
    key = keys.get(keyid)
    if key is None:
        raise _Refused("unknown keyid")
    base = (f'"@method": {request.method}\n"@target-uri": {origin}{request.raw_path}\n'
            f'"@signature-params": {params}').encode()
    try:
        crypto_sign_open(base64.b64decode(signature[1]) + base, key)
    except (BadSignatureError, ValueError) as err:
        raise _Refused("bad signature") from err
    return {"keyid": keyid, "key": key, "nonce": nonce, "expires": int(expires),
            "created": int(created), "method": request.method, "path": request.raw_path,
            "signature_input": given[0], "signature": signature[0]}


def serve(directory: str, keyid: str, public_key_hex: str, level: str) -> None:
    """Serve ``directory`` on a free loopback port until killed; print the port first."""
    if level not in LEVELS:
        raise SystemExit(f"LEVEL must be one of {', '.join(LEVELS)}")
    keys = {keyid: bytes.fromhex(public_key_hex)}
    log = _Log(Path(directory) / f"floor-{level}.sqlite3")
    log.seed(keyid, keys[keyid])
    lines = (Path(directory) / f"floor-{level}.log").open("a", buffering=1)
    origin: list[str] = []

    async def cases(request: web.Request) -> web.Response:
        started = time.monotonic()
        try:
            evidence = _authenticate(request, keys, origin[0])
            rows = [] if level == "verify" else await log.perform(evidence)
        except _Refused:
            return web.Response(status=401)
        if level == "full":
            lines.write(json.dumps({
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "event": "request", "method": request.method, "path": request.raw_path,
                "status": 200, "actor": evidence["keyid"],
                "duration_ms": round((time.monotonic() - started) * 1000, 2)}) + "\n")
        return web.json_response({"cases": rows})

    app = web.Application()
    app.router.add_get("/v1/cases", cases)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        origin.append(f"http://127.0.0.1:{port}")
        print(f"floor: {port}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


if __name__ == "__main__":
    serve(*sys.argv[1:5])
