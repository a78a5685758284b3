"""The local UI refuses what does not come from its own page: no secret, a foreign Host,
a foreign Origin, another local user; it sends a strict CSP and locks itself when idle."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.ui.app import build_app
from exchange.ui.security import Guard
from exchange.ui.server import _launch_file
from exchange.ui.state import UiSettings, UiState
from tests.ui.conftest import PASSPHRASE, UiProcess, World, request

NOBODY = "nobody"


@pytest.fixture(scope="module")
def ui(world: World) -> Iterator[UiProcess]:
    process = UiProcess(world, "security", ["admin-01"], idle_lock_min=0.05)
    try:
        yield process
    finally:
        process.stop()


def secret_of(ui: UiProcess) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(ui.launch).query)["t"][0]


def cookie(ui: UiProcess) -> str:
    """Trade the launch secret for the session cookie, as the browser does."""
    response = request(ui, "GET", "/?t=" + secret_of(ui))
    assert response.status == 303 and response.getheader("Location") == "/"
    set_cookie = response.getheader("Set-Cookie") or ""
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie
    return set_cookie.split(";", 1)[0]


def test_no_secret_is_refused(ui: UiProcess) -> None:
    for path in ("/", "/cases", "/events", "/static/app.js", "/?t=wrong"):
        assert request(ui, "GET", path).status == 403, path
    assert request(ui, "GET", "/", headers={"Cookie": f"exchange_ui_{ui.port}=guess"}).status \
        == 403


def test_launch_secret_gives_an_httponly_strict_cookie(ui: UiProcess) -> None:
    jar = cookie(ui)
    page = request(ui, "GET", "/", headers={"Cookie": jar})
    assert page.status == 200
    csp = page.getheader("Content-Security-Policy") or ""
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.getheader("Cache-Control") == "no-store"


def test_foreign_host_is_refused_even_with_the_secret(ui: UiProcess) -> None:
    jar = cookie(ui)
    for host in (f"localhost:{ui.port}", f"evil.example:{ui.port}", "127.0.0.1",
                 f"127.0.0.1:{ui.port + 1}"):
        assert request(ui, "GET", "/", host=host, headers={"Cookie": jar}).status == 421, host
        assert request(ui, "GET", "/?t=" + secret_of(ui), host=host).status == 421, host


def test_foreign_or_missing_origin_is_refused_on_changes(ui: UiProcess) -> None:
    jar = cookie(ui)
    own = f"http://127.0.0.1:{ui.port}"
    body = "language=sr_Latn&back=/"
    for origin in ("http://evil.example", f"http://localhost:{ui.port}", "null", None):
        headers = {"Cookie": jar}
        if origin is not None:
            headers["Origin"] = origin
        assert request(ui, "POST", "/language", headers=headers, body=body).status == 403
    accepted = request(ui, "POST", "/language", headers={"Cookie": jar, "Origin": own},
                       body="language=en&back=/")
    assert accepted.status == 303


def every_route() -> list[tuple[str, str]]:
    """(method, path) of every route of the UI's application, its variable parts filled in
    with values they accept (so each request reaches that route, not a 404)."""
    nowhere = Path("/nonexistent")
    app = build_app(UiState(UiSettings(url="http://127.0.0.1:9", anchor=None, keystores=(),
                                       state_root=nowhere, pull_dir=nowhere)), Guard("x", 1))
    out = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        if "pattern" in info:
            pattern = info["pattern"]
            values = {name: next((alt for alt in regex.split("|")
                                  if re.fullmatch(r"[a-z]+", alt)), "1")
                      for name, regex in re.findall(r"\(\?P<(\w+)>([^)]*)\)", pattern.pattern)}
            path = info["formatter"].format(**values)
            assert pattern.fullmatch(path), (path, pattern)
        elif "prefix" in info:  # static files
            path = info["prefix"] + "/app.js"
        else:
            path = info["path"]
        out.append((route.method, path))
    return out


def test_every_route_is_guarded(ui: UiProcess) -> None:
    """Each route, not just a sample: no secret, or a change from a foreign (or no) Origin,
    is refused by the guard before any handler runs."""
    jar = cookie(ui)
    own = f"http://127.0.0.1:{ui.port}"
    routes = every_route()
    changing = [(m, p) for m, p in routes if m not in ("GET", "HEAD")]
    assert ("POST", "/admin/participants/1/suspend") in changing  # the enumeration is real
    assert ("POST", "/admin/key-change") in changing
    for method, path in routes:
        refused = request(ui, method, path, headers={"Origin": own}, body="")
        assert refused.status == 403, (method, path, refused.status)
        if method != "HEAD":
            assert refused.data.startswith(b"refused: open the address"), path  # type: ignore[attr-defined]
    for method, path in changing:
        for origin in ("http://evil.example", "null", None):
            headers = {"Cookie": jar, **({"Origin": origin} if origin else {})}
            refused = request(ui, method, path, headers=headers, body="")
            assert refused.status == 403, (method, path, origin, refused.status)
            assert refused.data.startswith(b"refused: a request that changes"), path  # type: ignore[attr-defined]


def _other_user_command() -> list[str]:
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        pytest.skip("needs root and setpriv to run a request as another user")
    return [setpriv, "--reuid", NOBODY, "--regid", "nogroup", "--clear-groups", "--"]


def test_another_local_user_is_refused(ui: UiProcess) -> None:
    """A process of user 'nobody' reaches the port but not the secret, so it is refused;
    nor can it read the launch file that carries the secret to the browser."""
    prefix = _other_user_command()
    script = (f"import http.client;c=http.client.HTTPConnection('127.0.0.1',{ui.port},"
              "timeout=20);c.request('GET','/cases');print(c.getresponse().status)")
    done = subprocess.run([*prefix, "/usr/bin/python3", "-c", script], capture_output=True,
                          text=True, timeout=60, check=False, cwd="/")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "403"
    private = Path(tempfile.mkdtemp(prefix="exchange-ui-test-"))  # under /tmp: reachable
    try:
        launcher = _launch_file(private, ui.launch)
        assert launcher.stat().st_mode & 0o777 == 0o600
        os.chmod(private, 0o711)  # the directory searchable: only the file mode protects it
        control = private / "control.txt"
        control.write_text("readable")
        control.chmod(0o644)
        read = [*prefix, "/bin/cat"]
        seen = subprocess.run([*read, str(control)], capture_output=True, text=True,
                              timeout=60, check=False, cwd="/")
        assert seen.stdout == "readable"  # the other user could read it, were it not 0600
        denied = subprocess.run([*read, str(launcher)], capture_output=True, text=True,
                                timeout=60, check=False, cwd="/")
        assert denied.returncode != 0 and secret_of(ui) not in denied.stdout
    finally:
        shutil.rmtree(private)


def test_idle_lock_forgets_the_identity(ui: UiProcess) -> None:
    jar = cookie(ui)
    own = f"http://127.0.0.1:{ui.port}"
    unlocked = request(ui, "POST", "/unlock", headers={"Cookie": jar, "Origin": own},
                       body="keystore=0&passphrase=" + urllib.parse.quote(PASSPHRASE))
    assert unlocked.status == 303
    assert request(ui, "GET", "/admin", headers={"Cookie": jar}).status == 200
    time.sleep(0.05 * 60 + 2.5)  # the idle limit (3 s) and the watcher's period
    assert request(ui, "GET", "/admin", headers={"Cookie": jar}).status == 303  # to unlock
