"""Dropped files' relative paths: checked part by part; one place decides the manifest name."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from exchange.client.state import LocalState
from exchange.ui import paths


def test_keeps_a_folder_structure() -> None:
    assert paths.clean_relative_path("seizure-3/phone/sms.db") == "seizure-3/phone/sms.db"
    assert paths.clean_relative_path("./a//b\\c.txt") == "a/b/c.txt"


@pytest.mark.parametrize("bad", ["", "../etc/passwd", "a/../../b", "a/\x00b", "a/b\nc", "/",
                                 "x/" * 40 + "f", "a" * 2000])
def test_rejects_unsafe_relative_paths(bad: str) -> None:
    with pytest.raises(ValueError):
        paths.clean_relative_path(bad)


def test_manifest_gets_the_base_name_for_now() -> None:
    assert paths.manifest_name("seizure-3/phone/sms.db") == "sms.db"


def test_same_drop_same_staging_place_so_uploads_resume(tmp_path: Path) -> None:
    state = LocalState(tmp_path)
    first = paths.staged_path(state, "case-1", "a/b.bin", 10, 1700000000000)
    assert first == paths.staged_path(state, "case-1", "a/b.bin", 10, 1700000000000)
    assert first.name == "b.bin" and first.parent.stat().st_mode & 0o077 == 0
    assert first != paths.staged_path(state, "case-1", "a/b.bin", 11, 1700000000000)
    first.write_bytes(b"x" * 10)
    paths.set_mtime(first, 1700000000123)
    assert os.stat(first).st_mtime_ns == 1700000000123 * 1_000_000
    paths.discard_staged(first)
    assert not first.parent.exists()


def test_remembers_relative_paths_per_evidence(tmp_path: Path) -> None:
    state = LocalState(tmp_path)
    paths.remember_path(state, "ev-1", "a/b.bin")
    paths.remember_path(state, "ev-2", "c.txt")
    assert paths.remembered_paths(state) == {"ev-1": "a/b.bin", "ev-2": "c.txt"}
