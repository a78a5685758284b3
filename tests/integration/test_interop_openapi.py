"""A client generated from the served OpenAPI document makes real calls.

openapi-python-client (a kept generator, offline, from PyPI) generates an
httpx client from ``GET /v1/openapi.json`` of a running server; with the
signing hook (``exchange.client.httpauth.HttpxSignatureAuth``) it discovers
the tus limits, creates an upload, appends a chunk, commits it as evidence
and reads it back, and its parsed models carry the declared response headers'
values. The only configuration is a content-type override (the generator has
no writer for ``application/offset+octet-stream``; the bytes are the same).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests

from exchange.client.httpauth import HttpxSignatureAuth
from tests import statements
from tests.integration.test_interop_python import LIMITS, _case
from tests.integration.test_server_evidence import deployed_with
from tests.server_harness import Deployment, run

BIN = Path(sys.executable).parent
#: The Content-Digest the generated signatures ask for is filled in by the hook.
BY_THE_HOOK = "computed-by-the-signing-hook"


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed_with(tmp_path_factory.mktemp("interop-openapi"), "sqlite", LIMITS) as d:
        yield d


def _generate(dep: Deployment, out: Path) -> ModuleType:
    document = requests.get(dep.url + "/v1/openapi.json", timeout=10).json()
    (out / "openapi.json").write_text(json.dumps(document))
    (out / "config.yaml").write_text(
        "content_type_overrides:\n  application/offset+octet-stream: application/octet-stream\n")
    done = subprocess.run(
        [str(BIN / "openapi-python-client"), "generate", "--path", "openapi.json",
         "--meta", "none", "--output-path", "exchange_api", "--config", "config.yaml"],
        cwd=out, capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    sys.path.insert(0, str(out))
    try:
        return importlib.import_module("exchange_api")
    finally:
        sys.path.remove(str(out))


def _module(name: str) -> Any:
    return importlib.import_module(f"exchange_api.{name}")


def test_generated_client_uploads_commits_and_reads_back(dep: Deployment, tmp_path: Path) -> None:
    generated = _generate(dep, tmp_path)
    ops = {name: _module(f"api.evidence.{name}") for name in (
        "evidence_commit", "evidence_show", "options_uploads", "upload_append",
        "upload_create", "upload_status")}
    evidence_commit, evidence_show, options_uploads = (
        ops["evidence_commit"], ops["evidence_show"], ops["options_uploads"])
    upload_append, upload_create, upload_status = (
        ops["upload_append"], ops["upload_create"], ops["upload_status"])
    commit_body = _module("models").EvidenceCommitBody
    tus_version = _module("models.upload_create_tus_resumable").UploadCreateTusResumable
    file_type = _module("types").File

    identity = dep.cast["prosecutor"]
    plain = generated.Client(base_url=dep.url)
    signed = generated.Client(base_url=dep.url,
                              httpx_args={"auth": HttpxSignatureAuth(identity)})

    discovery = options_uploads.sync_detailed(client=plain)
    assert discovery.status_code == 204
    assert discovery.headers["Tus-Max-Size"] and discovery.headers["Exchange-Max-Chunk-Size"]

    case_id = _case(dep)
    data = b"an age file, really"
    created = upload_create.sync_detailed(case_id, client=signed,
                                          tus_resumable=tus_version("1.0.0"),
                                          upload_length=str(len(data)))
    assert created.status_code == 201, created.content
    upload_id = created.parsed.upload_id
    assert created.headers["Location"] == f"/v1/uploads/{upload_id}"

    tus = tus_version("1.0.0")
    appended = upload_append.sync_detailed(upload_id, client=signed, tus_resumable=tus,
                                           upload_offset="0", content_digest=BY_THE_HOOK,
                                           body=file_type(payload=data))
    assert appended.status_code == 204, appended.content
    assert appended.headers["Upload-Offset"] == str(len(data))
    status = upload_status.sync_detailed(upload_id, client=signed, tus_resumable=tus)
    assert status.status_code == 200 and status.headers["Upload-Length"] == str(len(data))

    async def head() -> str:
        async with dep.session("prosecutor") as pro:
            return await statements.case_head(pro, dep.anchor, case_id)

    body = commit_body(sealed_manifest=base64.b64encode(b"m").decode(), epoch=1,
                       ciphertext_sha256=hashlib.sha256(data).hexdigest(),
                       case_head=run(head()))
    committed = evidence_commit.sync_detailed(upload_id, client=signed, body=body,
                                              content_digest=BY_THE_HOOK)
    assert committed.status_code == 201, committed.content
    evidence_id = committed.parsed.evidence_id
    shown = evidence_show.sync_detailed(evidence_id, client=signed)
    assert shown.status_code == 200
    assert shown.parsed.ciphertext_size == len(data)
    assert int(shown.headers["Exchange-Audit-Index"]) > 0

    # Unsigned, the generated call gets the problem model and the challenge.
    refused = evidence_show.sync_detailed(evidence_id, client=plain)
    assert refused.status_code == 401
    assert refused.parsed.type_.endswith("/signature-missing")
    assert "Accept-Signature" in refused.headers
