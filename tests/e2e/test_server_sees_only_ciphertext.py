"""The threat model's first promise, checked on disk: after a real upload, nothing the
server holds (database file, WAL, blobs, upload sessions, its own log output) contains the
evidence plaintext, its file name, or the case title."""

from __future__ import annotations

import os
from pathlib import Path

from tests.e2e.conftest import World, new_case

MARKER_TITLE = "Operation Nightjar 7f3c"
MARKER_NAME = "nightjar-ledger-7f3c.txt"


def _server_bytes(data_dir: Path) -> list[tuple[Path, bytes]]:
    return [(path, path.read_bytes()) for path in sorted(data_dir.rglob("*")) if path.is_file()]


def test_server_stores_no_plaintext_names_or_titles(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, MARKER_TITLE, "coordinator")
    # Distinctive, compressible plaintext: any copy or fragment of it would stand out.
    line = b"NIGHTJAR-PLAINTEXT-SENTINEL-" + os.urandom(8).hex().encode() + b"\n"
    evidence = tmp_path / MARKER_NAME
    evidence.write_bytes(line * 20000)
    world.cli("prosecutor", "upload", case_id, str(evidence), "--chunk-mib", "1")
    listed = world.cli("coordinator", "files", case_id).stdout
    assert MARKER_NAME in listed  # the members can read the name ...

    stored = _server_bytes(world.deployment.data_dir)
    assert any("blobs" in path.parts for path, _ in stored), "the upload produced no blob"
    # Control: the scan does find what the server legitimately knows (the case id).
    assert any(case_id.encode() in data for _, data in stored)
    server_log = "\n".join(
        line for proc in world.deployment.processes for line in proc.lines
    ).encode()
    needles = {
        "plaintext": line[:40],
        "file name": MARKER_NAME.encode(),
        "file name (utf-16)": MARKER_NAME.encode("utf-16-le"),
        "case title": MARKER_TITLE.encode(),
    }
    for what, needle in needles.items():  # ... the server cannot
        for path, data in stored:
            assert needle not in data, f"{what} found in {path}"
        assert needle not in server_log, f"{what} found in the server's log output"
