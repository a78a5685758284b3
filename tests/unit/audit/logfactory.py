"""Builds real, signed synthetic audit logs for the verifier tests (fast: one key per actor).

Requests use the server's real routes (``exchange.audit.actions``): the
verifier checks that each signed request is one that logs its entry.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field

from nacl.signing import SigningKey

from exchange.audit.builder import LogBuilder
from exchange.audit.checkpoint import Checkpoint, sign_checkpoint
from exchange.audit.entry import RequestEvidence
from exchange.audit.note import Ed25519Signer
from exchange.audit.tree import MerkleTree, leaf_hash
from exchange.wire.httpsig import signature_base

ORIGIN = "exchange.example/audit"
SERVER = "https://x.example"


def _seed(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


@dataclass
class Actor:
    pid: str
    key: SigningKey

    @property
    def fingerprint(self) -> str:
        return "fp:" + hashlib.sha256(bytes(self.key.verify_key)).hexdigest()[:16]

    def request(self, method: str, path: str, nonce: str, created: int = 1_700_000_000,
                key: SigningKey | None = None) -> RequestEvidence:
        """Return the evidence of a signed request; ``path`` may be a whole URI."""
        uri = path if "://" in path else SERVER + path
        covered = (('"@method"', method), ('"@target-uri"', uri))
        params = (f'("@method" "@target-uri");created={created};keyid="{self.pid}";'
                  f'nonce="{nonce}"')
        sig = (key or self.key).sign(signature_base(covered, params)).signature
        return RequestEvidence(
            signature_input=f"sig1={params}",
            signature=f"sig1=:{base64.b64encode(sig).decode()}:",
            covered=covered,
        )


@dataclass
class SyntheticLog:
    log_signer: Ed25519Signer
    entries: list[bytes] = field(default_factory=list)
    builder: LogBuilder = field(default_factory=LogBuilder)

    @property
    def vkey(self) -> str:
        return self.log_signer.verifier().vkey()

    def checkpoint(self, size: int | None = None) -> bytes:
        """Sign a checkpoint over the first ``size`` entries (default: all)."""
        tree = MerkleTree()
        count = len(self.entries) if size is None else size
        tree.extend(leaf_hash(e) for e in self.entries[:count])
        return sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), self.log_signer)


def _time(i: int) -> str:
    return f"2025-01-01T00:{(i // 60) % 60:02d}:{i % 60:02d}.{i % 1_000_000:06d}Z"


def enrol_details(actor: Actor) -> dict[str, str | int | bool | None]:
    return {
        "participant": actor.pid,
        "signing_key": base64.b64encode(bytes(actor.key.verify_key)).decode(),
        "age_recipient": "age1" + "q" * 58,
        "fingerprint": actor.fingerprint,
    }


def build_log(count: int, *, actors: int = 3) -> tuple[SyntheticLog, list[Actor]]:
    """Return a log of ``count`` entries: log.init, admin enrol, enrolments, then accesses."""
    log = SyntheticLog(Ed25519Signer(ORIGIN, _seed("log")))
    admin = Actor("admin", SigningKey(_seed("admin")))
    people = [Actor(f"p{n}", SigningKey(_seed(f"p{n}"))) for n in range(actors)]

    def add(**kw: object) -> None:
        _, data, _ = log.builder.append(time=_time(log.builder.size), **kw)  # type: ignore[arg-type]
        log.entries.append(data)

    add(actor="-", actor_key="", action="log.init",
        details={"origin": ORIGIN, "log_key": log.vkey})
    add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
        details=enrol_details(admin))
    for person in people:
        add(actor="admin", actor_key=admin.fingerprint, action="participant.enrol",
            request=admin.request("POST", "/v1/participants", f"n-enrol-{person.pid}"),
            details=enrol_details(person))
    n = 0
    while log.builder.size < count:
        person = people[n % len(people)]
        i = log.builder.size
        if n % 17 == 5:
            add(actor=person.pid, actor_key=person.fingerprint, action="evidence.download",
                case="c1", object=f"f{i}", outcome="denied", reason="not a member",
                request=person.request("GET", f"/v1/evidence/f{i}/content", f"n{i}"))
        else:
            add(actor=person.pid, actor_key=person.fingerprint, action="evidence.download",
                case="c1", object=f"f{i}",
                request=person.request("GET", f"/v1/evidence/f{i}/content", f"n{i}"),
                details={"size": i * 10, "sha256": hashlib.sha256(b"%d" % i).hexdigest()})
        n += 1
    return log, [admin, *people]
