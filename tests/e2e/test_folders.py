"""``exchange upload CASE folder/``: the tree travels sealed in the manifests and comes back."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from exchange.client.download import folder_dir
from exchange.crypto.manifest import UnsafeFileName
from tests.e2e.conftest import World, new_case

AWKWARD = {
    "top level.txt": b"at the root of the seizure\n",
    "phone 2/DCIM/IMG 0001 (copy).jpg": os.urandom(70_000),
    "phone 2/DCIM/été – Ø.heic": os.urandom(1234),
    "phone 2/-starts-with-dash/..not-a-parent": b"dots are fine inside a name\n",
    "laptop/Users/a b/notes #1.md": b"# notes\n",
    "laptop/empty.bin": b"",
}


def _tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.endswith(".json")}


def test_a_folder_of_awkward_names_round_trips_with_the_same_tree_and_hashes(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Folder", "coordinator")
    seizure = tmp_path / "seizure-17"
    for relative, data in AWKWARD.items():
        (seizure / relative).parent.mkdir(parents=True, exist_ok=True)
        (seizure / relative).write_bytes(data)
    (seizure / "laptop" / "skip.tmp").write_bytes(b"excluded")
    up = world.cli("prosecutor", "upload", case_id, str(seizure) + "/", "--exclude", "*.tmp",
                   "--json")
    uploaded = json.loads(up.stdout)["uploaded"]
    assert sorted(f"{u['folder']}/{u['file_name']}" for u in uploaded) == sorted(
        f"seizure-17/{r}" for r in AWKWARD)

    listed = json.loads(world.cli("coordinator", "files", case_id, "--json").stdout)
    assert {e["folder"] for e in listed["evidence"]} == {
        "seizure-17", "seizure-17/phone 2/DCIM", "seizure-17/phone 2/-starts-with-dash",
        "seizure-17/laptop/Users/a b", "seizure-17/laptop"}

    dest = tmp_path / "dest"
    world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    # Names are made safe on the receiving machine: no hidden files (leading dots dropped).
    assert _tree(dest / case_id / "seizure-17") == {
        r.replace("/..not-a-parent", "/not-a-parent"): hashlib.sha256(d).hexdigest()
        for r, d in AWKWARD.items()}
    custody = (dest / case_id / "seizure-17" / "phone 2" / "DCIM" /
               "IMG 0001 (copy).jpg.custody.json")
    assert json.loads(custody.read_text())["manifest"]["folder"] == "seizure-17/phone 2/DCIM"


def test_symlinks_in_a_folder_are_refused_unless_followed(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, "Operation Links")
    folder = tmp_path / "box"
    folder.mkdir()
    (folder / "real.txt").write_text("real\n")
    (folder / "link.txt").symlink_to(tmp_path / "outside.txt")
    (tmp_path / "outside.txt").write_text("outside\n")
    refused = world.cli("prosecutor", "upload", case_id, str(folder), check=False)
    assert refused.returncode == 2
    assert "is a symbolic link" in refused.stderr and "--follow-symlinks" in refused.stderr
    assert "uploaded" not in refused.stderr  # refused before anything was sent
    followed = world.cli("prosecutor", "upload", case_id, str(folder), "--follow-symlinks",
                         "--include", "link.*", "--json")
    assert [u["file_name"] for u in json.loads(followed.stdout)["uploaded"]] == ["link.txt"]


def test_pull_never_follows_a_planted_symlink_or_leaves_the_case_folder(tmp_path: Path) -> None:
    case_dir = tmp_path / "case"
    case_dir.mkdir()
    (case_dir / "seizure").symlink_to(tmp_path)
    with pytest.raises(NotADirectoryError):
        folder_dir(case_dir, "seizure/phone")
    for hostile in ("../escape", "/etc", "a/../../b"):
        with pytest.raises(UnsafeFileName):
            folder_dir(case_dir, hostile)
    assert folder_dir(case_dir, "a/b c/d") == case_dir / "a" / "b c" / "d"
    assert (case_dir / "a" / "b c" / "d").is_dir()
