"""The real ``exchange`` CLI against a hostile server: every byte it sends is a lie.

Each test scripts :class:`~tests.e2e.hostile_server.HostileServer` with one
kind of lie (traversal and absolute ids, ANSI sequences in every string,
malformed JSON, wrong Content-Length, endless feed events) and runs the CLI
as a subprocess. It asserts a clear error per lie, that nothing outside the
destination and the client's own state changed (the tree is snapshotted
around the run, with victim files where a traversal would land), that no
escape sequence reaches the terminal, and, for the endless feed, bounded
memory (the child's peak RSS) and that the client stopped reading early.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from tests.e2e.hostile_server import ANSI, HostileServer, answer, client_env, problem
from tests.support import ROOT

CASE = "case-0123456789abcdef01234567"
RAW_ESCAPES = ("\x1b", "\x07", "\x9b", "\u202e")


def _snapshot(root: Path, skip: tuple[Path, ...]) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` but ``skip``: kind, mode, size, mtime and content hash."""
    out: dict[str, tuple[object, ...]] = {}
    for directory, dirs, files in os.walk(root):
        here = Path(directory)
        dirs[:] = [d for d in dirs if here / d not in skip]
        for name in [*dirs, *files]:
            path = here / name
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and \
                not path.is_symlink() else ""
            out[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def _peak_rss_kib(pid: int, peak: list[int], done: threading.Event) -> None:
    while not done.is_set():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak[0] = max(peak[0], int(line.split()[1]))
        except OSError:
            return
        time.sleep(0.05)


def run_cli(env: dict[str, str], *args: str, timeout_s: float = 60) -> tuple[
        subprocess.CompletedProcess[str], int]:
    """Run ``exchange ARGS``; return the result and the child's peak RSS in KiB."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    child_env.update(env, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "exchange", *args], env=child_env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            encoding="utf-8", errors="surrogateescape", start_new_session=True)
    peak, done = [0], threading.Event()
    watcher = threading.Thread(target=_peak_rss_kib, args=(proc.pid, peak, done))
    watcher.start()
    try:
        out, err = proc.communicate(timeout=timeout_s)
    finally:
        done.set()
        watcher.join()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), peak[0]


def _assert_terminal_safe(result: subprocess.CompletedProcess[str]) -> None:
    for stream in (result.stdout, result.stderr):
        for raw in RAW_ESCAPES:
            assert raw not in stream, (raw, stream[:400])
    assert "Traceback" not in result.stderr


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[HostileServer, Path, dict[str, str]]]:
    """A hostile server, a base directory with victim files, and the client's environment."""
    (tmp_path / "victim.txt").write_text("precious\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("do not touch\n")
    server = HostileServer()
    with server.running():
        yield server, tmp_path, client_env(tmp_path, server)


def _record(evidence_id: object, case_id: object = CASE, uploader: object = "prosecutor-1"
            ) -> dict[str, object]:
    return {"evidence_id": evidence_id, "case_id": case_id, "uploader": uploader, "epoch": 1,
            "ciphertext_sha256": "00" * 32, "ciphertext_size": 10,
            "sealed_manifest": "", "audit_index": 3}


def test_traversal_and_absolute_ids_are_refused_and_nothing_outside_dest_is_touched(
    world: tuple[HostileServer, Path, dict[str, str]],
) -> None:
    server, base, env = world
    dest = base / "dest"
    victim = base / "victim.txt"
    lies = [
        _record(str(victim)),  # the old bug: an absolute id became the partial-download path
        _record("../../victim.txt"),
        _record("..%2F..%2Fvictim.txt"),
        _record("ev-1" + ANSI),
        _record(["not", "a", "string"]),
        _record("ev-1", case_id="../outside"),
        _record("ev-1", uploader="../../v1/participants"),
    ]

    async def evidence(request: web.Request) -> web.StreamResponse:
        return answer({"evidence": lies})

    async def cases(request: web.Request) -> web.StreamResponse:
        return answer({"cases": [{"case_id": "../../outside", "created_by": "p"}]})

    server.routes[f"GET /v1/cases/{CASE}/evidence"] = evidence
    server.routes["GET /v1/cases"] = cases
    skip = (dest, base / "state", base / "home")
    before = _snapshot(base, skip)

    pulled, _ = run_cli(env, "pull", CASE, "--dest", str(dest))
    assert pulled.returncode == 1, pulled.stderr
    _assert_terminal_safe(pulled)
    errors = [line for line in pulled.stderr.splitlines() if line.startswith("exchange: error:")]
    assert len(errors) == len(lies), pulled.stderr
    assert sum("not a valid evidence id" in line for line in errors) == 5
    assert any("not a valid case id" in line for line in errors)
    assert any("not a valid participant id" in line for line in errors)
    assert "0 file(s) pulled, 0 already pulled, 7 failed" in pulled.stderr

    every, _ = run_cli(env, "pull", "--all", "--dest", str(dest))
    assert every.returncode == 1 and "not a valid case id" in every.stderr, every.stderr
    listed, _ = run_cli(env, "files", CASE)
    assert listed.returncode == 1 and "not a valid evidence id" in listed.stderr
    for result in (every, listed):
        _assert_terminal_safe(result)

    assert _snapshot(base, skip) == before
    assert victim.read_text() == "precious\n"
    # Nothing was asked for with a hostile id in its path.
    assert all(".." not in r and "outside" not in r for r in server.requests), server.requests


def test_ansi_sequences_in_every_string_are_escaped(
    world: tuple[HostileServer, Path, dict[str, str]],
) -> None:
    server, _, env = world

    async def show(request: web.Request) -> web.StreamResponse:
        return answer({"case_id": CASE, "metadata": "", "created_by": "prosecutor-1",
                       "created_at": 0,
                       "members": [{"participant": "p" + ANSI, "role": "r" + ANSI,
                                    "removed_at": None}],
                       "epochs": [{"epoch": 1, "created_at": 0, "created_by": ANSI}]})

    async def refuse(request: web.Request) -> web.StreamResponse:
        return problem(403, "forbidden", "denied " + ANSI)

    async def refuse_unknown(request: web.Request) -> web.StreamResponse:
        return problem(418, "x" + ANSI, ANSI * 3)

    server.routes[f"GET /v1/cases/{CASE}"] = show
    server.routes[f"GET /v1/cases/{CASE}/epochs/1/envelope"] = refuse
    server.routes["GET /v1/cases/case-other"] = refuse_unknown
    server.routes["GET /v1/cases"] = refuse

    # The server's member list is not shown at all: members come from signed statements,
    # and this case has none (exit 3), so none of its strings reach the terminal.
    shown, _ = run_cli(env, "case", "show", CASE)
    assert shown.returncode == 3, shown.stderr
    _assert_terminal_safe(shown)
    assert "owned" not in shown.stdout + shown.stderr

    for args in (("case", "show", "case-other"), ("case", "list")):
        refused, _ = run_cli(env, *args)
        assert refused.returncode == 1, refused.stderr
        _assert_terminal_safe(refused)
        assert refused.stderr.startswith("exchange: error: ")
        assert "\\x1b" in refused.stderr


def test_malformed_json_and_wrong_content_lengths_are_clear_errors(
    world: tuple[HostileServer, Path, dict[str, str]],
) -> None:
    server, _, env = world
    lies: dict[str, tuple[bytes, int | None]] = {
        "truncated json": (b'{"cases": [', None),
        "not json": (b"<html>" + ANSI.encode() + b"</html>", None),
        "short content-length": (b'{"cases": []}', 5),
        "long content-length": (b'{"cases": []}', 10_000),
    }
    for name, (body, length) in lies.items():

        async def cases(request: web.Request, body: bytes = body,
                        length: int | None = length) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = len(body) if length is None else length
            await response.prepare(request)
            await response.write(body[:response.content_length])
            if length is not None and length > len(body) and request.transport is not None:
                request.transport.close()  # promised more than it sends
            return response

        server.routes["GET /v1/cases"] = cases
        result, _ = run_cli(env, "case", "list", timeout_s=60)
        assert result.returncode == 1, (name, result.stderr)
        _assert_terminal_safe(result)
        lines = result.stderr.splitlines()
        assert lines[0].startswith("exchange: error: "), (name, result.stderr)
        if name == "long content-length":
            assert "cannot reach the server" in lines[0], lines
        else:
            assert "not valid json" in lines[0], (name, lines)


@pytest.mark.parametrize("shape", ["endless data lines", "one endless line"])
def test_an_endless_feed_event_ends_the_watch_with_bounded_memory(
    world: tuple[HostileServer, Path, dict[str, str]], shape: str,
) -> None:
    server, base, env = world
    piece = b"data: " + b"x" * 65_530 + b"\n" if shape == "endless data lines" else \
        b"x" * 65_536
    total = 400 * len(piece)  # about 26 MiB offered; an unbounded reader would keep it all

    async def no_evidence(request: web.Request) -> web.StreamResponse:
        return answer({"evidence": []})

    server.routes[f"GET /v1/cases/{CASE}/evidence"] = no_evidence
    server.routes[f"GET /v1/cases/{CASE}/feed"] = server.stream(
        b"id: 7\nevent: evidence\n", piece, repeat=400)
    result, peak_kib = run_cli(env, "pull", CASE, "--dest", str(base / "dest"), "--watch")
    assert result.returncode == 1, result.stderr
    _assert_terminal_safe(result)
    assert "the server sent an event larger than 65536 bytes" in result.stderr
    # The client stopped reading long before the end (socket buffers hold a few MiB).
    assert server.sent < total // 2, (server.sent, total)
    assert 0 < peak_kib < 200 * 1024, peak_kib
