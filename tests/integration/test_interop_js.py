"""tus-js-client (npm, run with Debian's node) uploads to a real server, interrupted and resumed.

The client is the stock one; the only addition is ``tests/interop/js/
exchange-sign.mjs``, a small ``httpStack`` that signs each request (RFC 9421,
Ed25519, Content-Digest) with Node's own crypto. ``.ci/run`` installs node and
``npm ci``s the locked packages; with ``EXCHANGE_REQUIRE_NODE=1`` a missing
node or package fails instead of skipping.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_interop_python import LIMITS, MIB, _case, _commit
from tests.integration.test_server_evidence import deployed_with
from tests.server_harness import Deployment

JS_DIR = Path(__file__).resolve().parents[1] / "interop" / "js"


def _node() -> str:
    node = shutil.which("node") or shutil.which("nodejs")
    missing = None
    if node is None:
        missing = "node is not installed (apt-get install nodejs npm)"
    elif not (JS_DIR / "node_modules" / "tus-js-client" / "package.json").is_file():
        missing = f"tus-js-client is not installed (cd {JS_DIR} && npm ci)"
    if missing is not None:
        if os.environ.get("EXCHANGE_REQUIRE_NODE"):
            pytest.fail(missing)
        pytest.skip(missing)
    assert node is not None
    return node


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with deployed_with(tmp_path_factory.mktemp("interop-js"), "sqlite", LIMITS) as d:
        yield d


def test_tus_js_client_uploads_interrupted_and_resumed(dep: Deployment, tmp_path: Path) -> None:
    node = _node()
    case_id = _case(dep)
    data = random.Random(1616).randbytes(2 * MIB + 5)
    source = tmp_path / "evidence.age"
    source.write_bytes(data)
    identity = dep.cast["prosecutor"]
    env = {**os.environ, "EXCHANGE_SEED_HEX": bytes(identity.signing_key).hex(),
           "EXCHANGE_KEYID": identity.id}
    done = subprocess.run(
        [node, str(JS_DIR / "upload.mjs"), f"{dep.url}/v1/cases/{case_id}/uploads",
         str(source), str(MIB)],
        capture_output=True, text=True, timeout=120, env=env, cwd=JS_DIR, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["firstOffset"] == MIB
    assert result["finalOffset"] == len(data)
    record = _commit(dep, result["url"], data, case_id)
    assert record["ciphertext_size"] == len(data)
    assert record["ciphertext_sha256"] == hashlib.sha256(data).hexdigest()
