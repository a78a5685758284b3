"""The client API's reference pages build from the docstrings (pdoc), so they never go stale:
a broken cross-reference or annotation is a warning, and warnings fail the build here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import exchange.client

#: The public client surface: the package's re-exports, and the auditor's verification.
MODULES = ("exchange.client", "exchange.client.audit")


def test_reference_pages_build_without_warnings(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-W", "error", "-m", "pdoc", "--docformat",
                            "restructuredtext", "-o", str(tmp_path), *MODULES],
                           capture_output=True, text=True, timeout=120, check=False)
    assert built.returncode == 0, built.stderr
    assert built.stderr == "", built.stderr
    page = (tmp_path / "exchange" / "client.html").read_text()
    for name in exchange.client.__all__:  # every public name has its entry
        assert f'id="{name}"' in page, name
    assert '<a href="#SyncClient">SyncClient</a>' in page  # docstring references resolve
    assert (tmp_path / "exchange" / "client" / "audit.html").is_file()
