"""Oversized request lines, headers, header counts, upload metadata and bodies.

Oversized JSON (by Content-Length and chunked), an oversized header block, a
PATCH over the chunk limit, past the declared length and a 2 TiB
Upload-Length are in ``tests/integration/test_server_auth.py`` and
``test_server_evidence.py``. Here: a 64 KiB request line, one 64 KiB header,
thousands of small headers, a huge Signature-Input, 1 MiB of upload metadata
and a JSON body far past the limit with a lying Content-Length. Each is a 4xx
(413/431/400) at once; the server keeps serving and its memory stays small.
"""

from __future__ import annotations

from pathlib import Path

from tests.attacks._raw import raw_request
from tests.faults._tools import TUS, new_case
from tests.server_harness import Deployment, json_of, run

KIB = 1024


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.") else 0


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_oversized_requests_are_refused_early(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment
    host = d.url.split("//", 1)[1]

    async def scenario() -> None:
        rss_before = _rss_mib(d.processes[0].proc.pid)
        async with d.session("prosecutor") as pro:
            case_id, _ = await new_case(d, pro)
            signed, _ = pro.prepare("GET", "/v1/cases")
            sig = "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            many_components = " ".join(['"@method"'] * 3000)
            heads = {
                "long request line": f"GET /v1/cases?{'a' * 64 * KIB} HTTP/1.1\r\nHost: {host}"
                                     "\r\n\r\n",
                "one huge header": f"GET /v1/cases HTTP/1.1\r\nHost: {host}\r\n{sig}"
                                   f"X-Big: {'b' * 64 * KIB}\r\n\r\n",
                "many headers": f"GET /v1/cases HTTP/1.1\r\nHost: {host}\r\n{sig}"
                                + "".join(f"X-{n}: 1\r\n" for n in range(5000)) + "\r\n",
                "huge signature-input": f"GET /v1/cases HTTP/1.1\r\nHost: {host}\r\n"
                                        f"Signature-Input: sig1=({many_components})"
                                        ";keyid=\"prosecutor\"\r\nSignature: sig1=:AA==:\r\n\r\n",
                "upload metadata": f"POST /v1/cases/{case_id}/uploads HTTP/1.1\r\nHost: {host}\r\n"
                                   f"Tus-Resumable: 1.0.0\r\nUpload-Length: 1\r\n"
                                   f"Upload-Metadata: name {'QUFB' * 256 * KIB}\r\n"
                                   "Content-Length: 0\r\n\r\n",
                "lying content-length": f"POST /v1/participants HTTP/1.1\r\nHost: {host}\r\n"
                                        "Content-Type: application/json\r\n"
                                        f"Content-Length: {10 * 1024 ** 3}\r\n\r\n{{",
            }
            for name, head in heads.items():
                answer = await raw_request(d.url, head.encode("latin-1"), timeout_s=10)
                assert 400 <= _status(answer) < 500, (name, answer[:200])
            # Still serving, with its memory where it was.
            assert "cases" in await json_of(await pro.request("GET", "/v1/cases"))
            response = await pro.request("POST", f"/v1/cases/{case_id}/uploads",
                                         headers={**TUS, "Upload-Length": "1"})
            assert response.status == 201
            response.release()
        assert _rss_mib(d.processes[0].proc.pid) < rss_before + 64

    run(scenario())
