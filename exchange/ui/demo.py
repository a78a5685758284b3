"""``exchange demo --ui``: reopen the finished demo world in the local UI.

After the demo's story has run (its data kept in a folder), the server is
started again on the same address (request signatures and the audit log name
the server's URL, so it must not change) and ``exchange ui`` opens with all
five demo identities to choose from on the unlock page, which shows the
public demo passphrase.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from exchange.crypto.anchor import parse_anchor
from exchange.demo import ADMIN, AUDITOR, CC, DE, DEMO_PASSPHRASE, NL, ORIGIN, DemoResult
from exchange.demo_server import LocalServer
from exchange.ui.state import UiSettings

__all__ = ["demo_settings", "reopen_server"]


def reopen_server(result: DemoResult, keys_dir: Path) -> LocalServer:
    """Start the demo's server again on its former port; return it (running)."""
    port = urlsplit(result.url).port or 0
    server = LocalServer(result.data_dir, origin=ORIGIN,
                         admin_bundle=keys_dir / f"{ADMIN}.bundle.json")
    server.start(port=port)
    server.wait_ready()
    return server


def demo_settings(result: DemoResult, keys_dir: Path, url: str) -> UiSettings:
    """Return the UI settings for the demo world: every demo identity, state under its folder."""
    return UiSettings(
        url=url, anchor=parse_anchor((result.data_dir / "trust.json").read_bytes()),
        keystores=tuple(keys_dir / f"{pid}.keystore" for pid in (NL, CC, AUDITOR, ADMIN, DE)),
        state_root=result.base / "ui-state", pull_dir=result.base / "ui-pulled",
        demo_passphrase=DEMO_PASSPHRASE)

