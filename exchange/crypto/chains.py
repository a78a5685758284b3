"""Replaying signed statements: who may sign what, and the state they produce.

One pure engine, used three times: by the server before it stores a
statement (so honest servers refuse nonsense early), by every client before
it wraps, unwraps or encrypts anything, and by ``exchange audit verify`` over
the whole log. Only the last two matter for security; the server's check is a
courtesy.

State. :class:`TrustState` holds the *directory* (participants with their
keys, roles and status; the administrators and their quorum; the public URL)
and one :class:`CaseState` per case chain seen (members with the key
fingerprint they were admitted under, key epochs with their recipients, the
SHA-256 of every envelope). The directory starts from the trust anchor.
Statements are applied in log order; each must extend its chain (``seq`` is
the next number, ``prev`` the hash of the current head) and obey the rules
below *as of the state just before it* — an administrator who was suspended,
or a member who was removed, signs nothing afterwards.

Rules (the signer of a role is the participant's *current* directory key):

=========================  ==========================================================
participant.enrol          administrator quorum; body carries the new keys' possession proof
participant.key_change     administrator quorum + possession proof (+ the old key if given)
participant.suspend,       administrator quorum
.reinstate, .role
admin.set                  quorum of the current administrators
server.url                 administrator quorum
case.create                the issuer, an active prosecutor, alone member of epoch 1
case.member_add            an active prosecutor member; envelopes for the newcomer only
case.member_remove         an active prosecutor member; new epoch for exactly the others
case.epoch_rotate          an active prosecutor member; new epoch for every member
case.envelope_add          an active member; envelopes of existing epochs for members
case.policy                an active prosecutor member
=========================  ==========================================================

Every member named in a case statement carries the key fingerprint the
issuer wrapped for; it must be that member's current directory fingerprint,
so a hidden key change is detected by whoever replays the log.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.keys import (
    BundleError,
    PublicBundle,
    bundle_from_json_obj,
    bundle_possession,
    verify_possession,
)
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    StatementError,
    case_chain,
)

__all__ = [
    "RETENTION_MODES",
    "CaseState",
    "ChainError",
    "Directory",
    "Member",
    "ParticipantState",
    "TrustState",
    "check_retention",
]

ROLES = frozenset({"admin", "prosecutor", "coordinator", "auditor"})
MEMBER_ROLES = frozenset({"prosecutor", "coordinator"})
ACTIVE = "active"
SUSPENDED = "suspended"
MAX_MEMBERS = 100  # a statement must fit one audit entry (64 KiB)
MAX_EPOCH = 2**31 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_URL = re.compile(r"https?://[\x21-\x7e]{1,2000}")


class ChainError(StatementError):
    """A statement breaks a chain rule; ``rule`` is a stable short name for findings."""

    problem_type = "statement-rejected"

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(slots=True)
class ParticipantState:
    """A participant as the replayed directory knows it."""

    bundle: PublicBundle
    role: str
    organisation: str
    country: str
    status: str = ACTIVE
    keys_since: int | None = None  # log index of the statement that set the current keys
    #: (log index from which they hold, keys), oldest first; index None = from the anchor.
    history: list[tuple[int | None, PublicBundle]] = field(default_factory=list)

    def keys_at(self, index: int) -> PublicBundle:
        """Return the keys this participant had at log position ``index``.

        A manifest or request made at ``index`` is judged by the keys in force
        then, not by later ones (a key change must not orphan old evidence).
        """
        current = self.history[0][1] if self.history else self.bundle
        for since, bundle in self.history:
            if since is None or since <= index:
                current = bundle
        return current

    @property
    def fingerprint(self) -> str:
        """The overall fingerprint of the current keys."""
        return self.bundle.fingerprint

    @property
    def active(self) -> bool:
        """True unless suspended."""
        return self.status == ACTIVE


@dataclass(slots=True)
class Directory:
    """Participants, administrators and the server URL, replayed from the anchor on."""

    origin: str
    participants: dict[str, ParticipantState]
    admins: tuple[str, ...]
    admin_quorum: int
    seq: int = 0
    head: str | None = None
    server_url: str | None = None

    @classmethod
    def from_anchor(cls, anchor: TrustAnchor) -> Directory:
        """Return the genesis directory: the anchor's administrators, active."""
        participants = {
            a.bundle.id: ParticipantState(bundle=a.bundle, role="admin",
                                          organisation=a.organisation, country=a.country,
                                          history=[(None, a.bundle)])
            for a in anchor.admins
        }
        return cls(origin=anchor.origin, participants=participants,
                   admins=tuple(a.bundle.id for a in anchor.admins),
                   admin_quorum=anchor.admin_quorum)

    def get(self, participant_id: str) -> ParticipantState:
        """Return a participant; ChainError('unknown-participant') when there is none."""
        state = self.participants.get(participant_id)
        if state is None:
            raise ChainError("unknown-participant",
                             f"participant {participant_id[:60]!r} is not enrolled")
        return state


@dataclass(frozen=True, slots=True)
class Member:
    """A case member: the role and key fingerprint under which they were admitted."""

    id: str
    role: str
    fingerprint: str

    def to_json(self) -> dict[str, str]:
        """Return the JSON object form used in statement bodies."""
        return {"id": self.id, "role": self.role, "fingerprint": self.fingerprint}


@dataclass(slots=True)
class CaseState:
    """One case as its statement chain says: members, epochs, envelopes."""

    case_id: str
    created_by: str
    metadata_sha256: str
    seq: int = 0
    head: str | None = None
    epoch: int = 0
    recipients: dict[int, str] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    former: set[str] = field(default_factory=set)
    envelopes: dict[tuple[str, int], str] = field(default_factory=dict)
    policy: dict[str, Any] | None = None
    #: The hash of the case.policy statement in force (what an erasure cites).
    policy_hash: str | None = None
    head_index: int | None = None

    def envelope_hash(self, member: str, epoch: int) -> str | None:
        """The SHA-256 (hex) a verified statement names for ``member``'s envelope of ``epoch``."""
        return self.envelopes.get((member, epoch))

    def member_ids(self) -> list[str]:
        """The active members, sorted."""
        return sorted(self.members)


# -- body parsing -----------------------------------------------------------------------


def _obj(body: Mapping[str, Any], required: Iterable[str], optional: Iterable[str] = ()
         ) -> Mapping[str, Any]:
    allowed = set(required) | set(optional)
    missing = [k for k in required if k not in body]
    if missing:
        raise ChainError("malformed-body", f"the statement body lacks {missing[0]!r}")
    extra = sorted(set(body) - allowed)
    if extra:
        raise ChainError("malformed-body", f"the statement body has unknown member {extra[0]!r}")
    return body


def _str(body: Mapping[str, Any], name: str, *, limit: int = 200) -> str:
    value = body.get(name)
    if not isinstance(value, str) or len(value) > limit:
        raise ChainError("malformed-body", f"{name} must be a string of at most {limit} "
                         "characters")
    return value


def _int(body: Mapping[str, Any], name: str) -> int:
    value = body.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_EPOCH:
        raise ChainError("malformed-body", f"{name} must be a positive integer")
    return value


def _bundle(value: object) -> PublicBundle:
    try:
        return bundle_from_json_obj(value)
    except BundleError as err:
        raise ChainError("malformed-body", f"participant bundle: {err}") from None


def _role(value: object) -> str:
    if not isinstance(value, str) or value not in ROLES:
        raise ChainError("malformed-body", f"role must be one of {sorted(ROLES)}")
    return str(value)


def _members(value: object) -> list[Member]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS:
        raise ChainError("malformed-body", "members must be a list")
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise ChainError("malformed-body", "each member is {id, role, fingerprint}")
        _obj(item, ("id", "role", "fingerprint"))
        out.append(Member(id=_str(item, "id", limit=64), role=_role(item["role"]),
                          fingerprint=_str(item, "fingerprint", limit=100)))
    if len({m.id for m in out}) != len(out):
        raise ChainError("malformed-body", "a member is named twice")
    return out


def _envelopes(value: object) -> dict[tuple[str, int], str]:
    if not isinstance(value, list) or len(value) > MAX_MEMBERS * 8:
        raise ChainError("malformed-body", "envelopes must be a list")
    out: dict[tuple[str, int], str] = {}
    for item in value:
        if not isinstance(item, dict):
            raise ChainError("malformed-body", "each envelope is {member, epoch, sha256}")
        _obj(item, ("member", "epoch", "sha256"))
        digest = _str(item, "sha256", limit=64)
        if not _HEX64.fullmatch(digest):
            raise ChainError("malformed-body", "an envelope sha256 is 64 lowercase hex digits")
        key = (_str(item, "member", limit=64), _int(item, "epoch"))
        if key in out:
            raise ChainError("malformed-body", f"two envelopes for {key[0]!r} epoch {key[1]}")
        out[key] = digest
    return out


#: Retention modes of a case policy (issue 19): keep until every intended recipient
#: pulled, keep N days after the commit, or keep (no automatic erasure).
RETENTION_MODES = frozenset({"until-delivered", "days", "keep"})
MAX_RETENTION_DAYS = 36_500


def check_retention(policy: Mapping[str, Any]) -> None:
    """Check a policy's ``retention`` and ``legal_hold`` members (both optional).

    ``retention`` is ``{"mode": "until-delivered"}``, ``{"mode": "days", "days": N}``
    or ``{"mode": "keep"}``; ``legal_hold`` is a boolean that, while true, blocks
    every erasure. Other policy members are left to their own readers.
    """
    hold = policy.get("legal_hold", False)
    if not isinstance(hold, bool):
        raise ChainError("malformed-body", "legal_hold must be true or false")
    retention = policy.get("retention")
    if retention is None:
        return
    if not isinstance(retention, dict):
        raise ChainError("malformed-body", "retention must be an object")
    mode = retention.get("mode")
    if mode not in RETENTION_MODES:
        raise ChainError("malformed-body", f"retention mode must be one of "
                         f"{sorted(RETENTION_MODES)}")
    _obj(retention, ("mode", "days") if mode == "days" else ("mode",))
    if mode == "days":
        days = _int(retention, "days")
        if days > MAX_RETENTION_DAYS:
            raise ChainError("malformed-body", f"days must be at most {MAX_RETENTION_DAYS}")


# -- the engine -------------------------------------------------------------------------


class TrustState:
    """The directory and the case chains, replayed statement by statement."""

    def __init__(self, anchor: TrustAnchor) -> None:
        self.anchor = anchor
        self.directory = Directory.from_anchor(anchor)
        self.cases: dict[str, CaseState] = {}

    def copy(self) -> TrustState:
        """Return an independent copy (apply a statement to it to test it)."""
        return copy.deepcopy(self)

    def case(self, case_id: str) -> CaseState:
        """Return the state of ``case_id``; ChainError('unknown-case') when no chain exists."""
        state = self.cases.get(case_id)
        if state is None:
            raise ChainError("unknown-case", f"no verified statement creates case {case_id!r}")
        return state

    def chain_head(self, chain: str) -> tuple[int, str | None]:
        """Return (next seq, head hash) of ``chain``."""
        if chain == DIRECTORY_CHAIN:
            return self.directory.seq, self.directory.head
        case = self.cases.get(chain.removeprefix("case:"))
        return (0, None) if case is None else (case.seq, case.head)

    def apply(self, signed: SignedStatement, *, index: int | None = None) -> None:
        """Check ``signed`` against the rules and the current state, then apply it.

        On error nothing changes. ``index`` is the statement's audit-log
        index when known (kept so that key validity can be dated).
        """
        statement = signed.statement
        if statement.origin != self.directory.origin:
            raise ChainError("wrong-origin", f"the statement belongs to log "
                             f"{statement.origin[:60]!r}, not {self.directory.origin!r}")
        seq, head = self.chain_head(statement.chain)
        if statement.seq != seq or statement.prev != head:
            raise ChainError("chain-broken", f"{statement.chain} statement seq "
                             f"{statement.seq} does not extend the chain (next seq {seq})")
        if statement.chain == DIRECTORY_CHAIN:
            self._apply_directory(signed, index)
            self.directory.seq += 1
            self.directory.head = statement.hash
        else:
            case = self._apply_case(signed)
            case.seq += 1
            case.head = statement.hash
            case.head_index = index

    # -- signatures ---------------------------------------------------------------------

    def _current_key(self, participant_id: str) -> bytes:
        return self.directory.get(participant_id).bundle.signing_key

    def _require_admin_quorum(self, signed: SignedStatement) -> None:
        directory = self.directory
        issuer = signed.statement.issuer
        if issuer not in directory.admins:
            raise ChainError("not-admin", f"{issuer!r} is not an administrator")
        signers = {
            admin for admin in directory.admins
            if directory.get(admin).active and signed.signed_by_key(self._current_key(admin))
        }
        if issuer not in signers:
            raise ChainError("bad-signature", f"the administrator statement is not signed "
                             f"with {issuer!r}'s current key")
        if len(signers) < directory.admin_quorum:
            raise ChainError("admin-quorum", f"{len(signers)} administrator signature(s), "
                             f"the quorum is {directory.admin_quorum}")

    def _require_issuer(self, signed: SignedStatement) -> ParticipantState:
        issuer = signed.statement.issuer
        state = self.directory.get(issuer)
        if not state.active:
            raise ChainError("suspended", f"{issuer!r} is suspended")
        if not signed.signed_by_key(state.bundle.signing_key):
            raise ChainError("bad-signature", f"the statement is not signed with {issuer!r}'s "
                             "current key")
        return state

    # -- the directory ------------------------------------------------------------------

    def _apply_directory(self, signed: SignedStatement, index: int | None) -> None:
        statement, body, directory = signed.statement, signed.statement.body, self.directory
        kind = statement.type
        self._require_admin_quorum(signed)
        if kind in ("participant.enrol", "participant.key_change"):
            if kind == "participant.enrol":
                _obj(body, ("participant", "possession", "role", "organisation", "country"))
            else:
                _obj(body, ("participant", "possession", "reason"))
                _str(body, "reason", limit=500)
            bundle = _bundle(body["participant"])
            try:
                proof = bundle_possession(body)
            except BundleError as err:
                raise ChainError("malformed-body", str(err)) from None
            if proof is None or not verify_possession(bundle, proof):
                raise ChainError("no-possession", f"the new keys of {bundle.id!r} carry no valid "
                                 "proof of possession (their own signature)")
            if kind == "participant.enrol":
                if bundle.id in directory.participants:
                    raise ChainError("already-enrolled", f"{bundle.id!r} is enrolled already")
                directory.participants[bundle.id] = ParticipantState(
                    bundle=bundle, role=_role(body["role"]),
                    organisation=_str(body, "organisation"),
                    country=_str(body, "country", limit=64), keys_since=index,
                    history=[(index, bundle)])
                return
            current = directory.get(bundle.id)
            if bundle.fingerprint == current.fingerprint:
                raise ChainError("same-keys", f"the key change of {bundle.id!r} keeps its keys")
            for key in signed.signer_keys(bundle.id):
                if key not in (bundle.signing_key, current.bundle.signing_key):
                    raise ChainError("bad-signature", f"a signature claims to be by "
                                     f"{bundle.id!r} with a key it never had")
            current.bundle = bundle
            current.keys_since = index
            current.history.append((index, bundle))
            return
        if kind in ("participant.suspend", "participant.reinstate"):
            _obj(body, ("participant", "reason"))
            target = directory.get(_str(body, "participant", limit=64))
            _str(body, "reason", limit=500)
            if kind == "participant.suspend":
                if target.bundle.id == statement.issuer:
                    raise ChainError("self-suspend", "an administrator cannot suspend itself")
                target.status = SUSPENDED
            else:
                target.status = ACTIVE
            return
        if kind == "participant.role":
            _obj(body, ("participant", "role"))
            target = directory.get(_str(body, "participant", limit=64))
            target.role = _role(body["role"])
            return
        if kind == "admin.set":
            _obj(body, ("admins", "quorum"))
            admins = body["admins"]
            if not isinstance(admins, list) or not admins or len(admins) > 32 or not all(
                    isinstance(a, str) for a in admins) or len(set(admins)) != len(admins):
                raise ChainError("malformed-body", "admins must be a non-empty list of ids")
            for admin in admins:
                state = directory.get(admin)
                if state.role != "admin" or not state.active:
                    raise ChainError("not-admin", f"{admin!r} is not an active administrator")
            quorum = _int(body, "quorum")
            if quorum > len(admins):
                raise ChainError("admin-quorum", "the quorum exceeds the administrators")
            directory.admins = tuple(sorted(admins))
            directory.admin_quorum = quorum
            return
        if kind == "server.url":
            _obj(body, ("url",))
            url = _str(body, "url", limit=2000)
            if not _URL.fullmatch(url):
                raise ChainError("malformed-body", "url must be an http(s) URL")
            directory.server_url = url
            return
        raise ChainError("unknown-type", f"no rule for {kind}")  # pragma: no cover

    # -- cases --------------------------------------------------------------------------

    def _check_members(self, members: list[Member]) -> None:
        for member in members:
            state = self.directory.get(member.id)
            if not state.active:
                raise ChainError("suspended", f"{member.id!r} is suspended")
            if state.role not in MEMBER_ROLES or member.role != state.role:
                raise ChainError("wrong-role", f"{member.id!r} is a {state.role}, "
                                 "which cannot be a case member as stated")
            if member.fingerprint != state.fingerprint:
                raise ChainError("stale-key", f"the statement wraps for {member.id!r} under "
                                 f"key {member.fingerprint[:24]}…, whose current key is "
                                 f"{state.fingerprint[:24]}…")

    def _require_owner(self, signed: SignedStatement, case: CaseState) -> None:
        issuer = self._require_issuer(signed)
        member = case.members.get(issuer.bundle.id)
        if member is None:
            raise ChainError("not-member", f"{issuer.bundle.id!r} is not a member of case "
                             f"{case.case_id!r}")
        if issuer.role != "prosecutor":
            raise ChainError("not-owner", f"{issuer.bundle.id!r} is a {issuer.role}; only "
                             "prosecutors manage a case")

    def _new_epoch(self, case: CaseState, body: Mapping[str, Any], members: list[Member]) -> None:
        epoch = _int(body, "epoch")
        if epoch != case.epoch + 1:
            raise ChainError("epoch-order", f"the new epoch must be {case.epoch + 1}, "
                             f"found {epoch}")
        recipient = _str(body, "recipient", limit=4096)
        envelopes = _envelopes(body["envelopes"])
        wanted = {(m.id, epoch) for m in members}
        if set(envelopes) != wanted:
            raise ChainError("envelopes-mismatch", f"epoch {epoch} needs exactly one envelope "
                             "per member")
        case.epoch = epoch
        case.recipients[epoch] = recipient
        case.members = {m.id: m for m in members}
        case.envelopes.update(envelopes)

    def _apply_case(self, signed: SignedStatement) -> CaseState:
        statement, body = signed.statement, signed.statement.body
        case_id = statement.case_id or ""
        kind = statement.type
        if kind == "case.create":
            _obj(body, ("case", "epoch", "recipient", "members", "envelopes",
                        "metadata_sha256"))
            if body["case"] != case_id or case_chain(case_id) != statement.chain:
                raise ChainError("wrong-case", "the body names another case than the chain")
            if case_id in self.cases:
                raise ChainError("already-exists", f"case {case_id!r} exists already")
            issuer = self._require_issuer(signed)
            if issuer.role != "prosecutor":
                raise ChainError("not-owner", "only prosecutors create cases")
            members = _members(body["members"])
            if [m.id for m in members] != [statement.issuer]:
                raise ChainError("members-mismatch", "a new case has its creator as only member")
            self._check_members(members)
            digest = _str(body, "metadata_sha256", limit=64)
            if not _HEX64.fullmatch(digest):
                raise ChainError("malformed-body", "metadata_sha256 is 64 lowercase hex digits")
            case = CaseState(case_id=case_id, created_by=statement.issuer,
                             metadata_sha256=digest)
            self._new_epoch(case, body, members)
            self.cases[case_id] = case
            return case
        case = self.case(case_id)
        if kind == "case.member_add":
            _obj(body, ("member", "envelopes"))
            self._require_owner(signed, case)
            (member,) = _members([body["member"]])
            if member.id in case.members:
                raise ChainError("already-member", f"{member.id!r} is a member already")
            self._check_members([member])
            envelopes = _envelopes(body["envelopes"])
            if (member.id, case.epoch) not in envelopes or any(
                    m != member.id or not 1 <= e <= case.epoch for m, e in envelopes):
                raise ChainError("envelopes-mismatch", "a new member gets envelopes of existing "
                                 "epochs only, the current one included")
            case.members[member.id] = member
            case.former.discard(member.id)
            case.envelopes.update(envelopes)
            return case
        if kind in ("case.member_remove", "case.epoch_rotate"):
            required = ("epoch", "recipient", "members", "envelopes")
            _obj(body, (*required, "removed") if kind == "case.member_remove" else required)
            self._require_owner(signed, case)
            members = _members(body["members"])
            expected = set(case.members)
            removed = None
            if kind == "case.member_remove":
                removed = _str(body, "removed", limit=64)
                if removed not in case.members:
                    raise ChainError("not-member", f"{removed!r} is not a member")
                expected.discard(removed)
            if {m.id for m in members} != expected or not members:
                raise ChainError("members-mismatch", "the new epoch must list exactly the "
                                 "remaining members (at least one)")
            self._check_members(members)
            self._new_epoch(case, body, members)
            if removed is not None:
                case.former.add(removed)
            return case
        if kind == "case.envelope_add":
            _obj(body, ("members", "envelopes"))
            issuer = self._require_issuer(signed)
            if issuer.bundle.id not in case.members:
                raise ChainError("not-member", f"{issuer.bundle.id!r} is not a member")
            members = _members(body["members"])
            self._check_members(members)
            envelopes = _envelopes(body["envelopes"])
            named = {m.id for m in members}
            for (member_id, epoch) in envelopes:
                if member_id not in named or member_id not in case.members or not (
                        1 <= epoch <= case.epoch):
                    raise ChainError("envelopes-mismatch", "envelopes are for listed members "
                                     "of the case and existing epochs")
                rekeyed = case.members[member_id].fingerprint != self.directory.get(
                    member_id).fingerprint
                if (member_id, epoch) in case.envelopes and not rekeyed:
                    raise ChainError("envelope-exists", f"{member_id!r} has an envelope of "
                                     f"epoch {epoch} already")
            for listed in members:
                case.members[listed.id] = listed
            case.envelopes.update(envelopes)
            return case
        if kind == "case.policy":
            _obj(body, ("policy",))
            self._require_owner(signed, case)
            policy = body["policy"]
            if not isinstance(policy, dict):
                raise ChainError("malformed-body", "policy must be an object")
            check_retention(policy)
            case.policy = dict(policy)
            case.policy_hash = statement.hash
            return case
        raise ChainError("unknown-type", f"no rule for {kind}")  # pragma: no cover
