"""Participant rows are validated once per distinct row value, and a changed row is seen at once.

``exchange.storage._sqltx._participant`` hands back the Participant built from
an identical row earlier (every signed request reads its signer's row). The
cache is keyed by the whole row, so suspension or a new key is a new entry:
these tests hold it to that.
"""

from __future__ import annotations

import pytest

from exchange.storage._sqltx import _participant, _participants_seen
from exchange.storage.errors import InvalidValue
from exchange.storage.metadata import ParticipantStatus

ROW = ("p-alice", "prosecutor", "Eurojust", "NL", "Alice", b"k" * 32, "age1alice",
       "FPR-ALICE", "active", 1_800_000_000, 3)


def test_an_identical_row_gives_back_the_same_participant() -> None:
    first = _participant(ROW)
    assert _participant(list(ROW)) is first  # drivers give tuples, records or lists


def test_a_changed_row_is_read_afresh() -> None:
    active = _participant(ROW)
    suspended = _participant((*ROW[:8], "suspended", *ROW[9:]))
    assert active.status is ParticipantStatus.ACTIVE
    assert suspended.status is ParticipantStatus.SUSPENDED
    rekeyed = _participant((*ROW[:5], b"n" * 32, *ROW[6:]))
    assert rekeyed.signing_key == b"n" * 32


def test_an_invalid_row_is_refused_every_time() -> None:
    bad = ("p alice", *ROW[1:])  # a space: not an identifier
    for _ in range(2):
        with pytest.raises(InvalidValue):
            _participant(bad)
    assert tuple(bad) not in _participants_seen


def test_an_unhashable_row_value_is_built_without_the_cache() -> None:
    row = (*ROW[:5], bytearray(b"k" * 32), *ROW[6:])
    assert _participant(row).signing_key == b"k" * 32
