"""Interrupted transfers and damaged blobs through the CLI, against a real server.

A SIGKILLed upload resumes on rerun (one evidence file, hashes match); a pull
with a partial download present (its plaintext prefix and age header) resumes
with a Range request, and so does a SIGKILLed pull; a damaged partial is
discarded; a byte flipped in the server's blob store makes pull
refuse with a clear message and leave nothing at the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from exchange.client.download import partial_directory
from exchange.client.ids import local_key
from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.client import SignedSession
from tests.e2e.conftest import World, new_case
from tests.server_harness import entry_at, run

MIB = 1024 * 1024


def _session(world: World, name: str) -> SignedSession:
    identity: ParticipantIdentity = world.deployment.cast[name]
    return SignedSession(world.deployment.url, identity)


def _server_offset(world: World, upload_path: str) -> int:
    async def head() -> int:
        async with _session(world, "prosecutor") as session:
            return await session.upload_offset(upload_path)

    return run(head())


def _upload_one(world: World, case_id: str, path: Path) -> str:
    done = world.cli("prosecutor", "upload", case_id, str(path), "--json")
    result: str = json.loads(done.stdout)["uploaded"][0]["evidence_id"]
    return result


def test_upload_killed_mid_way_resumes_on_rerun(world: World, tmp_path: Path) -> None:
    case_id = new_case(world, "Operation Resume", "coordinator")
    source = tmp_path / "disk.img"
    source.write_bytes(os.urandom(8 * MIB + 4321))
    upload = world.popen("prosecutor", "upload", case_id, str(source), "--chunk-mib", "1",
                         "--limit-rate", "2")
    deadline = time.monotonic() + 60
    record: Path | None = None
    offset = 0
    while offset < 2 * MIB:
        assert time.monotonic() < deadline and upload.poll() is None, "upload ended early"
        record = record or next(
            world.state_dir("prosecutor").glob("*/prosecutor/uploads/*.json"), None)
        if record is not None:
            offset = _server_offset(world, json.loads(record.read_text())["upload_path"])
        time.sleep(0.1)
    upload.send_signal(signal.SIGKILL)
    upload.wait(10)
    assert record is not None and record.exists()
    length = json.loads(record.read_text())["length"]
    assert 0 < _server_offset(world, json.loads(record.read_text())["upload_path"]) < length

    rerun = world.cli("prosecutor", "upload", case_id, str(source), "--json")
    result = json.loads(rerun.stdout)["uploaded"][0]
    assert result["resumed_from"] >= 2 * MIB, rerun.stderr
    assert "resumed at" in rerun.stderr
    assert not record.exists()

    listed = json.loads(world.cli("coordinator", "files", case_id, "--json").stdout)["evidence"]
    assert [e["evidence_id"] for e in listed] == [result["evidence_id"]]
    assert listed[0]["plaintext_sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    dest = tmp_path / "dest"
    world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    assert (dest / case_id / "disk.img").read_bytes() == source.read_bytes()


def _ciphertext(world: World, evidence_id: str) -> bytes:
    async def fetch() -> bytes:
        async with _session(world, "coordinator") as session:
            response = await session.open_download(evidence_id)
            async with response:
                return await response.read()

    return run(fetch())


def _age_header(ciphertext: bytes) -> bytes:
    """The age header through its payload nonce (C2SP age: the MAC line, then 16 bytes)."""
    mac_line = ciphertext.index(b"\n--- ") + 1
    return ciphertext[: ciphertext.index(b"\n", mac_line) + 1 + 16]


def _keep(dest: Path, evidence_id: str, *, header: bytes, plaintext: bytes) -> Path:
    """Leave what an interrupted pull keeps: the age header and a plaintext prefix."""
    partial = partial_directory(dest, evidence_id)
    (partial / "header").write_bytes(header)
    (partial / "plaintext").write_bytes(plaintext)
    return partial


def test_pull_with_a_partial_download_present_resumes_with_a_range(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Partial", "coordinator")
    source = tmp_path / "scan.pdf"
    source.write_bytes(os.urandom(3 * MIB + 17))
    evidence_id = _upload_one(world, case_id, source)
    header = _age_header(_ciphertext(world, evidence_id))
    dest = tmp_path / "dest"
    dest.mkdir()
    kept = 3 * MIB // 2 + 1000  # not a whole number of 64 KiB chunks: cut back to 24
    partial = _keep(dest, evidence_id, header=header, plaintext=source.read_bytes()[:kept])

    done = world.cli("coordinator", "pull", case_id, "--dest", str(dest), "--json")
    assert (dest / case_id / "scan.pdf").read_bytes() == source.read_bytes()
    custody = json.loads((dest / case_id / "scan.pdf.custody.json").read_text())
    entry = run(entry_at(world.deployment, custody["download"]["audit_index"]))
    assert entry["action"] == "evidence.download"
    resumed_at = len(header) + 24 * (64 * 1024 + 16)
    assert entry["details"]["start"] == resumed_at
    assert str(resumed_at) in done.stdout
    assert not partial.exists()


def test_an_interrupted_pull_resumes_where_it_stopped(world: World, tmp_path: Path) -> None:
    """A real pull is killed mid-file; the rerun fetches only the rest and verifies it all."""
    case_id = new_case(world, "Operation Interrupted Pull", "coordinator")
    source = tmp_path / "extraction.bin"
    source.write_bytes(os.urandom(96 * MIB))  # large enough to be caught half-way
    evidence_id = _upload_one(world, case_id, source)
    dest = tmp_path / "dest"
    pull = world.popen("coordinator", "pull", case_id, "--dest", str(dest))
    plaintext = dest / ".partial" / local_key("evidence", evidence_id) / "plaintext"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pull.poll() is None:
        with contextlib.suppress(FileNotFoundError):
            if plaintext.stat().st_size > 4 * MIB:
                break
        time.sleep(0.005)
    pull.send_signal(signal.SIGKILL)
    pull.wait(10)
    assert plaintext.stat().st_size < 96 * MIB, "the pull ended before it was interrupted"
    assert (plaintext.parent / "header").exists()
    assert not (dest / case_id / "extraction.bin").exists()

    done = world.cli("coordinator", "pull", case_id, "--dest", str(dest), "--json")
    assert (dest / case_id / "extraction.bin").read_bytes() == source.read_bytes()
    custody = json.loads((dest / case_id / "extraction.bin.custody.json").read_text())
    entry = run(entry_at(world.deployment, custody["download"]["audit_index"]))
    assert entry["details"]["start"] >= 4 * MIB, done.stdout
    assert not plaintext.parent.exists()


@pytest.mark.parametrize("damaged", ["plaintext", "header"])
def test_a_damaged_partial_download_is_discarded_and_fetched_again(
    world: World, tmp_path: Path, damaged: str,
) -> None:
    case_id = new_case(world, f"Operation Damaged {damaged}", "coordinator")
    source = tmp_path / "photo.jpg"
    source.write_bytes(os.urandom(MIB + 99))
    evidence_id = _upload_one(world, case_id, source)
    header = bytearray(_age_header(_ciphertext(world, evidence_id)))
    plaintext = bytearray(source.read_bytes()[: 300 * 1024])
    if damaged == "plaintext":
        plaintext[250 * 1024] ^= 0x01  # the hashes at the end will not match the manifest
    else:
        header[-20] ^= 0x01  # inside the header MAC: the kept header does not open
    dest = tmp_path / "dest"
    dest.mkdir()
    _keep(dest, evidence_id, header=bytes(header), plaintext=bytes(plaintext))

    done = world.cli("coordinator", "pull", case_id, "--dest", str(dest))
    assert "damaged" in done.stderr
    assert (dest / case_id / "photo.jpg").read_bytes() == source.read_bytes()


def test_a_byte_flipped_in_the_blob_store_is_refused_and_nothing_is_written(
    world: World, tmp_path: Path,
) -> None:
    case_id = new_case(world, "Operation Bit Flip", "coordinator")
    source = tmp_path / "ledger.xlsx"
    source.write_bytes(os.urandom(2 * MIB + 5))
    world.cli("prosecutor", "upload", case_id, str(source))
    listed = json.loads(world.cli("coordinator", "files", case_id, "--json").stdout)["evidence"]
    sha = hashlib.sha256(_ciphertext(world, listed[0]["evidence_id"])).hexdigest()
    blob = world.deployment.data_dir / "blobs" / sha[:2] / sha[2:4] / sha
    blob.chmod(0o600)
    with blob.open("r+b") as handle:
        handle.seek(MIB)
        byte = handle.read(1)
        handle.seek(MIB)
        handle.write(bytes([byte[0] ^ 0x80]))

    dest = tmp_path / "dest"
    refused = world.cli("coordinator", "pull", case_id, "--dest", str(dest), check=False)
    assert refused.returncode == 3, refused.stderr
    assert "damaged" in refused.stderr
    assert "Traceback" not in refused.stderr
    case_dir = dest / case_id
    assert not case_dir.exists() or list(case_dir.iterdir()) == []
