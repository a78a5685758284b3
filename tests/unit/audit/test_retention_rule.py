"""The retention rule shared by the server's sweep and the verifier, and the policy's syntax."""

from __future__ import annotations

import pytest

from exchange.audit.retention import DAY_S, due_reason
from exchange.crypto.chains import ChainError, check_retention

MEMBERS = ("alice", "bob", "carol")


def due(policy: dict[str, object] | None, *, delivered: tuple[str, ...] = (),
        age_s: float = 0) -> str | None:
    return due_reason(policy, committed_at=1000.0, now=1000.0 + age_s, members=MEMBERS,
                      uploader="alice", delivered=delivered)


def test_until_delivered_waits_for_every_member_but_the_uploader() -> None:
    policy = {"retention": {"mode": "until-delivered"}}
    assert due(policy) is None
    assert due(policy, delivered=("bob",)) is None
    assert due(policy, delivered=("bob", "carol")) == "delivered"
    assert due({**policy, "legal_hold": True}, delivered=("bob", "carol")) is None
    # alone in the case: nothing was delivered to anyone, nothing is due
    assert due_reason(policy, committed_at=0, now=10**9, members=["alice"], uploader="alice",
                      delivered=[]) is None


def test_days_and_keep() -> None:
    policy = {"retention": {"mode": "days", "days": 2}}
    assert due(policy, age_s=2 * DAY_S - 1) is None
    assert due(policy, age_s=2 * DAY_S) == "retention-days"
    assert due({"retention": {"mode": "keep"}}, age_s=10**9, delivered=MEMBERS) is None
    assert due(None, age_s=10**9) is None


@pytest.mark.parametrize("policy", [
    {"retention": {"mode": "days"}}, {"retention": {"mode": "days", "days": 0}},
    {"retention": {"mode": "forever"}}, {"retention": {"mode": "keep", "days": 3}},
    {"legal_hold": "yes"}, {"retention": []},
])
def test_malformed_retention_is_refused(policy: dict[str, object]) -> None:
    with pytest.raises(ChainError) as caught:
        check_retention(policy)
    assert caught.value.rule == "malformed-body"


def test_wellformed_retention_passes() -> None:
    for policy in ({"retention": {"mode": "days", "days": 28}, "legal_hold": False},
                   {"retention": {"mode": "until-delivered"}}, {"legal_hold": True}, {}):
        check_retention(policy)
