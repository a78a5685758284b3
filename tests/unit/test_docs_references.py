"""SECURITY.md and the attack catalogue name tests; every name must exist (docs stay true)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support import ROOT

DOCS = [ROOT / "SECURITY.md", ROOT / "tests" / "attacks" / "CATALOGUE.md"]
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)((?:::[\w\[\]\-]+)?)`|`::(\w+)`")


def _functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def _references(doc: Path) -> list[tuple[str, str | None]]:
    """Return (file, function or None); a bare `::name` refers to the file named before it."""
    found: list[tuple[str, str | None]] = []
    last: str | None = None
    for match in REFERENCE.finditer(doc.read_text()):
        if match.group(1):
            last = match.group(1)
            name = match.group(2).removeprefix("::").split("[")[0] or None
            found.append((last, name))
        elif last is not None:
            found.append((last, match.group(3)))
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_named_test_exists(doc: Path) -> None:
    references = _references(doc)
    assert references, f"{doc.name} names no tests"
    for file, function in references:
        path = ROOT / file
        assert path.is_file(), f"{doc.name} names {file}, which does not exist"
        if function is not None:
            assert function in _functions(path), f"{doc.name} names {file}::{function}"
