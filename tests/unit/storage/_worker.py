"""A writer process for the multi-process and crash tests (run with ``python -m``).

Modes:
  enrol <backend> <target> <tag> <count> <tasks>  enrol participants, each with its audit entry
  blobs <data_dir>                                 write random blobs forever
  upload <data_dir> <upload_id> <length>           append deterministic chunks, print offsets
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.metadata import MetadataStore, Participant, ParticipantStatus
from exchange.storage.postgres_store import PostgresStore
from exchange.storage.sqlite_store import SqliteStore
from tests.unit.storage.helpers import entry_for

UPLOAD_CHUNK = 64 * 1024


def upload_bytes(length: int) -> bytes:
    """The deterministic content of the crash test's upload."""
    return random.Random(7).randbytes(length)


def enrolee(pid: str) -> Participant:
    return Participant(
        participant_id=pid, role="prosecutor", organisation="org", country="NL",
        display_name=pid, signing_key=b"\x02" * 32, age_recipient="age1x", fingerprint=pid,
        status=ParticipantStatus.ACTIVE, enrolled_at=1,
    )


async def enrol(backend: str, target: str, tag: str, count: int, tasks: int) -> None:
    store: MetadataStore
    if backend == "sqlite":
        store = await SqliteStore.open(Path(target))
    else:
        store = await PostgresStore.open(target)
    queue = list(range(count))

    async def writer() -> None:
        while queue:
            i = queue.pop()
            pid = f"{tag}-{i}"
            async with store.transaction("enrol") as tx:
                await tx.add_participant(enrolee(pid))
                await tx.append_audit(entry_for(pid, action="participant.enrol"))

    await asyncio.gather(*(writer() for _ in range(tasks)))
    await store.close()


async def blobs(data_dir: str) -> None:
    store = FsBlobStore(Path(data_dir))
    rng = random.Random(os.getpid())
    while True:
        size = rng.randrange(0, 3 * 1024 * 1024)
        await store.put([rng.randbytes(size)])


async def upload(data_dir: str, upload_id: str, length: int) -> None:
    store = FsBlobStore(Path(data_dir))
    content = upload_bytes(length)
    state = await store.upload_state(upload_id)
    offset = state.offset
    while offset < length:
        chunk = content[offset : offset + UPLOAD_CHUNK]
        offset = await store.append(upload_id, offset, [chunk[: len(chunk) // 2],
                                                        chunk[len(chunk) // 2 :]])
        print(offset, flush=True)


def main() -> None:
    mode, *args = sys.argv[1:]
    if mode == "enrol":
        asyncio.run(enrol(args[0], args[1], args[2], int(args[3]), int(args[4])))
    elif mode == "blobs":
        asyncio.run(blobs(args[0]))
    elif mode == "upload":
        asyncio.run(upload(args[0], args[1], int(args[2])))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
