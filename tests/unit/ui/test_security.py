"""The local UI's guard: which requests pass, which are refused and why."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from exchange.ui.security import CSP, Guard

SECRET = "s3cr3t-value"
PORT = 43210
HOST = f"127.0.0.1:{PORT}"
ORIGIN = f"http://{HOST}"


def guard() -> Guard:
    return Guard(SECRET, PORT)


def req(method: str, path: str, **headers: str) -> object:
    headers.setdefault("Host", HOST)
    return make_mocked_request(method, path, headers={k.replace("_", "-"): v
                                                      for k, v in headers.items()})


def with_cookie(value: str = SECRET) -> str:
    return f"exchange_ui_{PORT}={value}"


@pytest.mark.parametrize("path", ["/", "/cases", "/static/app.js", "/?t=nope",
                                  "/cases?t=" + SECRET])
def test_rejects_requests_without_the_secret(path: str) -> None:
    assert guard().refusal(req("GET", path)) == (403, "no-secret")


def test_secret_in_the_launch_url_or_cookie_passes() -> None:
    assert guard().refusal(req("GET", "/?t=" + SECRET)) is None
    assert guard().refusal(req("GET", "/cases", Cookie=with_cookie())) is None


def test_rejects_a_wrong_cookie_and_another_ports_cookie() -> None:
    assert guard().refusal(req("GET", "/", Cookie=with_cookie("x" * len(SECRET)))) is not None
    other = f"exchange_ui_{PORT + 1}={SECRET}"
    assert guard().refusal(req("GET", "/", Cookie=other)) == (403, "no-secret")


@pytest.mark.parametrize("host", [f"localhost:{PORT}", "127.0.0.1", f"127.0.0.1:{PORT + 1}",
                                  f"rebind.example:{PORT}", f"[::1]:{PORT}", ""])
def test_rejects_a_foreign_host_header(host: str) -> None:
    assert guard().refusal(req("GET", "/?t=" + SECRET, Host=host)) == (421, "wrong-host")


@pytest.mark.parametrize("origin", [None, "null", "http://evil.example",
                                    f"http://localhost:{PORT}", f"https://{HOST}"])
def test_rejects_changes_from_a_foreign_origin(origin: str | None) -> None:
    headers = {"Cookie": with_cookie()}
    if origin is not None:
        headers["Origin"] = origin
    assert guard().refusal(req("POST", "/lock", **headers)) == (403, "wrong-origin")
    assert guard().refusal(req("POST", "/lock", Origin=ORIGIN, Cookie=with_cookie())) is None


def test_policy_forbids_inline_code_and_other_origins() -> None:
    assert "default-src 'none'" in CSP and "script-src 'self'" in CSP
    assert "unsafe" not in CSP and "http" not in CSP and "frame-ancestors 'none'" in CSP
