"""Who may do what (issue 5 §3): small pure functions over roles and memberships.

``admin`` manages participants and reads no case content; ``prosecutor``
creates cases and manages the members and key epochs of cases it is an active
member of; ``coordinator`` works inside the cases it is an active member of;
``auditor`` reads the audit log and nothing of cases. Case membership decides
access to every case object: a removed member is refused everything in the
case, old envelopes included. Every function returns None or raises.
"""

from __future__ import annotations

import enum

from exchange.service.errors import Forbidden, InvalidRequest, NotAMember
from exchange.storage.metadata import Membership

__all__ = [
    "MEMBER_ROLES",
    "Role",
    "parse_role",
    "require_case_manager",
    "require_case_member",
    "require_role",
]


class Role(enum.StrEnum):
    """A participant's global role, fixed at enrolment."""

    ADMIN = "admin"
    PROSECUTOR = "prosecutor"
    COORDINATOR = "coordinator"
    AUDITOR = "auditor"


#: Roles that can belong to cases (admins and auditors never see case content).
MEMBER_ROLES = frozenset({Role.PROSECUTOR, Role.COORDINATOR})


def parse_role(value: object) -> Role:
    """Return the role named by ``value``; ``InvalidRequest`` for anything else."""
    try:
        return Role(str(value)) if isinstance(value, str) else Role("")
    except ValueError:
        raise InvalidRequest(
            f"role must be one of {sorted(r.value for r in Role)}, found {str(value)[:40]!r}"
        ) from None


def require_role(role: str, allowed: frozenset[Role] | set[Role], what: str) -> None:
    """Raise ``Forbidden`` unless ``role`` is one of ``allowed``."""
    if role not in {r.value for r in allowed}:
        names = sorted(r.value for r in allowed)
        raise Forbidden(f"{what} needs role {' or '.join(names)}, participant is {role[:40]!r}")


def require_case_member(role: str, membership: Membership | None, case_id: str) -> None:
    """Raise unless a case-capable participant holds an active membership of ``case_id``."""
    if role not in {r.value for r in MEMBER_ROLES}:
        raise Forbidden(f"role {role[:40]!r} has no access to case content")
    if membership is None or membership.removed_at is not None:
        raise NotAMember(f"participant is not an active member of case {case_id[:60]!r}")


def require_case_manager(role: str, membership: Membership | None, case_id: str) -> None:
    """Raise unless a prosecutor holds an active membership of ``case_id``."""
    require_case_member(role, membership, case_id)
    if role != Role.PROSECUTOR:
        raise Forbidden(
            f"managing members and keys of a case needs role prosecutor, found {role!r}"
        )
