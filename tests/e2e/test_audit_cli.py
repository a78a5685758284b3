"""``exchange audit verify|report|receipt|check`` as an auditor runs them, against a real server.

Every test drives the CLI in process (``exchange.cli.main.main``) with the
configuration in ``EXCHANGE_*`` variables, against ``exchange serve`` on
loopback (``tests.server_harness``). Tampering is done where an attacker
with the server's disk would do it: straight in the SQLite database.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from exchange.audit.note import Ed25519Signer
from exchange.audit.receipt import parse_receipt
from exchange.crypto.anchor import TrustAnchor
from exchange.storage.sqlite_store import DATABASE_NAME
from exchange.transport.client import SignedSession
from exchange.transport.problems import AUDIT_INDEX_HEADER
from tests import statements
from tests.server_harness import (
    Deployment,
    ServerProcess,
    deployed,
    json_of,
    run,
    write_test_keystore,
)
from tests.support import run_cli

PASSPHRASE = "auditor passphrase for tests"
HOSTILE_ID = "<img src=x onerror=alert(1)>"


@dataclass
class Result:
    code: int
    out: str
    err: str


@dataclass
class Auditor:
    """A deployment, the auditor's keystore, and the environment the CLI reads."""

    deployment: Deployment
    base: Path
    env: dict[str, str]

    def cli(self, *argv: str, **extra_env: str) -> Result:
        """Run ``exchange ARGV`` in process with this auditor's environment."""
        return Result(*run_cli(argv, {**self.env, **extra_env}))

    def verify(self, state: Path, *extra: str) -> tuple[Result, dict[str, object]]:
        result = self.cli("audit", "verify", "--state", str(state), "--json", *extra)
        return result, json.loads(result.out)


def make_auditor(deployment: Deployment, base: Path) -> Auditor:
    keystore = base / "auditor.keystore"
    write_test_keystore(keystore, deployment.cast["auditor"], PASSPHRASE)
    env = {
        "EXCHANGE_URL": deployment.url,
        "EXCHANGE_KEYSTORE": str(keystore),
        "EXCHANGE_PASSPHRASE": PASSPHRASE,
        "EXCHANGE_TRUST": str(deployment.trust_file),
        "EXCHANGE_STATE_DIR": str(base / "client-state"),
        "XDG_CONFIG_HOME": str(base / "config"),
        "EXCHANGE_TEST_WEAK_KDF": "1",  # test keystores use cheap Argon2 parameters
    }
    return Auditor(deployment, base, env)


@contextlib.contextmanager
def auditor_on_fresh_server(base: Path) -> Iterator[Auditor]:
    with deployed(base, "sqlite") as deployment:
        yield make_auditor(deployment, base)


def index_of(response_headers: object) -> int:
    return int(response_headers[AUDIT_INDEX_HEADER])  # type: ignore[index]


async def create_case(deployment: Deployment) -> tuple[str, int]:
    """Create a case as the prosecutor; return its id and the audit index of ``case.create``."""
    async with deployment.session("prosecutor") as session:
        answer, case_id, _ = await statements.create_case(session, deployment.anchor)
        assert answer.status == 201, answer.body
        assert answer.audit_index is not None
        return case_id, answer.audit_index


async def refused_attempts(deployment: Deployment, case_id: str) -> dict[str, int]:
    """Make three logged refusals (not a member, wrong role, a hostile id); return their indexes.

    A fourth attempt with an unknown key id is refused without an entry: its
    signature cannot verify, so it is nobody's access.
    """
    out = {}
    async with deployment.session("coordinator") as session:
        response = await session.request("GET", f"/v1/cases/{case_id}")
        await json_of(response)
        assert response.status in (403, 404)
        out["not_member"] = index_of(response.headers)
    async with deployment.session("prosecutor") as session:
        response = await session.request("GET", "/v1/audit/tile/entries/000.p/1")
        await json_of(response)
        assert response.status == 403
        out["wrong_role"] = index_of(response.headers)
    async with deployment.session("coordinator2") as session:
        response = await session.request("GET", "/v1/participants/" + quote(HOSTILE_ID, safe=""))
        await json_of(response)
        assert response.status == 404
        out["hostile_id"] = index_of(response.headers)
    hostile = SignedSession(deployment.url, deployment.cast["coordinator2"])
    hostile.keyid = HOSTILE_ID  # claims a key id the server does not know
    async with hostile:
        response = await hostile.request("GET", "/v1/cases")
        await json_of(response)
        assert response.status == 401
        assert AUDIT_INDEX_HEADER not in response.headers
    return out


async def ping(deployment: Deployment, count: int = 1) -> None:
    """Append ``count`` ok entries (the administrator lists participants)."""
    async with deployment.session("admin") as session:
        for _ in range(count):
            await json_of(await session.request("GET", "/v1/participants"))


async def log_size(deployment: Deployment) -> int:
    async with deployment.session("admin") as session:
        response = await session.request("GET", "/v1/audit/checkpoint")
        async with response:
            return int((await response.read()).split(b"\n")[1])


@dataclass
class Story:
    auditor: Auditor
    case_id: str
    create_index: int
    refused: dict[str, int]


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    """One server with a case, three logged refusals (one with a hostile id)."""
    base = tmp_path_factory.mktemp("audit-cli")
    with auditor_on_fresh_server(base) as auditor:
        case_id, create_index = run(create_case(auditor.deployment))
        refused = run(refused_attempts(auditor.deployment, case_id))
        yield Story(auditor, case_id, create_index, refused)


# -- verify --------------------------------------------------------------------------------


def test_verify_passes_on_a_genuine_log_then_fetches_only_what_is_new(
    story: Story, tmp_path: Path
) -> None:
    auditor, state = story.auditor, tmp_path / "mirror"
    first, summary = auditor.verify(state)
    assert first.code == 0, first.err
    assert summary["ok"] is True and summary["findings"] == []
    checkpoint = summary["checkpoint"]
    assert isinstance(checkpoint, dict)
    size = checkpoint["size"]
    assert summary["entries"] == size and summary["remembered"] is None
    # The mirror is a C2SP tlog-tiles tree: checkpoint, hash tiles, entry bundles.
    assert (state / "checkpoint").read_bytes().startswith(b"exchange.test/log\n")
    assert (state / f"tile/0/000.p/{size}").stat().st_size == 32 * size
    assert (state / f"tile/entries/000.p/{size}").is_file()
    assert not (state / ".staging").exists()

    run(ping(auditor.deployment, 3))
    second, summary2 = auditor.verify(state)
    assert second.code == 0, second.err
    assert summary2["remembered"] == checkpoint
    new_size = summary2["checkpoint"]["size"]  # type: ignore[index]
    assert new_size > size
    # Only the grown partial tile and bundle were fetched, and the old partials are gone.
    assert summary2["fetched"]["files"] == 2  # type: ignore[index]
    assert not (state / f"tile/0/000.p/{size}").exists()
    assert (state / f"tile/entries/000.p/{new_size}").is_file()

    full, summary3 = auditor.verify(state, "--full")
    assert full.code == 0 and summary3["remembered"] == summary2["checkpoint"]
    assert summary3["entries"] == summary3["checkpoint"]["size"]  # type: ignore[index]

    text = auditor.cli("audit", "verify", "--state", str(state))
    assert text.code == 0, text.err
    assert text.out.rstrip().endswith("no errors were found")
    for stage in ("fetch the latest checkpoint", "check consistency with the remembered",
                  "mirror tiles and entry bundles", "verify", "check hash tiles"):
        assert stage in text.err


def test_verify_needs_the_log_key_and_the_auditor_role(story: Story, tmp_path: Path) -> None:
    auditor = story.auditor
    missing = auditor.cli("audit", "verify", "--state", str(tmp_path / "a"),
                          EXCHANGE_TRUST="")
    assert missing.code == 4
    assert "no verifier key for the audit log" in missing.err
    assert "EXCHANGE_TRUST" in missing.err
    keystore = tmp_path / "prosecutor.keystore"
    write_test_keystore(keystore, auditor.deployment.cast["prosecutor"], PASSPHRASE)
    refused = auditor.cli("audit", "verify", "--state", str(tmp_path / "b"),
                          EXCHANGE_KEYSTORE=str(keystore))
    assert refused.code == 4
    assert "needs the role auditor" in refused.err


def test_verify_replays_statements_from_the_trust_anchor(story: Story, tmp_path: Path) -> None:
    auditor, deployment = story.auditor, story.auditor.deployment
    anchor = deployment.anchor
    # Without an anchor (a bare log key): verified as before, with a warning that the
    # statements were not replayed.
    bare = auditor.cli("audit", "verify", "--state", str(tmp_path / "bare"), "--log-key",
                       deployment.log_vkey, EXCHANGE_TRUST="")
    assert bare.code == 0 and "no trust anchor was given" in bare.err
    assert "--trust FILE" in bare.err
    # With the pinned anchor: every statement replays, every actor was entitled.
    result = auditor.cli("audit", "verify", "--state", str(tmp_path / "m"), "--json")
    summary = json.loads(result.out)
    assert result.code == 0, result.out + result.err
    assert summary["anchor"] == anchor.fingerprint and summary["warnings"] == []
    assert summary["findings"] == []
    # An anchor of another log, or no anchor at all in the file, is refused.
    other = TrustAnchor(origin="elsewhere.example/log",  # same administrators
                        log_key=Ed25519Signer("elsewhere.example/log", bytes(32)).verifier().vkey(),
                        admins=anchor.admins)
    wrong = tmp_path / "other.json"
    wrong.write_bytes(other.encode())
    result = auditor.cli("audit", "verify", "--state", str(tmp_path / "w"), "--trust",
                         str(wrong))
    assert result.code in (3, 4) and "log key" in result.err, result.err
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{}")
    refused = auditor.cli("audit", "verify", "--state", str(tmp_path / "g"), "--trust",
                          str(garbage))
    assert refused.code == 4 and "is not a trust anchor" in refused.err


def alter_entry(deployment: Deployment, index: int) -> None:
    """Rewrite entry ``index`` in the database: same shape, another time (canonical JSON)."""
    with contextlib.closing(sqlite3.connect(deployment.data_dir / DATABASE_NAME)) as db:
        (entry,) = db.execute("SELECT entry FROM audit_entries WHERE idx = ?",
                              (index,)).fetchone()
        altered = re.sub(rb'"time":"\d{4}-', b'"time":"1999-', entry, count=1)
        assert altered != entry and len(altered) == len(entry)
        db.execute("UPDATE audit_entries SET entry = ? WHERE idx = ?", (altered, index))
        db.commit()


def test_entry_altered_in_the_database_is_named(tmp_path: Path) -> None:
    with auditor_on_fresh_server(tmp_path) as auditor:
        _, index = run(create_case(auditor.deployment))
        run(ping(auditor.deployment, 2))
        earlier = tmp_path / "earlier"
        assert auditor.verify(earlier)[0].code == 0
        remembered = (earlier / "checkpoint").read_bytes()

        alter_entry(auditor.deployment, index)
        run(ping(auditor.deployment))  # the log moves on (mirroring itself adds no entry)

        results = {}
        for state in (earlier, tmp_path / "fresh"):
            result = auditor.cli("audit", "verify", "--state", str(state))
            assert result.code == 3, result.out + result.err
            assert f"entry {index}: tile/0/000" in result.out  # leaf hash not in the tree
            assert f"entry {index + 1}: prev: " in result.out  # the chain breaks after it
            assert "failed verification" in result.err and "evidence saved" in result.err
            assert "no errors were found" not in result.out
            results[state.name] = result
        # The incremental mirror also saw the server serve other bytes for a verified entry.
        assert f"entry {index}: entry: the server now serves other bytes" in \
            results["earlier"].out
        # Nothing from the failed runs was remembered; the evidence is on disk.
        assert (earlier / "checkpoint").read_bytes() == remembered
        (evidence,) = (earlier / "evidence").iterdir()
        findings = json.loads((evidence / "findings.json").read_text())
        assert any(f["index"] == index for f in findings)
        assert (evidence / "checkpoint.latest").is_file()
        assert (evidence / "served").is_dir()
        _, summary = auditor.verify(tmp_path / "json")
        assert summary["ok"] is False
        assert any(f["index"] == index and f["field"].startswith("tile/0/")
                   for f in summary["findings"])  # type: ignore[union-attr]


def test_rollback_and_fork_are_detected_via_the_remembered_checkpoint(tmp_path: Path) -> None:
    with auditor_on_fresh_server(tmp_path) as auditor:
        deployment = auditor.deployment
        run(ping(deployment, 2))
        snapshot = tmp_path / "snapshot.db"
        with contextlib.closing(sqlite3.connect(deployment.data_dir / DATABASE_NAME)) as src, \
                contextlib.closing(sqlite3.connect(snapshot)) as dst:
            src.backup(dst)
        run(ping(deployment, 6))
        state = tmp_path / "mirror"
        result, summary = auditor.verify(state)
        assert result.code == 0, result.err
        remembered = summary["checkpoint"]["size"]  # type: ignore[index]

        # The operator restores the old database: the log is smaller than one already signed.
        # (The server's own rollback guard refuses that; an operator can override it, and a
        # hostile one can remove it: clients must notice by themselves.)
        deployment.processes[0].stop()
        db = deployment.data_dir / DATABASE_NAME
        for suffix in ("-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        db.write_bytes(snapshot.read_bytes())
        deployment.processes[0] = ServerProcess(deployment.data_dir,
                                                extra_args=["--accept-rollback"])
        auditor.env["EXCHANGE_URL"] = deployment.url
        rolled, summary = auditor.verify(state)
        assert rolled.code == 3
        assert any(f["field"] == "checkpoint.size" and "rolled back" in f["message"]
                   for f in summary["findings"])  # type: ignore[union-attr]
        evidence = Path(str(summary["evidence"]))
        assert (evidence / "checkpoint.remembered").read_bytes() == \
            (state / "checkpoint").read_bytes()
        assert (evidence / "checkpoint.latest").is_file()

        # ...then appends different entries past the remembered size: a fork.
        while run(log_size(deployment)) <= remembered + 1:
            run(ping(deployment, 4))
        forked = auditor.cli("audit", "verify", "--state", str(state))
        assert forked.code == 3
        assert "log: checkpoint.consistency: the log forked" in forked.out
        assert "does not extend the one verified before" in forked.err
        evidence = Path(re.search(r"evidence saved in '([^']+)'", forked.err).group(1))  # type: ignore[union-attr]
        proof = json.loads((evidence / "consistency-proof.json").read_text())
        assert proof["old"] == remembered and proof["hashes"]
        assert (evidence / "checkpoint.remembered").is_file()
        assert (evidence / "checkpoint.latest").is_file()


# -- report --------------------------------------------------------------------------------


def test_report_table_json_and_html(story: Story, tmp_path: Path) -> None:
    auditor, state = story.auditor, tmp_path / "mirror"
    none_yet = auditor.cli("audit", "report", "--state", str(state))
    assert none_yet.code == 1 and "run 'exchange audit verify' first" in none_yet.err

    human = auditor.cli("audit", "report", "--state", str(state), "--update")
    assert human.code == 0, human.err
    human_lines = human.out.splitlines()
    assert human_lines[0].split() == ["entry", "time", "who", "did", "what", "outcome"]
    assert all(len(line) <= 100 for line in human_lines), max(human_lines, key=len)
    assert any(line.startswith(f"#{story.create_index} ") and "created the case" in line
               and "prosecutor (prosecu" in line for line in human_lines), human.out
    assert any("enrolled a participant (x" in line for line in human_lines), human.out
    assert not any("case.create" in line for line in human_lines)
    refusals = auditor.cli("audit", "report", "--state", str(state), "--outcome", "denied",
                           "--action", "audit")
    assert refusals.code == 0 and len(refusals.out.splitlines()) >= 2
    assert all(line.endswith(" (UTC)") or re.search(r"read the audit log.*: forbidd.* +REFUSED$",
                                                    line) for line in
               refusals.out.splitlines()[1:]), refusals.out
    mine = json.loads(auditor.cli("audit", "report", "--state", str(state), "--json",
                                  "--actor", "prosecutor").out)
    assert mine["schema"] == 1 and {row["actor"] for row in mine["entries"]} == {"prosecutor"}

    table = auditor.cli("audit", "report", "--state", str(state), "--raw")
    assert table.code == 0, table.err
    header, *lines = table.out.splitlines()
    assert header.split() == ["index", "time", "actor", "action", "case", "object",
                              "outcome", "reason"]
    create = next(line for line in lines if line.startswith(f"{story.create_index} "))
    assert "prosecutor (prosecutor)" in create and "case.create" in create
    assert story.case_id in create and " ok" in create
    refused = [line for line in lines if " denied " in line]
    assert len(refused) >= 3
    assert any("forbidden" in line and "audit.read" in line for line in refused)

    as_json = json.loads(auditor.cli("audit", "report", "--state", str(state), "--json").out)
    by_index = {row["index"]: row for row in as_json["entries"]}
    for index in story.refused.values():
        assert by_index[index]["outcome"] == "denied" and by_index[index]["reason"]
    assert by_index[story.refused["hostile_id"]]["object"] == HOSTILE_ID
    assert as_json["checkpoint"]["log_key"] == auditor.deployment.log_vkey
    assert as_json["refused"] >= 3

    only_case = json.loads(auditor.cli("audit", "report", "--state", str(state), "--json",
                                       "--case", story.case_id).out)
    assert {row["case"] for row in only_case["entries"]} == {story.case_id}
    assert {row["index"] for row in only_case["entries"]} >= {story.create_index,
                                                             story.refused["not_member"]}
    future = json.loads(auditor.cli("audit", "report", "--state", str(state), "--json",
                                    "--since", "2999-01-01").out)
    assert future["entries"] == []
    past = json.loads(auditor.cli("audit", "report", "--state", str(state), "--json",
                                  "--until", "2000-01-01T00:00:00Z").out)
    assert past["entries"] == []
    bad = auditor.cli("audit", "report", "--state", str(state), "--since", "yesterday")
    assert bad.code == 2 and "ISO 8601" in bad.err

    page_path = tmp_path / "report.html"
    written = auditor.cli("audit", "report", "--state", str(state), "--html", str(page_path))
    assert written.code == 0, written.err
    page = page_path.read_text(encoding="utf-8")
    assert "<img" not in page.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in page
    assert f"<h2>Case {story.case_id}</h2>" in page
    assert "refused: forbidden" in page
    size = as_json["checkpoint"]["size"]
    assert f"<dd>{size}</dd>" in page and as_json["checkpoint"]["root"] in page
    assert auditor.deployment.log_vkey in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)  # self-contained


def test_report_refuses_a_tampered_mirror(story: Story, tmp_path: Path) -> None:
    auditor, state = story.auditor, tmp_path / "mirror"
    assert auditor.cli("audit", "verify", "--state", str(state)).code == 0
    (bundle,) = (state / "tile/entries/000.p").iterdir()
    data = bundle.read_bytes()
    bundle.write_bytes(data.replace(b'"outcome":"denied"', b'"outcome":"DENIED"', 1))
    result = auditor.cli("audit", "report", "--state", str(state))
    assert result.code == 3
    assert "does not verify" in result.err and "--full" in result.err


# -- receipts ------------------------------------------------------------------------------


def test_receipt_verifies_offline_and_tampering_fails(story: Story, tmp_path: Path) -> None:
    auditor = story.auditor
    receipt = tmp_path / "entry.receipt"
    fetched = auditor.cli("audit", "receipt", str(story.create_index), "-o", str(receipt),
                          "--state", str(tmp_path / "no-mirror"))
    assert fetched.code == 0, fetched.err
    assert "exchange audit check" in fetched.err
    data = receipt.read_bytes()
    assert data.startswith(b"c2sp.org/tlog-proof@v1\nextra ")
    parsed = parse_receipt(data)
    assert parsed.index == story.create_index and parsed.extra is not None

    vkey = auditor.deployment.log_vkey
    offline = {"EXCHANGE_URL": "", "EXCHANGE_KEYSTORE": "", "EXCHANGE_LOG_KEY": "",
               "EXCHANGE_TRUST": ""}
    checked = auditor.cli("audit", "check", str(receipt), "--log-key", vkey, **offline)
    assert checked.code == 0, checked.err
    assert f"receipt verified: entry {story.create_index} is in the log" in checked.out
    assert "participant 'prosecutor'" in checked.out and "'case.create'" in checked.out
    assert story.case_id in checked.out and "carried it out" in checked.out

    refusal = tmp_path / "refusal.receipt"
    assert auditor.cli("audit", "receipt", str(story.refused["hostile_id"]), "-o",
                       str(refusal)).code == 0
    said = auditor.cli("audit", "check", str(refusal), "--log-key", vkey, "--json", **offline)
    entry = json.loads(said.out)["entry"]
    assert entry["outcome"] == "denied" and entry["object"] == HOSTILE_ID
    words = auditor.cli("audit", "check", str(refusal), "--log-key", vkey, **offline).out
    assert "the server refused it" in words

    head, _, rest = data.partition(b"\nindex ")
    entry_bytes = base64.b64decode(head.split(b"extra ", 1)[1])
    forged = entry_bytes.replace(story.case_id.encode(), b"case-" + b"x" * 8)
    tampered = tmp_path / "tampered.receipt"
    tampered.write_bytes(b"c2sp.org/tlog-proof@v1\nextra " + base64.b64encode(forged)
                         + b"\nindex " + rest)
    failed = auditor.cli("audit", "check", str(tampered), "--log-key", vkey, **offline)
    assert failed.code == 3
    assert f"entry {story.create_index} is not proven" in failed.err

    other_root = tmp_path / "other-root.receipt"
    lines = data.split(b"\n")
    root_line = next(i for i, line in enumerate(lines) if line == b"") + 3
    lines[root_line] = base64.b64encode(bytes(32))
    other_root.write_bytes(b"\n".join(lines))
    assert auditor.cli("audit", "check", str(other_root), "--log-key", vkey,
                       **offline).code == 3

    bare = tmp_path / "bare.receipt"
    bare.write_bytes(data.replace(head.split(b"\n")[1] + b"\n", b"", 1))
    no_entry = auditor.cli("audit", "check", str(bare), "--log-key", vkey, **offline)
    assert no_entry.code == 3 and "carries no entry" in no_entry.err

    impostor = Ed25519Signer.generate("exchange.test/log").verifier().vkey()
    wrong_key = auditor.cli("audit", "check", str(receipt), "--log-key", impostor, **offline)
    assert wrong_key.code == 3 and "does not verify with log key" in wrong_key.err
