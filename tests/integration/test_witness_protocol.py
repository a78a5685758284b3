"""C2SP tlog-witness against a real ``exchange witness serve`` process: every status code.

One witness process per module witnesses two logs (several logs per
witness). Each test uses its own log origin, so the tests do not depend on
each other's state.
"""

from __future__ import annotations

import base64
import json
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from exchange.audit.checkpoint import Checkpoint
from exchange.audit.note import Ed25519Signer, open_note, parse_verifier_key, sign_note
from exchange.audit.tree import empty_root
from exchange.witness.state import DATABASE_NAME
from tests.witness_harness import MemoryLog, WitnessProcess, post

PROBLEM = "application/problem+json"


def _logs() -> dict[str, MemoryLog]:
    names = ["status", "conflict", "restart", "concurrent", "proofs", "zero", "second"]
    return {name: MemoryLog(origin=f"log.test/{name}") for name in names}


@pytest.fixture(scope="module")
def logs() -> dict[str, MemoryLog]:
    return _logs()


@pytest.fixture(scope="module")
def witness(tmp_path_factory: pytest.TempPathFactory,
            logs: dict[str, MemoryLog]) -> Iterator[WitnessProcess]:
    proc = WitnessProcess(tmp_path_factory.mktemp("witness"), "witness.test/w1",
                          [log.vkey for log in logs.values()])
    yield proc
    proc.stop()


def _problem(answer: tuple[int, str, bytes], status: int, slug: str) -> None:
    code, ctype, body = answer
    assert code == status, (code, body)
    assert ctype.startswith(PROBLEM), ctype
    problem = json.loads(body)
    assert problem["status"] == status
    assert problem["type"].endswith("/" + slug)
    assert "Traceback" not in body.decode()


def _cosigned(witness: WitnessProcess, log: MemoryLog, answer: tuple[int, str, bytes],
              size: int) -> None:
    code, ctype, body = answer
    assert code == 200, body
    assert ctype.startswith("text/plain")
    note = log.note(size) + body  # the cosignature line verifies as part of the note
    verifier = parse_verifier_key(witness.vkey)
    opened = open_note(note, [verifier])
    assert [s.name for s in opened.verified] == [witness.name]


def test_add_checkpoint_200_and_cosignature(witness: WitnessProcess,
                                            logs: dict[str, MemoryLog]) -> None:
    log = logs["status"]
    log.append(b"a", b"b", b"c")
    _cosigned(witness, log, witness.add_checkpoint(log.request(0, 2)), 2)
    _cosigned(witness, log, witness.add_checkpoint(log.request(2, 3)), 3)
    # The same checkpoint again (old == size, same root, empty proof) is cosigned again.
    _cosigned(witness, log, witness.add_checkpoint(log.request(3, 3)), 3)


def test_rejects_malformed_requests_with_400(witness: WitnessProcess,
                                             logs: dict[str, MemoryLog]) -> None:
    log = logs["status"]
    note = log.note(1)
    for body in (b"", b"old 01\n\n" + note, b"old -1\n\n" + note, b"nothing\n\n" + note,
                 b"old 0\nnot base64!\n\n" + note, b"old 0\n" + note,
                 b"old 0\n" + b"AAAA\n" + b"\n" + note,
                 ("old 0\n" + "".join(base64.b64encode(bytes(32)).decode() + "\n"
                                      for _ in range(64)) + "\n").encode() + note):
        _problem(witness.add_checkpoint(body), 400, "bad-request")


def test_old_size_larger_than_checkpoint_is_400(witness: WitnessProcess,
                                                logs: dict[str, MemoryLog]) -> None:
    log = logs["second"]
    log.append(b"x", b"y")
    _problem(witness.add_checkpoint(log.request(2, 1, proof=[])), 400, "bad-request")


def test_unknown_origin_is_404(witness: WitnessProcess) -> None:
    stranger = MemoryLog(origin="log.test/unknown")
    stranger.append(b"x")
    _problem(witness.add_checkpoint(stranger.request(0, 1)), 404, "unknown-log")


def test_untrusted_or_bad_signature_is_403(witness: WitnessProcess,
                                           logs: dict[str, MemoryLog]) -> None:
    log = logs["second"]
    impostor = Ed25519Signer.generate(log.origin)  # right origin, another key
    text = Checkpoint(origin=log.origin, size=1, root=log.root(1)).text()
    forged = sign_note(text, [impostor])
    _problem(witness.add_checkpoint(log.request(0, 1, note=forged)), 403, "invalid-signature")
    good = log.note(1)
    sig_start = good.rindex(b"\n\n") + 2
    line = good[sig_start:].decode()
    raw = bytearray(base64.b64decode(line.rsplit(" ", 1)[1]))
    raw[-1] ^= 1
    bad = good[:sig_start] + (line.rsplit(" ", 1)[0] + " " +
                              base64.b64encode(bytes(raw)).decode() + "\n").encode()
    _problem(witness.add_checkpoint(log.request(0, 1, note=bad)), 403, "invalid-signature")


def test_old_size_mismatch_is_409_with_stored_size(witness: WitnessProcess,
                                                   logs: dict[str, MemoryLog]) -> None:
    log = logs["conflict"]
    log.append(*[bytes([i]) for i in range(6)])
    assert witness.add_checkpoint(log.request(0, 3))[0] == 200
    for old in (0, 1, 2):
        code, ctype, body = witness.add_checkpoint(log.request(old, 5))
        assert (code, ctype, body) == (409, "text/x.tlog.size", b"3\n")
    assert witness.add_checkpoint(log.request(3, 5))[0] == 200


def test_inconsistent_checkpoints_are_422(witness: WitnessProcess,
                                          logs: dict[str, MemoryLog]) -> None:
    log = logs["proofs"]
    log.append(*[bytes([i]) for i in range(8)])
    # A non-empty proof from size 0 is refused, then the empty one is accepted.
    _problem(witness.add_checkpoint(log.request(0, 2, proof=[bytes(32)])), 422,
             "inconsistent-checkpoint")
    assert witness.add_checkpoint(log.request(0, 3))[0] == 200
    # A proof that does not verify, and a missing proof.
    wrong = [bytes(32)] * len(log.proof(3, 6))
    _problem(witness.add_checkpoint(log.request(3, 6, proof=wrong)), 422,
             "inconsistent-checkpoint")
    _problem(witness.add_checkpoint(log.request(3, 6, proof=[])), 422,
             "inconsistent-checkpoint")
    # Equal sizes, another root (a fork at the size it cosigned).
    other = log.note(3, root=bytes(32))
    _problem(witness.add_checkpoint(log.request(3, 3, note=other)), 422,
             "inconsistent-checkpoint")
    # A branch that does not extend what it cosigned: a valid-looking proof of another tree.
    fork = MemoryLog(origin=log.origin)
    fork.signer = log.signer
    fork.append(*[bytes([i]) for i in range(2)], b"forged", *[bytes([i]) for i in range(3, 6)])
    _problem(witness.add_checkpoint(fork.request(3, 6)), 422, "inconsistent-checkpoint")
    assert witness.add_checkpoint(log.request(3, 6))[0] == 200


def test_size_zero_with_wrong_root_is_422(witness: WitnessProcess,
                                          logs: dict[str, MemoryLog]) -> None:
    log = logs["zero"]
    text = f"{log.origin}\n0\n{base64.b64encode(bytes(32)).decode()}\n"
    note = sign_note(text, [log.signer])
    _problem(witness.add_checkpoint(b"old 0\n\n" + note), 422, "inconsistent-checkpoint")
    empty = sign_note(f"{log.origin}\n0\n{base64.b64encode(empty_root()).decode()}\n",
                      [log.signer])
    assert witness.add_checkpoint(b"old 0\n\n" + empty)[0] == 200


def test_other_methods_and_paths_are_problems(witness: WitnessProcess) -> None:
    _problem(post(witness.url + "/add-checkpoint", b"", method="GET"), 405,
             "method-not-allowed")
    _problem(post(witness.url + "/nothing", b"x"), 404, "not-found")
    _problem(witness.add_checkpoint(b"old 0\n\n" + b"x" * (70 * 1024)), 413,
             "request-too-large")


def test_restart_keeps_state(witness: WitnessProcess, logs: dict[str, MemoryLog]) -> None:
    log = logs["restart"]
    log.append(*[bytes([i]) for i in range(4)])
    assert witness.add_checkpoint(log.request(0, 3))[0] == 200
    witness.stop()
    witness.start()
    code, _, body = witness.add_checkpoint(log.request(0, 4))
    assert (code, body) == (409, b"3\n")
    assert witness.add_checkpoint(log.request(3, 4))[0] == 200
    row = sqlite3.connect(Path(witness.data_dir) / DATABASE_NAME).execute(
        "SELECT size, root FROM witness_state WHERE origin = ?", (log.origin,)).fetchone()
    assert row == ("4", log.root(4))


def test_concurrent_requests_for_one_origin_never_roll_back(
        witness: WitnessProcess, logs: dict[str, MemoryLog]) -> None:
    log = logs["concurrent"]
    log.append(*[bytes([i]) for i in range(40)])
    assert witness.add_checkpoint(log.request(0, 1))[0] == 200
    # Twenty requests from old 1 race: exactly one may win, the others see 409 with its size.
    bodies = [log.request(1, size) for size in range(2, 22)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(witness.add_checkpoint, bodies))
    winners = [size for size, (code, _, _) in zip(range(2, 22), answers, strict=True)
               if code == 200]
    assert len(winners) == 1, [a[0] for a in answers]
    assert {a[2] for a in answers if a[0] == 409} == {f"{winners[0]}\n".encode()}
    # Then a race of mixed extensions from the winner: the stored size only grows.
    bodies = [log.request(winners[0], size) for size in range(22, 41)]
    with ThreadPoolExecutor(max_workers=19) as pool:
        answers = list(pool.map(witness.add_checkpoint, bodies))
    won = [size for size, (code, _, _) in zip(range(22, 41), answers, strict=True)
           if code == 200]
    assert len(won) == 1
    code, _, body = witness.add_checkpoint(log.request(0, 40))
    assert (code, body) == (409, f"{won[0]}\n".encode())
