"""Running the local UI: bind 127.0.0.1 on a free port, print the URL, open the browser.

The browser is opened through a launch file (mode 0600 in a 0700 temporary
directory) that redirects to the URL carrying the secret: the secret never
appears on a command line, where other local users could read it from
``/proc``. The URL itself is printed on stdout for the user who started the
interface (their terminal).
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import os
import signal
import tempfile
import webbrowser
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from exchange.ui.app import build_app
from exchange.ui.security import Guard, new_secret
from exchange.ui.state import UiSettings, UiState

__all__ = ["LOOPBACK", "run_ui"]

LOOPBACK = "127.0.0.1"


def _launch_file(directory: Path, url: str) -> Path:
    """Write a page that forwards the browser to ``url`` (readable by this user only)."""
    path = directory / "open-exchange-ui.html"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    target = html.escape(url, quote=True)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(f'<!DOCTYPE html><meta charset="utf-8">'
                     f'<meta http-equiv="refresh" content="0;url={target}">'
                     f'<title>exchange</title><a href="{target}">exchange</a>\n')
    return path


async def run_ui(settings: UiSettings, *, port: int = 0, open_browser: bool = True,
                 on_ready: Callable[[str], None] = print,
                 stop: asyncio.Event | None = None) -> None:
    """Serve the UI until ``stop`` is set, SIGINT or SIGTERM; ``on_ready(url)`` once listening."""
    guard = Guard(new_secret(), port, host=LOOPBACK)
    state = UiState(settings)
    app = build_app(state, guard)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    # Open event streams would otherwise hold the shutdown for a minute.
    site = web.TCPSite(runner, LOOPBACK, port, reuse_address=False, shutdown_timeout=1.0)
    await site.start()
    server = site._server  # the bound port when 0 was asked for
    sockets = getattr(server, "sockets", None) or []
    guard.port = sockets[0].getsockname()[1] if sockets else port
    guard.cookie = f"exchange_ui_{guard.port}"
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    url = guard.launch_url()
    with tempfile.TemporaryDirectory(prefix="exchange-ui-") as tmp:
        try:
            on_ready(url)
            if open_browser:
                launcher = _launch_file(Path(tmp), url)
                await asyncio.to_thread(webbrowser.open, launcher.as_uri())
            await stop.wait()
        finally:
            await runner.cleanup()
