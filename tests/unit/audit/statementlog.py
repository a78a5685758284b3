"""Builds synthetic audit logs that carry signed statements, as the issue-10 server writes them.

A :class:`StatementLog` keeps a trust anchor (one administrator), the real
log (``logfactory.SyntheticLog``) and a shadow :class:`TrustState` that
plays the honest clients: it gives each new statement the next ``seq`` and
``prev`` of its chain, and the member fingerprints to name. Each helper
appends the entry the server would log (request signed by the actor on the
route of ``exchange.audit.actions``, details as in CONTRACT-10) and returns
its index; keyword overrides let a test forge exactly one thing.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey

from exchange.audit._statements import encode_statement
from exchange.audit.entry import DetailValue
from exchange.audit.note import Ed25519Signer
from exchange.audit.verify import VerifyReport, verify_log
from exchange.crypto.anchor import AnchorAdmin, TrustAnchor
from exchange.crypto.chains import TrustState
from exchange.crypto.keys import ParticipantIdentity, PublicBundle, possession_message
from exchange.crypto.recipients.x25519 import X25519Identity
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    Statement,
    StatementError,
    case_chain,
    sign_statement,
)
from tests.unit.audit.logfactory import ORIGIN, Actor, SyntheticLog, _seed

STAMP = "2025-01-01T00:00:00.000000Z"
ISSUED = "2025-01-01T00:00:00Z"


def route_for(kind: str, *, case: str | None = None, participant: str | None = None) -> str:
    """The server route that logs a statement of ``kind`` (one route per type)."""
    return {
        "participant.enrol": "/v1/participants",
        "participant.key_change": f"/v1/participants/{participant}/keys",
        "participant.suspend": f"/v1/participants/{participant}/suspend",
        "participant.reinstate": f"/v1/participants/{participant}/reinstate",
        "participant.role": f"/v1/participants/{participant}/role",
        "admin.set": "/v1/directory/admins", "server.url": "/v1/directory/server-url",
        "case.create": "/v1/cases", "case.member_add": f"/v1/cases/{case}/members",
        "case.member_remove": f"/v1/cases/{case}/members/{participant}/remove",
        "case.epoch_rotate": f"/v1/cases/{case}/epochs",
        "case.envelope_add": f"/v1/cases/{case}/envelopes",
        "case.policy": f"/v1/cases/{case}/policy",
    }[kind]


def _possession(who: Person, signers: Sequence[Person | tuple[str, SigningKey]] | None,
                issuer: Person) -> str:
    """The new keys' proof of possession, or (when the caller's signers leave the new key
    out) a signature by the issuer's key in its place, which does not prove possession."""
    if signers is None or who in signers:
        proof = who.identity.possession_proof()
    else:
        proof = issuer.identity.signing_key.sign(possession_message(who.bundle)).signature
    return base64.b64encode(proof).decode("ascii")


@dataclass
class Person:
    """A participant with real keys (deterministic from ``label``) and a global role."""

    identity: ParticipantIdentity
    role: str

    @property
    def pid(self) -> str:
        return self.identity.id

    @property
    def bundle(self) -> PublicBundle:
        return self.identity.public_bundle()

    @property
    def key(self) -> SigningKey:
        return self.identity.signing_key

    @property
    def actor(self) -> Actor:
        return Actor(self.pid, self.key)


def person(pid: str, role: str, label: str | None = None) -> Person:
    """Return a participant whose keys derive from ``label`` (default: its id)."""
    label = label or pid
    identity = ParticipantIdentity(
        id=pid, display_name=pid, signing_key=SigningKey(_seed("sig-" + label)),
        age_identity=X25519Identity.from_bytes(_seed("age-" + label)))
    return Person(identity, role)


def recipient(label: str) -> str:
    """An epoch recipient (an age X25519 recipient string)."""
    return X25519Identity.from_bytes(_seed("epoch-" + label)).recipient().to_string()


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


class StatementLog:
    """A log under construction, its anchor and the honest clients' view of the chains."""

    def __init__(self, origin: str = ORIGIN) -> None:
        self.log = SyntheticLog(Ed25519Signer(origin, _seed("log")))
        self.admin = person("admin", "admin")
        self.anchor = TrustAnchor(origin=origin, log_key=self.log.vkey,
                                  admins=(AnchorAdmin(self.admin.bundle, "Org", "NL"),))
        self.trust = TrustState(self.anchor)
        self.origin = origin
        self._nonce = 0
        self.add(actor="-", actor_key="", action="log.init",
                 details={"origin": origin, "log_key": self.log.vkey,
                          "anchor": self.anchor.fingerprint})

    # -- raw ---------------------------------------------------------------------------

    def add(self, **kw: Any) -> int:
        """Append one entry as given; return its index."""
        entry, data, _ = self.log.builder.append(time=STAMP, **kw)
        self.log.entries.append(data)
        return entry.index

    def nonce(self) -> str:
        self._nonce += 1
        return f"n{self._nonce}"

    def verify(self, *, anchor: TrustAnchor | bool | None = True) -> VerifyReport:
        """Verify the whole log (with this log's anchor unless told otherwise)."""
        pinned = self.anchor if anchor is True else (anchor or None)
        return verify_log(self.log.entries, self.log.vkey, self.log.checkpoint(),
                          anchor=pinned)  # type: ignore[arg-type]

    # -- statements ----------------------------------------------------------------------

    def statement(self, kind: str, chain: str, issuer: Person, body: dict[str, Any], *,
                  signers: Sequence[Person | tuple[str, SigningKey]] | None = None,
                  seq: int | None = None, prev: str | bool | None = True,
                  origin: str | None = None) -> SignedStatement:
        """Return a statement extending ``chain`` as the honest view has it, signed by
        ``signers`` (default: the issuer)."""
        next_seq, head = self.trust.chain_head(chain)
        statement = Statement(
            type=kind, chain=chain, seq=next_seq if seq is None else seq,
            prev=head if prev is True else prev,  # type: ignore[arg-type]
            issuer=issuer.pid, issued_at=ISSUED, origin=origin or self.origin, body=body)
        pairs = [(s.pid, s.key) if isinstance(s, Person) else s for s in (signers or [issuer])]
        return sign_statement(statement, pairs)

    def log_statement(self, signed: SignedStatement, *, actor: Person, method: str, path: str,
                      case: str | None = None, object: str | None = None,
                      details: dict[str, DetailValue] | None = None) -> int:
        """Append the ok entry carrying ``signed``; the honest view applies it if it can."""
        statement = signed.statement
        index = self.add(
            actor=actor.pid, actor_key=self._fingerprint(actor), action=statement.type,
            case=case, object=object, request=actor.actor.request(method, path, self.nonce()),
            details={"statement": encode_statement(signed), "statement_hash": signed.hash,
                     "chain": statement.chain, "seq": statement.seq, **(details or {})})
        # A refused statement changes nothing (a body of odd JSON types may raise TypeError).
        with contextlib.suppress(StatementError, TypeError, KeyError, AttributeError):
            self.trust.apply(signed, index=index)
        return index

    def _fingerprint(self, who: Person) -> str:
        state = self.trust.directory.participants.get(who.pid)
        return state.fingerprint if state is not None else who.bundle.fingerprint

    # -- the directory -------------------------------------------------------------------

    def enrol(self, who: Person, *, issuer: Person | None = None,
              signers: Sequence[Person | tuple[str, SigningKey]] | None = None) -> int:
        issuer = issuer or self.admin
        bundle = who.bundle.to_json_obj()
        signed = self.statement(
            "participant.enrol", DIRECTORY_CHAIN, issuer,
            {"participant": bundle, "possession": _possession(who, signers, issuer),
             "role": who.role, "organisation": "Org", "country": "NL"},
            signers=signers or [issuer])
        return self.log_statement(signed, actor=issuer, method="POST", path="/v1/participants",
                                  object=who.pid,
                                  details={"participant": who.pid, "role": who.role,
                                           "signing_key": bundle["signing_key"],
                                           "fingerprint": who.bundle.fingerprint})

    def key_change(self, old: Person, new: Person, *, actor: Person | None = None,
                   issuer: Person | None = None,
                   signers: Sequence[Person | tuple[str, SigningKey]] | None = None) -> int:
        issuer = issuer or self.admin
        signed = self.statement(
            "participant.key_change", DIRECTORY_CHAIN, issuer,
            {"participant": new.bundle.to_json_obj(),
             "possession": _possession(new, signers, issuer), "reason": "lost laptop"},
            signers=[s for s in signers if s is not new] if signers else [issuer, old])
        return self.log_statement(signed, actor=actor or issuer, method="PUT",
                                  path=f"/v1/participants/{old.pid}/keys", object=old.pid,
                                  details={"participant": old.pid,
                                           "fingerprint": new.bundle.fingerprint})

    def suspend(self, who: Person, *, issuer: Person | None = None) -> int:
        issuer = issuer or self.admin
        signed = self.statement("participant.suspend", DIRECTORY_CHAIN, issuer,
                                {"participant": who.pid, "reason": "left"})
        return self.log_statement(signed, actor=issuer, method="POST",
                                  path=f"/v1/participants/{who.pid}/suspend", object=who.pid,
                                  details={"participant": who.pid})

    def directory_statement(self, kind: str, body: dict[str, Any], *,
                            issuer: Person | None = None, object: str | None = None) -> int:
        issuer = issuer or self.admin
        signed = self.statement(kind, DIRECTORY_CHAIN, issuer, body)
        return self.log_statement(signed, actor=issuer, method="POST",
                                  path=route_for(kind, participant=object), object=object,
                                  details={"participant": object} if object else None)

    # -- cases ---------------------------------------------------------------------------

    def member(self, who: Person) -> dict[str, str]:
        return {"id": who.pid, "role": who.role, "fingerprint": self._fingerprint(who)}

    def create_case(self, owner: Person, case_id: str) -> int:
        body = {"case": case_id, "epoch": 1, "recipient": recipient(f"{case_id}-1"),
                "members": [self.member(owner)],
                "envelopes": [{"member": owner.pid, "epoch": 1,
                               "sha256": digest(f"{case_id}-1-{owner.pid}")}],
                "metadata_sha256": digest(case_id)}
        signed = self.statement("case.create", case_chain(case_id), owner, body)
        return self.log_statement(signed, actor=owner, method="POST", path="/v1/cases",
                                  case=case_id, details={"epoch": 1,
                                                         "recipient": body["recipient"]})

    def add_member(self, owner: Person, case_id: str, who: Person, *,
                   chain_case: str | None = None) -> int:
        epoch = self.trust.case(chain_case or case_id).epoch
        body = {"member": self.member(who),
                "envelopes": [{"member": who.pid, "epoch": e,
                               "sha256": digest(f"{case_id}-{e}-{who.pid}")}
                              for e in range(1, epoch + 1)]}
        signed = self.statement("case.member_add", case_chain(chain_case or case_id), owner,
                                body)
        return self.log_statement(signed, actor=owner, method="POST",
                                  path=f"/v1/cases/{case_id}/members", case=case_id,
                                  details={"participant": who.pid, "role": who.role,
                                           "epoch": epoch})

    def _epoch_body(self, case_id: str, members: Sequence[str]) -> dict[str, Any]:
        epoch = self.trust.case(case_id).epoch + 1
        people = [self.trust.case(case_id).members[m] for m in members]
        return {"epoch": epoch, "recipient": recipient(f"{case_id}-{epoch}"),
                "members": [m.to_json() for m in people],
                "envelopes": [{"member": m, "epoch": epoch,
                               "sha256": digest(f"{case_id}-{epoch}-{m}")} for m in members]}

    def remove_member(self, owner: Person, case_id: str, who: Person) -> int:
        rest = [m for m in self.trust.case(case_id).member_ids() if m != who.pid]
        body = {**self._epoch_body(case_id, rest), "removed": who.pid}
        signed = self.statement("case.member_remove", case_chain(case_id), owner, body)
        return self.log_statement(signed, actor=owner, method="POST",
                                  path=f"/v1/cases/{case_id}/members/{who.pid}/remove",
                                  case=case_id, object=who.pid,
                                  details={"participant": who.pid, "epoch": body["epoch"],
                                           "recipient": body["recipient"]})

    def rotate(self, owner: Person, case_id: str) -> int:
        body = self._epoch_body(case_id, self.trust.case(case_id).member_ids())
        signed = self.statement("case.epoch_rotate", case_chain(case_id), owner, body)
        return self.log_statement(signed, actor=owner, method="POST",
                                  path=f"/v1/cases/{case_id}/epochs", case=case_id,
                                  details={"epoch": body["epoch"],
                                           "recipient": body["recipient"]})

    # -- accesses ------------------------------------------------------------------------

    def access(self, who: Person, action: str, method: str, path: str, *,
               case: str | None = None, object: str | None = None, outcome: str = "ok",
               reason: str | None = None, details: dict[str, DetailValue] | None = None,
               key: SigningKey | None = None) -> int:
        return self.add(actor=who.pid, actor_key=self._fingerprint(who), action=action,
                        case=case, object=object, outcome=outcome, reason=reason,
                        request=who.actor.request(method, path, self.nonce(), key=key),
                        details=details or {})

    def download(self, who: Person, case_id: str, evidence: str = "ev-1", **kw: Any) -> int:
        return self.access(who, "evidence.download", "GET", f"/v1/evidence/{evidence}/content",
                           case=case_id, object=evidence, **kw)

    def commit(self, who: Person, case_id: str, *, epoch: int | None = None,
               head: str | bool | None = True) -> int:
        state = self.trust.case(case_id)
        upload = "u" * 16
        return self.access(who, "evidence.commit", "POST", f"/v1/uploads/{upload}/commit",
                           case=case_id, object="ev-" + self.nonce(),
                           details={"upload_id": upload, "epoch": epoch or state.epoch,
                                    "case_head": state.head if head is True else head,
                                    "ciphertext_sha256": digest("c"), "ciphertext_size": 9})

    def envelope_get(self, who: Person, case_id: str, epoch: int) -> int:
        return self.access(who, "envelope.get", "GET",
                           f"/v1/cases/{case_id}/epochs/{epoch}/envelope", case=case_id,
                           object=f"epoch/{epoch}", details={"epoch": epoch})


def standard() -> tuple[StatementLog, Person, Person, Person]:
    """A log with a prosecutor (owner of case c1), a coordinator member and an auditor."""
    slog = StatementLog()
    pros, coord, aud = person("pros", "prosecutor"), person("coord", "coordinator"), person(
        "aud", "auditor")
    for who in (pros, coord, aud):
        slog.enrol(who)
    slog.create_case(pros, "c1")
    slog.add_member(pros, "c1", coord)
    return slog, pros, coord, aud
