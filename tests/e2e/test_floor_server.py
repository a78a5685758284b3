"""The floor server of ``bench/server.py`` does every step it prices, or its rate means nothing.

``bench/floor_server.py`` claims to be the fewest steps that do what the design makes a
signed, logged listing do. These tests hold it to the ones a cheaper imitation would skip:
it refuses a forged signature and a replayed nonce, and it makes one durable audit entry
(chained, with its leaf hash) and one log line per answered request.
"""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import sign_headers
from tests.support import ROOT

FLOOR_SERVER = ROOT / "bench" / "floor_server.py"


@pytest.fixture()
def floor(tmp_path: Path) -> Iterator[tuple[str, ParticipantIdentity, Path]]:
    identity = ParticipantIdentity.generate("prosecutor")
    child = subprocess.Popen(
        [sys.executable, str(FLOOR_SERVER), str(tmp_path), identity.id,
         bytes(identity.signing_key.verify_key).hex(), "full"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        port = int(child.stdout.readline().split()[-1])
        yield f"http://127.0.0.1:{port}", identity, tmp_path
    finally:
        child.terminate()
        child.wait(30)


def _signed(url: str, identity: ParticipantIdentity, now: int) -> dict[str, str]:
    return sign_headers("GET", url + "/v1/cases", {}, key=identity.signing_key,
                        keyid=identity.id, now=now, lifetime_s=60)


async def _statuses(url: str, requests: list[dict[str, str]]) -> list[int]:
    async with aiohttp.ClientSession() as session:
        out = []
        for headers in requests:
            async with session.get(url + "/v1/cases", headers=headers) as response:
                await response.read()
                out.append(response.status)
        return out


def test_floor_refuses_forgery_and_replay_and_logs_each_answer(
        floor: tuple[str, ParticipantIdentity, Path]) -> None:
    url, identity, directory = floor
    now = int(time.time())
    first, second = _signed(url, identity, now), _signed(url, identity, now)
    forged = dict(second, Signature=_signed(url, ParticipantIdentity.generate("x"), now)[
        "Signature"])
    other_path = sign_headers("GET", url + "/v1/evidence", {}, key=identity.signing_key,
                              keyid=identity.id, now=now, lifetime_s=60)
    stale = _signed(url, identity, now - 3600)

    statuses = asyncio.run(_statuses(url, [first, first, forged, other_path, stale, second]))

    assert statuses == [200, 401, 401, 401, 401, 200]
    with sqlite3.connect(directory / "floor-full.sqlite3") as db:
        entries = db.execute("SELECT idx, body, chain, leaf FROM entries ORDER BY idx").fetchall()
        nonces = db.execute("SELECT count(*) FROM nonces").fetchone()[0]
    assert [e[0] for e in entries] == [0, 1] and nonces == 2
    chain = b"\0" * 32
    for _, body, stored_chain, leaf in entries:
        chain = hashlib.sha256(chain + body).digest()
        assert stored_chain == chain
        assert leaf == hashlib.sha256(b"\0" + body).digest()
    assert len((directory / "floor-full.log").read_text().splitlines()) == 2
