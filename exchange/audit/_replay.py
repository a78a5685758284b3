"""The verifier's replay of the trust rules over a whole log (issue 10 §4; DESIGN.md trust model).

Given the trust anchor the auditor pinned, one :class:`~exchange.crypto.chains.TrustState`
is rebuilt from the statements the log carries, in log order, each applied
at its entry's index; a statement the rules refuse is a finding with the
rule's stable name. Rights are then derived from that replayed state, never
from what the server says about participants or cases: every ok entry is
checked against what its actor could do *at that position* — the role and
status in the replayed directory, the membership in the replayed case chain
(mirroring ``exchange/service/policy.py`` and the services that use it) —
and a commit must name the case's current epoch and chain head.

Old entries that changed trust-relevant state without a statement (made
before signed statements existed) are reported as ``unsigned-statement``:
they cannot be checked, and nothing is invented for them. What they
introduced (participants, cases) is remembered as *unverified* so that the
entries using it are not reported a second time.
"""

from __future__ import annotations

import base64
from array import array
from collections.abc import Mapping
from typing import Any, Protocol

from exchange.audit._statements import check_carried
from exchange.audit.entry import LOG_INIT, PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE
from exchange.crypto.anchor import TrustAnchor
from exchange.crypto.chains import CaseState, ParticipantState, TrustState
from exchange.crypto.statement import STATEMENT_TYPES, SignedStatement, StatementError

__all__ = ["UNSIGNED_RULE", "AddFinding", "Replay"]

class AddFinding(Protocol):
    """Records one finding (``exchange.audit.verify``)."""

    def __call__(self, index: int | None, where: str, expected: str, found: str, message: str,
                 *, rule: str = "") -> None: ...

UNSIGNED_RULE = "unsigned-statement"
MEMBER_ROLES = frozenset({"prosecutor", "coordinator"})
ENTRY_READERS = frozenset({"auditor", "admin"})
#: Actions that changed trust-relevant state before statements existed (their old names too).
STATEFUL_ACTIONS = STATEMENT_TYPES | {"case.epoch_add", "envelope.put"}
_ADMIN_ACTIONS = frozenset({PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE, "participant.suspend"})
_CASE_MANAGER_ACTIONS = frozenset({"case.member_add", "case.member_remove", "case.epoch_add",
                                   "envelope.put", "case.erase"})
_CASE_CONTENT_ACTIONS = frozenset({
    "case.show", "case.feed", "envelope.get", "upload.create", "upload.status", "upload.append",
    "upload.terminate", "evidence.commit", "evidence.list", "evidence.show", "evidence.download",
})


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


class Replay:
    """The trust state replayed up to the current entry, and the checks that use it."""

    def __init__(self, anchor: TrustAnchor, add: AddFinding) -> None:
        self.anchor = anchor
        self.trust = TrustState(anchor)
        self._add = add
        self.unverified_cases: set[str] = set()  # created by entries without statements
        # The actor of each entry so far (who may read whose receipt): 4 bytes an entry.
        self._actor_of = array("L")
        self._actor_ids: dict[str, int] = {}
        self._actor_names: list[str] = []

    def note_actor(self, actor: str) -> None:
        """Record the actor of the next entry (every entry, in order)."""
        number = self._actor_ids.get(actor)
        if number is None:
            number = self._actor_ids[actor] = len(self._actor_names)
            self._actor_names.append(actor)
        self._actor_of.append(number)

    def actor_at(self, index: int) -> str | None:
        """The actor of entry ``index`` (None beyond the entries seen so far)."""
        if not 0 <= index < len(self._actor_of):
            return None
        return self._actor_names[self._actor_of[index]]

    # -- the log as a whole -----------------------------------------------------------

    def check_log(self, log_vkey: str, origin: str | None) -> None:
        """The anchor must name the log being verified."""
        if self.anchor.log_key != log_vkey:
            self._add(None, "anchor.log_key", log_vkey, _short(self.anchor.log_key),
                      "the trust anchor names another log key than the one verified against",
                      rule="anchor-mismatch")
        if origin is not None and self.anchor.origin != origin:
            self._add(None, "anchor.origin", origin, _short(self.anchor.origin),
                      "the trust anchor names another log origin", rule="anchor-mismatch")

    def key(self, actor: str) -> tuple[bytes, str] | None:
        """The actor's (signing key, fingerprint) at this position, from statements only."""
        state = self.trust.directory.participants.get(actor)
        return None if state is None else (state.bundle.signing_key, state.bundle.fingerprint)

    # -- one ok entry -----------------------------------------------------------------

    def check_ok(self, index: int, entry: Mapping[str, Any]) -> bool:
        """Check an ok entry (after its request signature) and apply its statement.

        Returns True when the entry is an old, unsigned enrolment or key change
        of a participant the statements do not know: the caller then keeps its
        keys as unverified, so later signatures by it can still be checked.
        """
        action = entry["action"]
        if action == LOG_INIT:
            self._check_init(index, entry)
            return False
        if "statement" in entry["details"]:
            # Applied wherever it stands (clients may follow it once it is in the log);
            # on an entry of another action the mismatch is itself a finding.
            signed, problems = check_carried(entry)
            for problem in problems:
                self._add(index, problem.field, problem.expected, problem.found,
                          problem.message, rule=problem.rule)
            if signed is not None:
                self._apply(index, signed)
            if action in STATEMENT_TYPES:
                return False
        if entry["request"] is None and index == 1 and action == PARTICIPANT_ENROL:
            self._check_genesis(entry)
            return False
        self._check_rights(index, entry)
        if action not in STATEFUL_ACTIONS:
            return False
        self._add(index, "details.statement", "a signed statement", "none",
                  f"{action} made before signed statements (or without one): who made it and "
                  "what it changed cannot be checked", rule=UNSIGNED_RULE)
        if action == "case.create" and isinstance(entry["case"], str):
            self.unverified_cases.add(entry["case"])
        subject = entry["details"].get("participant")
        return action in (PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE) and (
            subject not in self.trust.directory.participants)

    def _apply(self, index: int, signed: SignedStatement) -> None:
        statement = signed.statement
        try:
            self.trust.apply(signed, index=index)
            return
        except StatementError as err:
            rule, reason = getattr(err, "rule", "statement-invalid"), str(err)
        except (TypeError, KeyError, AttributeError, ValueError) as err:
            # A body of JSON types the rules do not turn into a ChainError
            # themselves: still a finding about this entry, never a crash.
            rule, reason = "malformed-body", f"a body value of an unexpected type ({err})"
        self._add(index, "details.statement", "a statement the chain rules allow", rule,
                  f"the {statement.type} statement (seq {statement.seq} of "
                  f"{_short(statement.chain, 70)}) breaks rule {rule}: {_short(reason, 200)}",
                  rule=rule)

    def _check_init(self, index: int, entry: Mapping[str, Any]) -> None:
        named = entry["details"].get("anchor")
        if named is not None and named != self.anchor.fingerprint:
            self._add(index, "details.anchor", self.anchor.fingerprint, _short(named),
                      "log.init names another trust anchor than the one pinned",
                      rule="anchor-mismatch")

    def _check_genesis(self, entry: Mapping[str, Any]) -> None:
        """Old logs: the server-originated enrolment at index 1 must be an anchor admin's."""
        details = entry["details"]
        admin = next((a for a in self.anchor.admins
                      if a.bundle.id == details.get("participant")), None)
        if admin is None:
            self._add(1, "details.participant", "an administrator of the trust anchor",
                      _short(details.get("participant")),
                      "the server-originated first enrolment is not of an anchor administrator",
                      rule="anchor-mismatch")
            return
        key = base64.b64encode(admin.bundle.signing_key).decode("ascii")
        fingerprint = details.get("fingerprint")
        if details.get("signing_key") != key or fingerprint not in (
                None, admin.bundle.fingerprint):
            self._add(1, "details.signing_key", key, _short(details.get("signing_key")),
                      "the server-originated first enrolment carries other keys than the "
                      "trust anchor's administrator", rule="anchor-mismatch")

    # -- rights -----------------------------------------------------------------------

    def _check_rights(self, index: int, entry: Mapping[str, Any]) -> None:
        """Could the actor, as replayed, have made this ok entry? (service/policy.py)"""
        actor, action = entry["actor"], entry["action"]
        me = self.trust.directory.participants.get(actor)
        if me is None:
            return  # unknown (already a signature finding) or only unverified (already flagged)
        if not me.active:
            self._add(index, "actor", "an active participant", f"{_short(actor)} (suspended)",
                      f"{action} succeeded for a participant suspended at this point",
                      rule="suspended")
            return
        if action in _ADMIN_ACTIONS:
            self._require_role(index, entry, me, frozenset({"admin"}))
        elif action == "case.create":
            self._require_role(index, entry, me, frozenset({"prosecutor"}))
        elif action in ("case.list", "membership.feed"):
            self._require_role(index, entry, me, MEMBER_ROLES)
        elif action in _CASE_CONTENT_ACTIONS or action in _CASE_MANAGER_ACTIONS:
            if self._require_role(index, entry, me, MEMBER_ROLES) and entry["case"] is not None:
                case = self._membership(index, entry, me,
                                        manage=action in _CASE_MANAGER_ACTIONS)
                if case is not None:
                    self._check_case_use(index, entry, case)
        elif action == "audit.read":
            self._check_audit_read(index, entry, me)

    def _require_role(self, index: int, entry: Mapping[str, Any], me: ParticipantState,
                      roles: frozenset[str]) -> bool:
        if me.role in roles:
            return True
        self._add(index, "actor", f"a participant of role {' or '.join(sorted(roles))}",
                  f"{_short(entry['actor'])} ({me.role})",
                  f"{entry['action']} succeeded for a {me.role}, whose role does not allow it",
                  rule="wrong-role")
        return False

    def _membership(self, index: int, entry: Mapping[str, Any], me: ParticipantState, *,
                    manage: bool) -> CaseState | None:
        case_id, actor, action = entry["case"], entry["actor"], entry["action"]
        case = self.trust.cases.get(case_id)
        if case is None:
            if case_id not in self.unverified_cases:
                self._add(index, "case", "a case created by a signed statement",
                          _short(case_id), f"{action} names a case no statement in the log "
                          "creates (a fictitious case, or its creation is missing)",
                          rule="unknown-case")
            return None
        if actor not in case.members:
            how = "was removed from" if actor in case.former else "is not a member of"
            self._add(index, "actor", f"a member of case {_short(case_id, 60)}",
                      _short(actor), f"{action} succeeded for a participant who {how} the "
                      f"case at this point (members: {', '.join(case.member_ids()[:8])})",
                      rule="not-member")
            return None
        if manage and me.role != "prosecutor":
            self._add(index, "actor", "a prosecutor member", f"{_short(actor)} ({me.role})",
                      f"{action} succeeded for a {me.role}; only prosecutors manage a case",
                      rule="not-owner")
        return case

    def _check_case_use(self, index: int, entry: Mapping[str, Any], case: CaseState) -> None:
        details, action = entry["details"], entry["action"]
        if action == "envelope.get":
            epoch = details.get("epoch")
            if isinstance(epoch, int) and case.envelope_hash(entry["actor"], epoch) is None:
                self._add(index, "details.epoch", "an epoch with a statement-named envelope "
                          "for the actor", str(epoch), "the server served an envelope no "
                          "statement of the case names for this member", rule="unknown-envelope")
        elif action == "evidence.commit":
            epoch, head = details.get("epoch"), details.get("case_head")
            if epoch != case.epoch:
                self._add(index, "details.epoch", str(case.epoch), _short(epoch),
                          "commit to a stale epoch: the case chain's current epoch at this "
                          "point is another", rule="stale-epoch")
            if head != case.head:
                self._add(index, "details.case_head", str(case.head), _short(head),
                          "commit to a stale case head: the uploader did not verify the "
                          "case chain as it stood at this point", rule="stale-head")

    def _check_audit_read(self, index: int, entry: Mapping[str, Any],
                          me: ParticipantState) -> None:
        resource = entry["object"] or ""
        if resource.startswith("tile/entries/"):
            self._require_role(index, entry, me, ENTRY_READERS)
        elif resource.startswith("receipt/") and me.role not in ENTRY_READERS:
            number = resource[len("receipt/"):]
            owner = (self.actor_at(int(number)) if number.isdecimal() and len(number) < 20
                     else None)
            if owner != entry["actor"]:
                self._add(index, "object", "a receipt of the actor's own entry",
                          _short(resource), f"a {me.role} read the receipt of another "
                          "participant's entry (needs role auditor or admin)", rule="wrong-role")
