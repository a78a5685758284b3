"""Packaging: the wheel installs and ``exchange demo`` runs from it; completion and man pages
are generated from the parsers (the committed pages are what the parsers make today)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

from tests.cli.conftest import Run
from tests.support import ROOT, assert_demo_cleaned_up, skip_or_fail

MAN_DIR = ROOT / "docs" / "man"


def test_man_pages_are_up_to_date_and_render_cleanly(run: Run, tmp_path: Path) -> None:
    made = run("manpage", "pages", env={"COLUMNS": "47"})  # the terminal width must not matter
    assert made.returncode == 0, made.stderr
    fresh = {p.name: p.read_text() for p in (tmp_path / "pages").iterdir()}
    committed = {p.name: p.read_text() for p in MAN_DIR.iterdir()}
    assert fresh == committed, "docs/man is stale: run 'exchange manpage docs/man'"
    assert {"exchange.1", "exchange-pull.1", "exchange-age.1", "exchange-completion.1"} <= set(
        fresh)
    for name in ("exchange.1", "exchange-age.1", "exchange-server.1"):
        checked = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(MAN_DIR / name)],
                                 capture_output=True, text=True, check=False)
        assert (checked.returncode, checked.stderr) == (0, ""), name
    # A file it did not make is never written over.
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "exchange.1").write_text("my own notes\n")
    refused = run("manpage", "mine")
    assert refused.returncode == 1
    assert b"is not a generated man page" in refused.stderr
    assert (tmp_path / "mine" / "exchange.1").read_text() == "my own notes\n"


def _probe(run: Run, shell: list[str], script: Path, probe: str) -> list[str]:
    """Write ``exchange completion`` for ``shell`` to ``script``; return ``probe``'s lines."""
    made = run("completion", Path(shell[0]).name)
    assert made.returncode == 0, made.stderr
    script.write_bytes(made.stdout)
    return subprocess.run([*shell, probe], cwd=script.parent, capture_output=True, text=True,
                          check=True).stdout.splitlines()


def test_bash_completion_follows_the_parsers(run: Run, tmp_path: Path) -> None:
    probe = (
        'source exchange.bash; t() { COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
        'COMPREPLY=(); _exchange; echo "${COMPREPLY[*]}"; }; '
        't exchange ca; t exchange case ""; t exchange pull --wa; t exchange completion ""; '
        't exchange age decrypt evi; complete -p exchange'
    )
    lines = _probe(run, ["bash", "-c"], tmp_path / "exchange.bash", probe)
    assert lines == ["case", "create list show add-member remove-member rekey policy erase",
                     "--watch", "bash zsh", "", "complete -o default -F _exchange exchange"]


def test_zsh_completion_follows_the_parsers(run: Run, tmp_path: Path) -> None:
    zsh = shutil.which("zsh")
    if zsh is None:
        skip_or_fail("ZSH", "zsh is not installed (Debian package 'zsh')")
        return
    # The completion system's two entry points, stubbed to print what they are given.
    probe = (
        "fpath=(. $fpath); autoload -Uz _exchange; "
        '_describe() { print -r -- "$3: ${(@P)4%%:*}" }; _files() { print files }; '
        't() { PREFIX=$1; shift; words=("$@"); CURRENT=$#words; _exchange }; '
        't "" exchange case ""; t --w exchange pull --w; t "" exchange pull x'
    )
    lines = _probe(run, [zsh, "-f", "-c"], tmp_path / "_exchange", probe)
    assert lines[0] == "command: create list show add-member remove-member rekey policy erase"
    assert lines[1].startswith("option: ") and "--watch" in lines[1].split()
    assert lines[2] == "files"


def test_the_wheel_installs_and_runs_the_demo(tmp_path: Path) -> None:
    """``pip install`` of the built wheel into a new venv, then ``exchange demo`` from it.

    The venv is made without pip and sees the dependencies (not this checkout)
    through a .pth line naming the test run's site-packages: offline and quick.
    The checkout's own editable hook is a .pth of that directory, and .pth
    files are read only in site directories, so ``exchange`` comes from the
    wheel alone.
    """
    # Built from a copy (setuptools writes build/ and egg-info beside the sources) with the
    # test environment's own build backend (a dev dependency): nothing is downloaded.
    source, wheels = tmp_path / "source", tmp_path / "wheels"
    shutil.copytree(ROOT / "exchange", source / "exchange",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "--no-index", "-q", "-w", str(wheels),
                            str(source)], capture_output=True, text=True, check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("exchange-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read("exchange-0.1.0.dist-info/METADATA").decode()
        licence = archive.read("exchange-0.1.0.dist-info/licenses/LICENSE")
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    assert licence == (ROOT / "LICENSE").read_bytes()
    assert "exchange/demo_keys/admin-01.keystore" in names
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                                "--no-deps", "--no-index", "-q", str(wheel)],
                               capture_output=True, text=True, check=False)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("EXCHANGE_") and k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["TMPDIR"] = str(elsewhere)
    where = subprocess.run([python, "-c", "import exchange, exchange.demo as d; "
                            "print(exchange.__file__); print(d.DEFAULT_KEYS_DIR)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    module, keys = where.stdout.splitlines()
    assert module.startswith(site) and keys.startswith(site), where.stdout
    demo = subprocess.run([env_dir / "bin" / "exchange", "demo"], cwd=elsewhere, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]
    assert "every check held" in demo.stdout
    # Its normal end: no server left running, its temporary directory (in TMPDIR) removed.
    assert_demo_cleaned_up(elsewhere)
