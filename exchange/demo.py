"""``exchange demo``: one case told end to end against a real local server (issue 6, item 3).

Theory of operation. :func:`run_demo` creates a server with ``exchange server
init`` on the embedded SQLite default and runs ``exchange serve`` as a
subprocess (``exchange.demo_server``), then drives the whole story through
the client library (``exchange.client``) with the committed demo identities
in ``exchange/demo_keys/`` (package data, so an installed wheel has them):
enrolment with a fingerprint check, a case with members, an encrypted upload,
a verified pull with its custody record, a member removal with key rotation,
the removed member's refused access, and the auditor's
verification, report and offline receipt. Every step prints one or two plain
lines; every claim printed is checked first, and a check that does not hold
raises :class:`DemoFailed` (the CLI exits non-zero). The server is stopped in
``finally``, also on Ctrl-C and errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from exchange.client import (
    Client,
    ServerRefused,
    UploadResult,
    add_member,
    create_case,
    enrol,
    list_evidence,
    pull,
    remove_member,
    upload_file,
)
from exchange.client.audit import ClientLogFetcher, verify_mirror
from exchange.client.audit_mirror import AuditMirror
from exchange.client.audit_receipt import check_receipt, describe_entry, fetch_receipt
from exchange.client.audit_report import ReportFilter, build_rows
from exchange.crypto.anchor import TrustAnchor, parse_anchor
from exchange.crypto.keys import ParticipantIdentity, bundle_possession, parse_bundle
from exchange.crypto.keystore import open_keystore
from exchange.demo_report import report_lines
from exchange.demo_server import LocalServer
from exchange.demo_witness import split_view_chapter
from exchange.errors import ExchangeError

__all__ = [
    "DEFAULT_KEYS_DIR",
    "DEMO_PASSPHRASE",
    "DemoFailed",
    "DemoResult",
    "DemoSetupError",
    "run_demo",
]

#: The demo keystores' passphrase; they are public test material (see demo_keys/README.md).
DEMO_PASSPHRASE = "demo-passphrase-not-secret"  # noqa: S105 (public demo material)
_PACKAGED_KEYS = importlib.resources.files("exchange") / "demo_keys"
#: The demo identities shipped inside the package (installed as plain files, so a path).
DEFAULT_KEYS_DIR = _PACKAGED_KEYS if isinstance(_PACKAGED_KEYS, Path) else Path(
    str(_PACKAGED_KEYS))
ORIGIN = "exchange-demo.invalid/log"
CASE_TITLE = "Operation Harbour Lights"
#: A few MiB: dozens of 64 KiB age chunks and a short last one; uploads in well under a second.
EVIDENCE_BYTES = 3 * 1024 * 1024 + 12345
ADMIN = "admin-01"
NL, DE, CC, AUDITOR = "prosecutor-nl-01", "prosecutor-de-01", "coordinator-01", "auditor-01"
#: Who the administrator enrols: id, role, country.
ENROLMENTS = ((NL, "prosecutor", "NL"), (DE, "prosecutor", "DE"),
              (CC, "coordinator", "EU"), (AUDITOR, "auditor", "EU"))

class DemoFailed(ExchangeError):
    """A check of the demo did not hold: the software does not behave as it must."""

    problem_type = "demo-failed"


class DemoSetupError(ExchangeError):
    """The demo cannot start here (unreadable demo keys, a ``--keep`` folder in use)."""

    problem_type = "demo-setup"


@dataclass(slots=True)
class DemoResult:
    """What the finished demo leaves behind (for ``--keep`` and the closing lines)."""

    base: Path
    data_dir: Path
    log_key: str
    url: str = ""
    case_id: str = ""
    checks: int = 0
    refused_indexes: list[int] = field(default_factory=list)
    evidence_ids: set[str] = field(default_factory=set)
    receipt_path: Path | None = None
    warnings: list[str] = field(default_factory=list)


Say = Callable[[str], None]


class _Story:
    """The narrator and the checks: numbered steps, indented facts, counted checks."""

    def __init__(self, say: Say, result: DemoResult) -> None:
        self.say = say
        self.result = result
        self.number = 0

    def step(self, title: str) -> None:
        self.number += 1
        self.say("")
        self.say(f"{self.number:2}. {title}")

    def fact(self, text: str) -> None:
        self.say(f"    {text}")

    def check(self, holds: bool, failure: str) -> None:
        """Count a check; raise :class:`DemoFailed` saying what did not hold."""
        if not holds:
            raise DemoFailed(f"demo check failed: {failure}")
        self.result.checks += 1


def short(hex_digest: str) -> str:
    """Return a SHA-256 hex digest shortened for reading aloud (first 16 digits)."""
    return hex_digest[:16] + "…"


def mib(n: int) -> str:
    """Return a byte count as MiB with its exact value."""
    return f"{n / 1024 / 1024:.1f} MiB ({n:,} bytes)"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def open_demo_keystore(keys_dir: Path, participant_id: str) -> ParticipantIdentity:
    """Open ``keys_dir/<id>.keystore`` with the demo passphrase (Argon2id: ~0.6 s each)."""
    path = keys_dir / f"{participant_id}.keystore"
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DemoSetupError(f"cannot read demo keystore {str(path)!r}: "
                             f"{(err.strerror or 'error').lower()}") from None
    return open_keystore(data, DEMO_PASSPHRASE)


@contextmanager
def _workspace(keep: Path | None) -> Iterator[Path]:
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="exchange-demo-") as tmp:
            yield Path(tmp)
        return
    if keep.exists() and any(keep.iterdir()):
        raise DemoSetupError(f"{str(keep)!r} is not empty: the demo keeps its data only in a "
                             "new or empty directory")
    keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    yield keep.resolve()


def run_demo(keys_dir: Path = DEFAULT_KEYS_DIR, *, keep: Path | None = None,
             say: Say = print) -> DemoResult:
    """Run the whole story; return what it left behind. Raises on any failed check.

    ``keep`` is a new or empty directory that keeps the server's data and the
    participants' files afterwards; without it everything lives in a
    temporary directory removed at the end.
    """
    with _workspace(keep) as base:
        server = LocalServer(base / "server", origin=ORIGIN,
                             admin_bundle=keys_dir / f"{ADMIN}.bundle.json",
                             organisation="Registry (demo)", country="EU")
        result = DemoResult(base=base, data_dir=server.data_dir, log_key="")
        story = _Story(say, result)
        story.step("An administrator sets up a new exchange server on this machine")
        try:
            result.log_key = server.init()
            server.start()
            # Unlock the keystores while the server starts (Argon2id makes each take a while).
            people = {pid: open_demo_keystore(keys_dir, pid)
                      for pid in (ADMIN, NL, DE, CC, AUDITOR)}
            url = result.url = server.wait_ready()
            story.fact(f"server running at {url} (embedded SQLite database in "
                       f"{server.data_dir})")
            story.fact(f"the audit log's public key, which auditors pin: {result.log_key}")
            asyncio.run(_tell(story, server, url, people, keys_dir))
            split_view_chapter(story, server, people, nl=NL, de=DE, auditor=AUDITOR)
        finally:
            server.stop()
        story.step("Done: every check held")
        story.fact(f"{result.checks} checks passed; evidence stayed encrypted end to end, "
                   "every access was logged and the log verified, and a split view was refused")
        return result


def _clients(base: Path, url: str, anchor: TrustAnchor, people: dict[str, ParticipantIdentity],
             warnings: list[str]) -> dict[str, Client]:
    def warn(text: str) -> None:
        warnings.append(text)

    return {pid: Client(identity, url, anchor=anchor, state_dir=base / "clients" / pid / "state",
                        warn=warn)
            for pid, identity in people.items()}


async def _tell(story: _Story, server: LocalServer, url: str,
                people: dict[str, ParticipantIdentity], keys_dir: Path) -> None:
    result = story.result
    # Each participant pins the trust anchor the administrator handed out, after comparing
    # its fingerprint by phone (here: the same file, read from the server's data directory).
    anchor = parse_anchor((server.data_dir / "trust.json").read_bytes())
    story.fact(f"everyone pins the trust anchor (log key + administrators), fingerprint "
               f"{anchor.fingerprint[:19]}…, compared by phone")
    clients = _clients(result.base, url, anchor, people, result.warnings)
    try:
        await _enrol_everyone(story, clients[ADMIN], people, keys_dir)
        evidence_id = await _case_and_evidence(story, server, clients)
        await _removal(story, server, clients, evidence_id)
        await _audit(story, clients[AUDITOR])
    finally:
        for client in clients.values():
            await client.close()
    story.check(not result.warnings, f"client warnings: {result.warnings}")


async def _enrol_everyone(story: _Story, admin: Client, people: dict[str, ParticipantIdentity],
                          keys_dir: Path) -> None:
    story.step("The administrator enrols four participants, checking each fingerprint by phone")
    for pid, role, country in ENROLMENTS:
        # What the participant reads out ('exchange key show' on their own machine) ...
        spoken = people[pid].public_bundle().fingerprint
        # ... against the public bundle file they sent to the administrator.
        data = (keys_dir / f"{pid}.bundle.json").read_bytes()
        bundle = parse_bundle(data)
        story.check(bundle.fingerprint == spoken, f"{pid}: bundle fingerprint differs")
        enrolled = await enrol(admin, bundle, role, possession=bundle_possession(json.loads(data)),
                               organisation=bundle.display_name, country=country)
        story.check(enrolled.fingerprint == spoken and enrolled.logged,
                    f"{pid}: the server's keys are not the enrolled ones")
        story.fact(f"{pid:17} {role:12} {country}  fingerprint {spoken[:19]}…  "
                   f"matches, logged as entry #{enrolled.key_index}")


async def _case_and_evidence(story: _Story, server: LocalServer,
                             clients: dict[str, Client]) -> str:
    result = story.result
    nl, cc = clients[NL], clients[CC]
    story.step(f"The Dutch prosecutor opens the case {CASE_TITLE!r}")
    case = await create_case(nl, CASE_TITLE)
    result.case_id = case.case_id
    story.fact(f"case {case.case_id}: its key was made on her machine; the server holds only "
               "the encrypted title and key envelopes")

    story.step("She adds the German prosecutor and the coordination centre")
    for pid in (DE, CC):
        added = await add_member(nl, case.case_id, pid)
        story.check(isinstance(added.get("audit_index"), int), f"adding {pid} was not logged")
        story.fact(f"{pid}: keys checked against their enrolment in the log, case key "
                   f"wrapped for them (entry #{added['audit_index']})")

    story.step("She uploads a phone extraction; it is encrypted and signed before it leaves")
    source = result.base / "clients" / NL / "phone-extraction.bin"
    source.write_bytes(os.urandom(EVIDENCE_BYTES))
    original = _sha256_file(source)
    up = await upload_file(nl, case.case_id, source)
    result.evidence_ids.add(up.evidence_id)
    story.check(up.plaintext_sha256 == original, "the uploaded plaintext hash is not the file's")
    story.fact(f"{up.file_name}: {mib(up.plaintext_size)}, SHA-256 {short(original)}")
    story.fact(f"stored as evidence {up.evidence_id} under case key epoch {up.epoch}, "
               f"committed as entry #{up.audit_index}")
    blob = _stored_blob(server.data_dir, up.ciphertext_sha256)
    story.check(blob is not None and blob.read_bytes()[:22] == b"age-encryption.org/v1\n",
                "the server's stored copy is not an age file")
    story.fact("the server's copy is ciphertext only: a standard age file of "
               f"{up.ciphertext_size:,} bytes named after its hash {short(up.ciphertext_sha256)}")

    story.step("The coordination centre pulls it and checks everything before keeping it")
    listed = await list_evidence(cc, case.case_id)
    story.check([e.manifest.file_name for e in listed] == [up.file_name],
                "the coordination centre does not see the file's name")
    dest = result.base / "clients" / CC / "pulled"
    report = await pull(cc, [case.case_id], dest)
    story.check(not report.failed and len(report.pulled) == 1,
                f"pull failed: {[str(err) for _, err in report.failed]}")
    got = report.pulled[0]
    story.check(_sha256_file(got.path) == original, "the pulled file differs from the original")
    custody = json.loads(got.custody_path.read_text())
    receipts = [custody[part]["audit_index"] for part in ("upload", "download")
                if custody.get(part) and custody[part].get("receipt")]
    story.check(len(receipts) == 2, "the custody record lacks its two receipts")
    story.fact(f"verified: {', '.join(custody['verified'])}")
    story.fact(f"saved {got.path.relative_to(dest)}; custody record {got.custody_path.name} "
               f"holds receipts for entries #{receipts[0]} (upload) and #{receipts[1]} "
               "(download)")
    _age_cli(story, server, cc, up, original)
    return up.evidence_id


def _stored_blob(data_dir: Path, ciphertext_sha256: str) -> Path | None:
    """Return the server's blob file for a ciphertext hash (content-addressed), if present."""
    return next((data_dir / "blobs").rglob(ciphertext_sha256), None)


def _age_cli(story: _Story, server: LocalServer, cc: Client, up: UploadResult,
             original: str) -> None:
    """Decrypt the server's stored copy with the standard ``age`` tool, when installed."""
    age = shutil.which("age")
    if age is None:
        story.fact("(the standard 'age' tool is not installed: skipping the check that it "
                   "decrypts the server's copy)")
        return
    blob = _stored_blob(server.data_dir, up.ciphertext_sha256)
    key_file = story.result.base / "clients" / CC / "case-key.txt"
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(cc.case_keys[(up.case_id, up.epoch)].identity.to_string() + "\n")
    try:
        out = subprocess.run([age, "-d", "-i", str(key_file), str(blob)], capture_output=True,
                             check=False, timeout=60).stdout
    finally:
        key_file.unlink()
    story.check(hashlib.sha256(out).hexdigest() == original,
                "the standard age tool did not decrypt the server's copy to the original")
    story.fact(f"the standard age tool ({age}) decrypts the server's copy with the case "
               "key: readable for decades without this software")


async def _removal(story: _Story, server: LocalServer, clients: dict[str, Client],
                   evidence_id: str) -> None:
    result = story.result
    nl, de, case_id = clients[NL], clients[DE], result.case_id
    story.step("The German prosecutor leaves the case; the case key is rotated")
    before = await list_evidence(de, case_id)
    story.check(len(before) == 1, "the German prosecutor could not see the evidence before")
    removed = await remove_member(nl, case_id, DE)
    epoch = removed.get("epoch")
    story.check(isinstance(epoch, int) and epoch >= 2, f"no new epoch: {removed!r}")
    story.fact(f"removed (entry #{removed['audit_index']}); new case key epoch {epoch} made on "
               f"the Dutch prosecutor's machine and wrapped only for {NL} and {CC}")
    notes = result.base / "clients" / NL / "interview-notes.txt"
    notes.write_text("Interview with the harbour master, 14:05-14:50. Notes to follow.\n")
    later = await upload_file(nl, case_id, notes)
    result.evidence_ids.add(later.evidence_id)
    story.check(later.epoch == epoch, "new evidence was not encrypted to the new epoch")
    story.fact(f"new evidence ({later.file_name}) is encrypted to epoch {later.epoch}, which "
               "the German prosecutor never received")

    story.step("The removed prosecutor tries again and is refused")
    refusals = []
    attempts: tuple[tuple[str, Callable[[], Awaitable[object]]], ...] = (
        ("list the case's evidence", lambda: list_evidence(de, case_id)),
        ("open the phone extraction's record",
         lambda: de.call("GET", f"/v1/evidence/{evidence_id}")),
    )
    for doing, attempt in attempts:
        try:
            await attempt()
        except ServerRefused as err:
            story.check(err.status == 403 and err.audit_index is not None,
                        f"unexpected refusal {err.status} {err.slug}")
            refusals.append(err)
            story.fact(f"tried to {doing}: server answered {err.status} {err.slug}, "
                       f"refusal logged as entry #{err.audit_index}")
        else:
            raise DemoFailed(f"demo check failed: a removed member could {doing}")
    result.refused_indexes = [r.audit_index for r in refusals if r.audit_index is not None]
    logged = await _server_log_lines(server, status=403, at_least=len(refusals))
    story.check(len(logged) >= len(refusals), "the server's own log does not show the refusals")
    story.fact(f"the server's operational log shows them too ({len(logged)} requests "
               "answered 403)")


async def _server_log_lines(server: LocalServer, *, status: int, at_least: int,
                            timeout_s: float = 10.0) -> list[dict[str, object]]:
    """Return the server's request log records with ``status``, waiting for ``at_least``.

    The server writes a request's log line after the response has gone out, so
    it can reach us a moment after the client saw the answer.
    """
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        found = [r for r in server.log_records() if r.get("status") == status]
        if len(found) >= at_least or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def _audit(story: _Story, auditor: Client) -> None:
    result = story.result
    story.step("The auditor mirrors the audit log and verifies all of it")
    mirror = AuditMirror(result.base / "clients" / AUDITOR / "audit")
    fetcher = ClientLogFetcher(auditor)
    run = await verify_mirror(fetcher, mirror, result.log_key)
    story.check(run.ok and run.checkpoint is not None,
                f"the audit log failed verification: {[str(f) for f in run.findings][:3]}")
    assert run.checkpoint is not None
    story.check(bool(result.refused_indexes)
                and max(result.refused_indexes) < run.checkpoint.size,
                "the refusals are not in the verified log")
    story.fact(f"{run.entries} entries verified: checkpoint signature, Merkle tree, hash chain "
               "and every requester's own signature")

    story.step(f"The auditor's report for the case: who did what (tree size "
               f"{run.checkpoint.size})")
    rows = [row for row in build_rows(mirror.entries(run.checkpoint.size, committed=True),
                                      ReportFilter())
            if row.case == result.case_id or row.object in result.evidence_ids]
    refused = [row.index for row in rows if row.outcome != "ok" and row.actor == DE]
    story.check(refused == result.refused_indexes, f"the report shows refusals {refused}, "
                f"not {result.refused_indexes}")
    for line in report_lines(rows):
        story.fact(line)

    refused_index = result.refused_indexes[0]
    story.step(f"A receipt for the first refusal (entry #{refused_index}), checked offline")
    data, _ = await fetch_receipt(fetcher, refused_index, result.log_key, mirror=mirror)
    path = result.base / "clients" / AUDITOR / f"entry-{refused_index}.receipt"
    path.write_bytes(data)
    result.receipt_path = path
    checked = check_receipt(path.read_bytes(), result.log_key)  # no server involved
    story.check(checked.entry.outcome == "denied" and checked.entry.actor == DE,
                "the receipt does not prove the refusal")
    story.fact(f"{path.name}: proves entry #{checked.index} is in the log of size "
               f"{checked.checkpoint.size} signed by the pinned key; it says:")
    for line in describe_entry(checked.entry)[:2]:
        story.fact(f"  {line}")
