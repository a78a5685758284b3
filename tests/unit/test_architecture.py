"""Guards the layering in DESIGN.md: the pure cores do no I/O and do not reach
into storage, transport or the CLI (after tessera's storage_test.go)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "exchange"
PURE_PACKAGES = ("crypto", "audit", "wire")

# Modules whose presence in a pure package would mean I/O or a layering break.
FORBIDDEN_PREFIXES = (
    "exchange.storage", "exchange.transport", "exchange.cli", "exchange.client",
    "asyncio", "aiohttp", "asyncpg", "sqlite3", "socket", "subprocess", "logging",
    "structlog", "shutil", "tempfile", "exchange.fsutil", "exchange.keyfiles",
    "pathlib", "io", "fcntl", "mmap", "select", "selectors", "ssl", "http", "urllib.request",
)
FORBIDDEN_CALLS = {"open"}
# ``os`` stays importable for os.urandom and os.cpu_count; its file calls do not.
FORBIDDEN_OS_CALLS = {
    "open", "read", "write", "pread", "pwrite", "fsync", "remove", "unlink", "replace",
    "rename", "mkdir", "makedirs", "listdir", "scandir", "stat", "truncate", "ftruncate",
}


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
        assert not _forbidden_call(node), f"{path.name} calls {ast.unparse(node)[:60]}"


def _forbidden_call(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    if isinstance(func, ast.Name):
        return func.id in FORBIDDEN_CALLS
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "os"
        and func.attr in FORBIDDEN_OS_CALLS
    )


def test_architecture_check_can_fail(tmp_path: Path) -> None:
    """The checker really detects a forbidden import (so a green run means something)."""
    tree = ast.parse("import sqlite3\nfrom exchange.storage import x\n")
    assert _imports(tree) == ["sqlite3", "exchange.storage"]
    calls = ast.parse("open('f')\nos.write(1, b'')\nos.urandom(16)\nx.open()\n")
    flagged = [ast.unparse(n) for n in ast.walk(calls) if _forbidden_call(n)]
    assert flagged == ["open('f')", "os.write(1, b'')"]


def test_client_commands_do_not_load_the_server() -> None:
    """A client command imports no server code (issue 17: every CLI command paid ~200 ms
    of CPU importing the service, storage back ends and asyncpg it never used)."""
    probe = ("import sys, exchange.cli._client_common, exchange.cli.case_cmd, "
             "exchange.cli.transfer_cmd; "
             "print(sorted(m for m in sys.modules if m.startswith(('exchange.service', "
             "'exchange.storage', 'asyncpg'))))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout
