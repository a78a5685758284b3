"""The deployment files in ``deploy/`` are valid and say what the README says.

* the systemd unit passes ``systemd-analyze verify`` (with no warning at
  all), runs as a dedicated user with the hardening options, and its
  ``ExecStart`` parses with exchange's own command-line parser;
* the container file runs as a non-root user and its command parses too;
* the nginx example passes ``nginx -t``, and a real server behind it, with
  the example's own proxy settings, answers signed requests and uploads
  through it (signatures cover the URL clients use).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path

import aiohttp

from exchange.cli._ui import ExitCode
from exchange.cli.main import build_parser
from exchange.client._body import BodyReceiver
from exchange.config import Limits
from exchange.ports import unused_port
from exchange.transport.client import SignedSession
from tests.faults._tools import new_case
from tests.ops.test_backup_restore import upload
from tests.server_harness import deployed, run
from tests.support import ROOT, self_signed_certificate, skip_or_fail

DEPLOY = ROOT / "deploy"


def unit_settings(text: str) -> dict[str, list[str]]:
    """Return a unit file's ``Key=value`` settings (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", "[")) and "=" in line:
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_systemd_unit_is_hardened_and_its_command_parses() -> None:
    settings = unit_settings((DEPLOY / "exchange.service").read_text())
    assert settings["User"] == ["exchange"] and settings["Group"] == ["exchange"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict",
                       "ProtectHome": "yes", "PrivateTmp": "yes", "CapabilityBoundingSet": "",
                       "StateDirectory": "exchange", "KillSignal": "SIGTERM"}.items():
        assert settings[key] == [value], key
    assert str(int(ExitCode.VERIFICATION_FAILED)) in settings["RestartPreventExitStatus"][0].split()
    argv = shlex.split(settings["ExecStart"][0])
    assert argv[0] == "/usr/local/bin/exchange"
    args = build_parser(argv[1:]).parse_args(argv[1:])
    assert args.command == "serve" and str(args.data_dir) == "/var/lib/exchange"
    assert args.host == "127.0.0.1" and args.metrics_port == 9464
    sysusers = (DEPLOY / "exchange.sysusers.conf").read_text().splitlines()
    assert [line.split()[:2] for line in sysusers if line and not line.startswith("#")] == [
        ["u", "exchange"]]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        skip_or_fail("SYSTEMD", "systemd-analyze is not installed (Debian package 'systemd')")
        return
    exchange_bin = Path(sys.executable).parent / "exchange"
    assert exchange_bin.is_file(), "the venv has no exchange script (run bin/setup-venv)"
    unit = tmp_path / "exchange.service"
    unit.write_text((DEPLOY / "exchange.service").read_text()
                    .replace("/usr/local/bin/exchange", str(exchange_bin)))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # unknown keys are only warnings

    broken = tmp_path / "broken.service"
    broken.write_text(unit.read_text().replace("ProtectSystem=", "ProtectSystm="))
    result = subprocess.run([tool, "verify", str(broken)], capture_output=True, text=True,
                            check=False, timeout=60)
    assert "Unknown key" in result.stderr  # the check above can fail


def test_container_file_runs_unprivileged_and_its_command_parses() -> None:
    lines = [line for line in (DEPLOY / "Containerfile").read_text().splitlines()
             if line and not line.startswith("#")]
    instructions: dict[str, list[str]] = {}
    for line in lines:
        if not line.startswith(" "):
            word, _, rest = line.partition(" ")
            instructions.setdefault(word, []).append(rest)
    assert instructions["USER"] == ["exchange"]
    assert instructions["FROM"][0].startswith("docker.io/library/python:3.11")
    for copied in instructions["COPY"]:
        for source in copied.split()[:-1]:
            assert (ROOT / source).exists(), source
    entry = json.loads(instructions["ENTRYPOINT"][0])
    command = json.loads(instructions["CMD"][0])
    assert entry == ["exchange"]
    args = build_parser(command).parse_args(command)
    assert args.command == "serve" and str(args.data_dir) == "/data"
    assert instructions["EXPOSE"] == [f"{args.port} {args.metrics_port}"]
    assert instructions["VOLUME"] == ['["/data"]']
    assert "/v1/ready" in "".join(lines)


def _nginx_config(tmp: Path, upstream: int, https: int, http: int) -> tuple[Path, Path]:
    """Return a runnable nginx.conf around the example site (ports and paths made local),
    and the certificate it serves."""
    cert, key = self_signed_certificate(tmp)
    site = ((DEPLOY / "nginx.conf").read_text()
            .replace("/etc/letsencrypt/live/exchange.example.org/fullchain.pem", str(cert))
            .replace("/etc/letsencrypt/live/exchange.example.org/privkey.pem", str(key))
            .replace("exchange.example.org", "localhost")
            .replace("127.0.0.1:8443", f"127.0.0.1:{upstream}")
            .replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https} ssl http2;")
            .replace("listen [::]:443 ssl http2;\n", "")
            .replace("listen 80;", f"listen 127.0.0.1:{http};")
            .replace("listen [::]:80;\n", ""))
    (tmp / "site.conf").write_text(site)
    temp = tmp / "temp"
    temp.mkdir()
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\npid {tmp}/nginx.pid;\nerror_log {tmp}/error.log;\nevents {{}}\n"
        f"http {{\n access_log off;\n client_body_temp_path {temp}/body;\n"
        f" proxy_temp_path {temp}/proxy;\n fastcgi_temp_path {temp}/fastcgi;\n"
        f" uwsgi_temp_path {temp}/uwsgi;\n scgi_temp_path {temp}/scgi;\n"
        f" include {tmp}/site.conf;\n}}\n")
    return main, cert


def test_nginx_example_proxies_signed_requests_uploads_and_downloads(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists()
                                      else None)
    if nginx is None:
        skip_or_fail("NGINX", "nginx is not installed (Debian package 'nginx-light')")
        return
    site = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_pass http://127.0.0.1:8443;" in site  # no URI part: the path passes unchanged
    assert "proxy_request_buffering off;" in site and "proxy_buffering off;" in site
    body_limit = int(site.split("client_max_body_size ")[1].split("m;")[0]) * 1024 * 1024
    assert body_limit > Limits().max_chunk_bytes

    upstream, https, http = unused_port(), unused_port(), unused_port()
    conf, cert = _nginx_config(tmp_path, upstream, https, http)
    checked = subprocess.run([nginx, "-t", "-c", str(conf), "-p", str(tmp_path),
                              "-e", str(tmp_path / "error.log")],
                             capture_output=True, text=True, check=False, timeout=60)
    assert checked.returncode == 0, checked.stderr

    public = f"https://localhost:{https}"
    (tmp_path / "srv").mkdir()
    proxy = subprocess.Popen([nginx, "-c", str(conf), "-p", str(tmp_path),
                              "-e", str(tmp_path / "error.log")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with deployed(tmp_path / "srv", "sqlite",
                      extra_args=["--port", str(upstream), "--public-url", public]) as d:

            async def through_proxy() -> None:
                trust = ssl.create_default_context(cafile=str(cert))
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=trust)) as https_client:
                    pro = SignedSession(public, d.cast["prosecutor"], session=https_client)
                    case_id, _ = await new_case(d, pro)
                    data = os.urandom(3 * 1024 * 1024 + 17)
                    evidence_id = await upload(pro, case_id, data)
                    response = await pro.request("GET", f"/v1/cases/{case_id}/evidence")
                    async with response:
                        assert response.status == 200, await response.text()
                        assert len((await response.json())["evidence"]) == 1
                    # A pull's body receiver takes the download over through TLS and nginx
                    # (the Content-Length passes through; nothing is re-chunked).
                    response = await pro.request("GET", f"/v1/evidence/{evidence_id}/content")
                    async with response:
                        assert response.status == 200, await response.text()
                        receiver = BodyReceiver.take_over(response, piece_bytes=256 * 1024,
                                                          buffers=3, read_timeout_s=30)
                        assert receiver is not None, dict(response.headers)
                        received = bytearray()
                        try:
                            while piece := await receiver.next_piece():
                                for part in piece:
                                    received += part
                                receiver.recycle(piece)
                        finally:
                            receiver.close()
                        assert received == data
                async with aiohttp.ClientSession() as plain, plain.get(
                        f"http://127.0.0.1:{http}/v1/health?x=1",
                        allow_redirects=False) as response:
                    assert response.status == 308
                    assert response.headers["Location"] == "https://127.0.0.1/v1/health?x=1"

            run(through_proxy())
    finally:
        proxy.send_signal(signal.SIGQUIT)
        try:
            proxy.wait(20)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
