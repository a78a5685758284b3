"""The README's Python API examples, run as written against a real server.

Each ```python block of the "Python API" section runs in a fresh interpreter
with a participant's ``EXCHANGE_*`` environment, the way a user would run a
script; the test then checks what the examples claim happened.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import World

README = Path(__file__).resolve().parents[2] / "README.md"


def _examples() -> list[str]:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def _run(world: World, name: str, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, "-c", code], env=world.env(name), cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_the_readme_examples_run_and_share_state_with_the_cli(world: World,
                                                             tmp_path: Path) -> None:
    upload_example, pull_example = _examples()
    (tmp_path / "note.txt").write_text("ten-line script, no source reading needed\n")
    out = _run(world, "prosecutor", upload_example, tmp_path).stdout
    assert re.search(r"uploaded note\.txt as \S+, sha256 [0-9a-f]{64}", out), out
    assert "note.txt 42 prosecutor" in out
    assert "recipients ['coordinator']" in out

    pulled = _run(world, "coordinator", pull_example, tmp_path).stdout
    assert "verified" in pulled and "note.txt" in pulled and "refused" not in pulled
    assert list((tmp_path / "evidence").glob("*/note.txt"))
    # The library kept its pins where the CLI keeps them: the CLI sees the same state.
    assert list(world.state_dir("coordinator").glob("*/coordinator/statements.json"))
    assert world.cli("coordinator", "pull", "--all", "--dest",
                     str(tmp_path / "evidence")).stderr.count("0 file(s) pulled") == 1
