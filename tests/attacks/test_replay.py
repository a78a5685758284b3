"""Replays of body-carrying requests: a captured PATCH, commit or member removal sent again.

Plain GET replays (same process and across two processes on PostgreSQL) are
in ``tests/integration/test_server_auth.py``. Here the replayed requests
would change state: each replay is 401 ``replayed-nonce`` with a denied entry,
and the state is exactly what the first request made it (offset, evidence
count, epochs). A replay with a different body under the same signature
fails the digest first.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from exchange.wire.tus import PATCH_CONTENT_TYPE
from tests import statements
from tests.attacks._raw import send
from tests.faults._tools import TUS, b64, case_head, new_case, problem_slug, sha256_hex
from tests.server_harness import Deployment, entry_at, json_of, run


def test_replayed_state_changing_requests_are_refused(sqlite_deployment: Deployment) -> None:
    d = sqlite_deployment

    async def scenario() -> None:
        async with d.session("prosecutor") as pro:
            case_id, _ = await new_case(d, pro, "coordinator")
            data = b"evidence!"
            upload = await pro.create_upload(case_id, len(data) * 2)
            patch, body = pro.prepare("PATCH", upload.path, data=data, headers={
                **TUS, "Upload-Offset": "0", "Content-Type": PATCH_CONTENT_TYPE})
            assert isinstance(body, bytes)
            status, _, _ = await send(pro.connect_url, "PATCH", upload.path, patch, body)
            assert status == 204
            # The same PATCH again (it would append the bytes a second time at offset 0 or
            # 9 if the offset header were rewritten: the signature covers it).
            for replay_body in (body, b"other!!!!"):
                status, headers, text = await send(pro.connect_url, "PATCH", upload.path,
                                                   patch, replay_body)
                assert status in (400, 401), (status, text)
                slug = problem_slug(json.loads(text))
                assert slug in ("replayed-nonce", "digest-mismatch"), slug
                entry = await entry_at(d, int(headers["Exchange-Audit-Index"]))
                assert entry["outcome"] == "denied"
            assert await pro.upload_offset(upload.path) == len(data)
            await pro.append_chunk(upload.path, len(data), 2 * len(data),
                                   lambda s, e: _bytes(data[s - len(data):e - len(data)]))
            commit, body = pro.prepare("POST", upload.path + "/commit", json={
                "sealed_manifest": b64(b"m"), "ciphertext_sha256": sha256_hex(data * 2),
                "epoch": 1, "case_head": await case_head(d, pro, case_id)})
            status, _, _ = await send(pro.connect_url, "POST", upload.path + "/commit",
                                      commit, body)
            assert status == 201
            status, _, text = await send(pro.connect_url, "POST", upload.path + "/commit",
                                         commit, body)
            assert status == 401 and b"replayed-nonce" in text, (status, text)
            listed = await json_of(await pro.request("GET", f"/v1/cases/{case_id}/evidence"))
            assert len(listed["evidence"]) == 1

            # A captured removal with a new epoch, replayed: no second epoch.
            path, json_body, _ = await statements.new_epoch_request(
                pro, d.anchor, case_id, removed="coordinator")
            assert path == f"/v1/cases/{case_id}/members/coordinator/remove"
            removal, body = pro.prepare("POST", path, json=json_body)
            assert (await send(pro.connect_url, "POST", path, removal, body))[0] == 200
            status, _, text = await send(pro.connect_url, "POST", path, removal, body)
            assert status == 401 and b"replayed-nonce" in text
            shown = await json_of(await pro.request("GET", f"/v1/cases/{case_id}"))
            assert [e["epoch"] for e in shown["epochs"]] == [1, 2]

    run(scenario())


async def _bytes(data: bytes) -> AsyncIterator[bytes]:
    yield data
