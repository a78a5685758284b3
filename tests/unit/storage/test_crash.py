"""Crash safety with real processes killed by SIGKILL at random points.

After each kill: no visible partial blob, no audit entry without its operation
(nor the reverse), a log that verifies with the audit core, and an upload that
resumes from its last durable offset.
"""

from __future__ import annotations

import hashlib
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from exchange.storage.fs_blobs import FsBlobStore
from tests.support import ROOT
from tests.unit.storage._worker import upload_bytes
from tests.unit.storage.helpers import Backend, run, sha, verify_log

ROUNDS = 3


def spawn(*args: str, stdout: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.unit.storage._worker", *args], cwd=ROOT,
        stdout=stdout, text=True,
    )


def kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def visible_blobs(data: Path) -> list[Path]:
    root = data / "blobs"
    return [p for p in root.rglob("*") if p.is_file() and ".tmp" not in p.parts]


def wait_for(condition: object, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "worker made no progress"
        time.sleep(0.02)


def test_sigkill_during_blob_writes_leaves_no_partial_blob(tmp_path: Path) -> None:
    rng = random.Random(11)
    data = tmp_path / "data"
    seen = 0
    for _ in range(ROUNDS):
        proc = spawn("blobs", str(data))
        wait_for(lambda: len(visible_blobs(data)) > seen)  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.4))
        kill(proc)
        blobs = visible_blobs(data)
        seen = len(blobs)
        for path in blobs:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name, path
            assert path.parent.name == path.name[2:4]
            assert path.parent.parent.name == path.name[:2]
    store = FsBlobStore(data)
    store.sweep(older_than_s=0)
    assert not any((data / "blobs" / ".tmp").iterdir())


def test_sigkill_during_audit_appends_keeps_operation_and_entry_together(
    backend: Backend,
) -> None:
    rng = random.Random(12)
    target = str(backend.path) if backend.name == "sqlite" else backend.dsn

    async def size() -> int:
        async with backend.open() as store:
            return await store.tree_size()

    async def check() -> int:
        async with backend.open() as store:
            entries = await verify_log(store)
            async with store.transaction() as tx:
                enrolled = {p.participant_id for p in await tx.list_participants()}
            assert enrolled == {e.object for e in entries}, "operation and entry diverged"
            return len(entries)

    async def has_grown(before: int) -> bool:
        return await size() > before

    if backend.name == "sqlite":
        run(size())  # create the database before the worker races to do it
    total = 0
    for round_ in range(ROUNDS):
        proc = spawn("enrol", backend.name, target, f"r{round_}", "1000000", "16")
        wait_for(lambda: run(has_grown(total)))  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.3))
        kill(proc)
        grown = run(check())
        assert grown > total
        total = grown


def test_interrupted_upload_resumes_from_last_durable_offset(tmp_path: Path) -> None:
    rng = random.Random(13)
    length = 24 * 1024 * 1024
    content = upload_bytes(length)
    data = tmp_path / "data"

    async def create() -> str:
        store = FsBlobStore(data)
        state = await store.create_upload(length=length, expires_at=2**40)
        return state.upload_id

    upload_id = run(create())
    for _ in range(ROUNDS):
        proc = spawn("upload", str(data), upload_id, str(length), stdout=subprocess.PIPE)
        assert proc.stdout is not None
        acknowledged = int(proc.stdout.readline())
        time.sleep(rng.uniform(0.0, 0.2))
        kill(proc)
        acknowledged = max([acknowledged, *(int(line) for line in proc.stdout.read().split())])
        state = run(FsBlobStore(data).upload_state(upload_id))
        assert state.offset >= acknowledged, "an acknowledged append was lost"
        assert state.offset < length, "the worker finished before it was killed"
        with (data / "uploads" / upload_id).open("rb") as handle:
            assert handle.read(state.offset) == content[: state.offset]

    async def finish() -> None:
        store = FsBlobStore(data)
        state = await store.upload_state(upload_id)
        await store.append(upload_id, state.offset, [content[state.offset :]])
        info = await store.promote(upload_id, sha(content))
        assert info.size == length
        assert await store.verify(info.blob_id) == info

    run(finish())
