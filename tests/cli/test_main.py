"""The dispatcher: its command table matches the modules; light commands stay light."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

from exchange.cli import main


def _registered(module: str) -> set[str]:
    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers()
    importlib.import_module(f"exchange.cli.{module}").register(subparsers)
    return set(subparsers.choices)


def test_command_table_matches_what_modules_register() -> None:
    modules = {module for module, _ in main.COMMANDS.values()}
    registered = {name: module for module in modules for name in _registered(module)}
    expected = {name: module for name, (module, _) in main.COMMANDS.items()}
    expected.update({alias: main.COMMANDS[name][0] for alias, name in main.ALIASES.items()})
    assert registered == expected


def test_offline_commands_do_not_import_the_server_or_client() -> None:
    code = (
        "import sys; from exchange.cli.main import main; "
        "rc = main(['key', 'show', 'exchange/demo_keys/admin-01.bundle.json']); "
        "heavy = sorted(m for m in sys.modules if m.startswith(('aiohttp', 'asyncpg', "
        "'exchange.transport', 'exchange.client', 'exchange.storage'))); "
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().splitlines()[-1] == "0 []", out


def test_every_command_has_help() -> None:
    for name in main.COMMANDS:
        result = subprocess.run([sys.executable, "-m", "exchange", name, "--help"],
                                capture_output=True, text=True, check=False)
        assert result.returncode == 0, (name, result.stderr)
        assert "examples:" in result.stdout or "example" in result.stdout, name
