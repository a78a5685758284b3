"""Guards the layering in DESIGN.md: the pure cores do no I/O and do not reach
into storage, transport or the CLI (after tessera's storage_test.go)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exchange"
PURE_PACKAGES = ("crypto", "audit")

# Modules whose presence in a pure package would mean I/O or a layering break.
FORBIDDEN_PREFIXES = (
    "exchange.storage", "exchange.transport", "exchange.cli", "exchange.client",
    "asyncio", "aiohttp", "asyncpg", "sqlite3", "socket", "subprocess", "logging",
    "structlog", "shutil", "tempfile", "exchange.fsutil", "exchange.keyfiles",
)
FORBIDDEN_CALLS = {"open"}


def _pure_modules() -> list[Path]:
    return sorted(p for pkg in PURE_PACKAGES for p in (PACKAGE / pkg).rglob("*.py"))


def _imports(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


@pytest.mark.parametrize("path", _pure_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_pure_module_does_no_io(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    for name in _imports(tree):
        assert not any(
            name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN_PREFIXES
        ), f"{path.name} imports {name}, which a pure package must not"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id not in FORBIDDEN_CALLS, f"{path.name} calls {node.func.id}()"


def test_architecture_check_can_fail(tmp_path: Path) -> None:
    """The checker really detects a forbidden import (so a green run means something)."""
    tree = ast.parse("import sqlite3\nfrom exchange.storage import x\n")
    assert _imports(tree) == ["sqlite3", "exchange.storage"]
