"""Does an audit entry say what the signed statement it carries says? (issue 10 §4)

A trust-relevant entry carries its statement verbatim (``details.statement``,
standard base64 of the canonical signed-statement bytes) next to the
details the server derived from it. An auditor must be able to rely on the
details of such an entry as much as on the statement, so each one that the
statement determines is compared with it: the statement's hash, chain and
``seq``; the entry's action (the statement type), actor (the issuer, who
also signed the request), case (the case chain's) and object (the
participant a directory statement is about); and the per-action details
older entries already had (participant, epoch, recipient, role, keys).

Pure and anchor-free: whether the issuer *may* make the statement is the
chain rules' business (``exchange.crypto.chains``), applied by the verifier.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exchange.audit.entry import STATEMENT_DETAIL
from exchange.crypto._strict import StrictDecodeError, b64decode_canonical
from exchange.crypto.keys import BundleError, bundle_from_json_obj
from exchange.crypto.statement import (
    DIRECTORY_CHAIN,
    SignedStatement,
    StatementError,
    parse_signed_statement,
)

__all__ = ["Problem", "bundle_json", "check_carried", "encode_statement", "read_statement",
           "statement_mismatches"]

#: Directory statements about one participant: where the body names it.
_PARTICIPANT_IN_BUNDLE = frozenset({"participant.enrol", "participant.key_change"})
_PARTICIPANT_BY_ID = frozenset({"participant.suspend", "participant.reinstate",
                                "participant.role"})


@dataclass(frozen=True, slots=True)
class Problem:
    """One disagreement, in the terms of a verifier finding."""

    field: str
    expected: str
    found: str
    message: str
    rule: str


def _short(value: object, limit: int = 80) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def read_statement(details: Mapping[str, Any]) -> SignedStatement | Problem | None:
    """Return the entry's signed statement, a Problem when it is unreadable, None if absent."""
    text = details.get(STATEMENT_DETAIL)
    if text is None:
        return None
    if not isinstance(text, str):
        return Problem("details.statement", "base64 of a signed statement", _short(text),
                       "the statement detail is not a string", "statement-invalid")
    try:
        return parse_signed_statement(b64decode_canonical(text))
    except StrictDecodeError as err:
        return Problem("details.statement", "canonical padded base64", _short(str(err)),
                       "the statement detail is not canonical base64", "statement-invalid")
    except StatementError as err:
        return Problem("details.statement", "a well-formed statement with valid signatures",
                       _short(str(err), 120), "the carried statement is invalid",
                       "statement-invalid")


def bundle_json(signed: SignedStatement) -> Mapping[str, Any] | None:
    """The participant bundle object of an enrolment or key change (None otherwise)."""
    statement = signed.statement
    if statement.type not in _PARTICIPANT_IN_BUNDLE:
        return None
    bundle = statement.body.get("participant")
    return bundle if isinstance(bundle, Mapping) else None


def _subject(signed: SignedStatement) -> object:
    """The participant a statement is about, as its body names it (None: none)."""
    statement, body = signed.statement, signed.statement.body
    if statement.type in _PARTICIPANT_IN_BUNDLE:
        bundle = bundle_json(signed)
        return None if bundle is None else bundle.get("id")
    if statement.type in _PARTICIPANT_BY_ID:
        return body.get("participant")
    if statement.type == "case.member_add":
        member = body.get("member")
        return member.get("id") if isinstance(member, Mapping) else None
    if statement.type == "case.member_remove":
        return body.get("removed")
    return None


def _expected_details(signed: SignedStatement) -> dict[str, object]:
    """The per-action details the statement determines (compared where the entry has them)."""
    statement, body = signed.statement, signed.statement.body
    out: dict[str, object] = {"statement_hash": signed.hash, "chain": statement.chain,
                              "seq": statement.seq}
    subject = _subject(signed)
    if subject is not None:
        out["participant"] = subject
    for name in ("epoch", "recipient", "metadata_sha256"):
        if name in body:
            out[name] = body[name]
    if "role" in body:
        out["role"] = body["role"]
    member = body.get("member")
    if isinstance(member, Mapping) and "role" in member:
        out["role"] = member["role"]
    bundle = bundle_json(signed)
    if bundle is not None:
        for name in ("signing_key", "age_recipient"):
            if name in bundle:
                out[name] = bundle[name]
    return out


def statement_mismatches(entry: Mapping[str, Any], signed: SignedStatement) -> list[Problem]:
    """Return every way ``entry`` contradicts the statement it carries (empty: none)."""
    statement = signed.statement
    problems: list[Problem] = []

    def differ(where: str, want: object, have: object, message: str) -> None:
        problems.append(Problem(where, _short(want), _short(have), message,
                                "statement-mismatch"))

    if entry["action"] != statement.type:
        differ("action", statement.type, entry["action"],
               "the entry's action is not the type of the statement it carries")
    if entry["actor"] != statement.issuer:
        differ("actor", statement.issuer, entry["actor"],
               "the entry's actor (the request's signer) did not issue the statement")
    if statement.chain != DIRECTORY_CHAIN and entry["case"] != statement.case_id:
        differ("case", statement.case_id, entry["case"],
               "the entry names another case than the statement's chain")
    subject = _subject(signed)
    if statement.chain == DIRECTORY_CHAIN and subject is not None and (
            entry["object"] != subject):
        differ("object", subject, entry["object"],
               "the entry names another participant than the statement")
    details = entry["details"]
    for name, want in _expected_details(signed).items():
        if name not in details and name not in ("statement_hash", "chain", "seq"):
            continue
        have = details.get(name)
        if have != want or type(have) is not type(want):
            differ(f"details.{name}", want, have,
                   "the entry's details disagree with the statement it carries")
    fingerprint = details.get("fingerprint")
    bundle = bundle_json(signed)
    if fingerprint is not None and bundle is not None:
        want = _bundle_fingerprint(bundle)
        if want is not None and fingerprint != want:
            differ("details.fingerprint", want, fingerprint,
                   "the entry's fingerprint is not that of the keys in the statement")
    return problems


def _bundle_fingerprint(bundle: Mapping[str, Any]) -> str | None:
    try:
        return bundle_from_json_obj(dict(bundle)).fingerprint
    except BundleError:
        return None


def check_carried(entry: Mapping[str, Any]) -> tuple[SignedStatement | None, list[Problem]]:
    """Return the statement an entry carries (None: none or unreadable) and its problems."""
    found = read_statement(entry["details"])
    if isinstance(found, Problem):
        return None, [found]
    if found is None:
        return None, []
    return found, statement_mismatches(entry, found)


def encode_statement(signed: SignedStatement) -> str:
    """Return the ``statement`` detail for ``signed`` (what the server logs)."""
    return base64.b64encode(signed.encode()).decode("ascii")
