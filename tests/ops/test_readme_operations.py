"""The README's "Operating a server" steps, run as written against a real server.

The shell blocks of the Backups, Restoring a backup and Upgrades sections are
taken from README.md and run with bash, with only the paths moved into a
temporary directory (``/srv/exchange`` becomes the test server's data
directory) and ``systemctl stop|start exchange`` standing for stopping and
starting the test's ``exchange serve`` process. What the prose promises is
checked too: the restored server refuses to start until ``--accept-rollback``,
which is recorded. Every new command's ``--help`` ends with an example.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.cli.main import main as cli_main
from exchange.ops.rollback import DECISIONS_FILE
from tests.faults._tools import new_case
from tests.ops.test_backup_restore import cli, upload
from tests.server_harness import ServerProcess, deployed, run, verify_audit_log
from tests.support import ROOT

README = (ROOT / "README.md").read_text()


def shell_block(heading: str) -> list[str]:
    """Return the lines of the first ```sh block under ``### heading``."""
    section = README.split(f"\n### {heading}\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block, heading
    return block.group(1).splitlines()


def bash(lines: list[str], paths: dict[str, str]) -> None:
    """Run ``lines`` with bash (-e), paths moved, the venv's ``exchange`` first on PATH."""
    script = "\n".join(lines)
    for old, new in paths.items():
        script = script.replace(old, new)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True,
                            text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, f"{script}\n---\n{result.stderr}"


def test_readme_backup_restore_and_upgrade_steps(tmp_path: Path) -> None:
    (tmp_path / "srv").mkdir()
    for folder in ("backup", "safe"):
        (tmp_path / folder).mkdir()
    with deployed(tmp_path / "srv", "sqlite") as d:
        paths = {"/srv/exchange": str(d.data_dir), "/backup/": f"{tmp_path}/backup/",
                 "/safe/": f"{tmp_path}/safe/", "/tmp/restore-test": f"{tmp_path}/restore-test"}

        async def uploads(count: int) -> None:
            async with d.session("prosecutor") as pro:
                case_id, _ = await new_case(d, pro)
                for n in range(count):
                    await upload(pro, case_id, bytes([n]) * 4000)

        run(uploads(2))
        bash(shell_block("Backups"), paths)
        assert (tmp_path / "safe" / "exchange-log.key").stat().st_mode & 0o777 == 0o600
        run(uploads(1))  # after the backup: the restore will lose these entries

        restore = shell_block("Restoring a backup")
        assert restore[0] == "systemctl stop exchange"
        assert restore[-1] == "systemctl start exchange"
        d.stop()
        bash(restore[1:-1], paths)
        refused = cli("serve", "--data-dir", str(d.data_dir), "--port", "0")
        assert refused.returncode == 3 and "--accept-rollback" in refused.stderr
        server = ServerProcess(d.data_dir, extra_args=["--accept-rollback"])
        try:
            assert (d.data_dir / DECISIONS_FILE).read_text().count("accept-rollback") == 1
        finally:
            assert server.stop() == 0
        # The decision is in the log itself, and the continued log verifies.
        report, entries = run(verify_audit_log(d))
        assert report.ok, report.findings
        decisions = [json.loads(e) for e in entries if b"log.rollback_accepted" in e]
        assert len(decisions) == 1 and decisions[0]["details"]["decision"] == "accept-rollback"
        assert decisions[0]["details"]["database_size"] == decisions[0]["index"]

        upgrade = shell_block("Upgrades")
        steps = [line for line in upgrade if not line.startswith(("systemctl", "#"))]
        assert any("migrate" in line and "--dry-run" in line for line in steps)
        bash(steps, paths)


COMMANDS = [
    ["server", "backup"], ["server", "restore"], ["server", "check"], ["server", "migrate"],
    ["server", "log-key"], ["server", "log-key", "show"], ["server", "log-key", "rotate"],
    ["server", "move"], ["key", "passwd"], ["serve"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_new_commands_have_help_with_an_example(command: list[str],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main([*command, "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    last = out.rstrip().splitlines()[-1]
    assert last.startswith("  exchange "), last
    assert "examples:" in out
