"""Deliveries from a verified log: recipients at upload time, resumed pulls, removals."""

from __future__ import annotations

import json

import pytest

from exchange.audit._statements import read_statement
from exchange.audit.deliveries import (
    DeliveryError,
    Upload,
    compute_deliveries,
    deliveries_from_log,
)
from exchange.audit.entry import parse_entry
from exchange.crypto.statement import SignedStatement
from tests.unit.audit.statementlog import person, standard


def _ranges(start: int, end: int) -> dict[str, int | str]:
    return {"ciphertext_sha256": "c" * 64, "start": start, "end": end}


def test_recipients_are_the_members_at_upload_and_resumed_pulls_count_once_whole() -> None:
    slog, pros, coord, _ = standard()
    coord2, late = person("coord2", "coordinator"), person("late", "coordinator")
    for who in (coord2, late):
        slog.enrol(who)
    slog.add_member(pros, "c1", coord2)
    commit = slog.commit(pros, "c1")
    evidence = json.loads(slog.log.entries[commit])["object"]
    slog.download(coord, "c1", evidence, details=_ranges(0, 4))
    done = slog.download(coord, "c1", evidence, details=_ranges(4, 9))
    slog.download(coord2, "c1", evidence, details=_ranges(0, 5))  # cut short
    slog.download(coord2, "c1", evidence, outcome="denied", reason="forbidden")
    slog.add_member(pros, "c1", late)  # joined after the upload
    late_pull = slog.download(late, "c1", evidence, details=_ranges(0, 9))
    removal = slog.remove_member(pros, "c1", coord2)
    assert slog.verify().ok

    (delivery,) = deliveries_from_log(slog.anchor, slog.log.entries, case_id="c1")
    assert (delivery.upload.evidence_id, delivery.upload.index) == (evidence, commit)
    by_id = {r.participant: r for r in delivery.recipients}
    assert sorted(by_id) == ["coord", "coord2"]  # the uploader is no recipient
    assert (by_id["coord"].pulled, by_id["coord"].pulled_index, by_id["coord"].downloads) == (
        True, done, 2)
    assert (by_id["coord2"].pulled, by_id["coord2"].downloads) == (False, 1)
    assert (by_id["coord2"].removed, by_id["coord2"].removed_index) == (True, removal)
    assert delivery.pending == ("coord2",)
    (other,) = delivery.others
    assert (other.participant, other.intended, other.pulled_index) == ("late", False, late_pull)
    assert deliveries_from_log(slog.anchor, slog.log.entries, case_id="another") == []


def test_an_unverified_upload_position_outside_its_signed_epoch_is_refused() -> None:
    slog, pros, _, _ = standard()
    slog.rotate(pros, "c1")  # epoch 2 from here on
    statements = []
    for data in slog.log.entries:
        entry = parse_entry(data)
        signed = read_statement(entry.details)
        if isinstance(signed, SignedStatement):
            statements.append((entry.index, signed))
    named = Upload(evidence_id="ev-x", case_id="c1", uploader="pros", index=len(
        slog.log.entries), time=None, epoch=1, ciphertext_size=9, position_verified=False)
    with pytest.raises(DeliveryError, match="not at its signed epoch 1"):
        compute_deliveries(slog.anchor, statements, [named], [])
    # The same upload, its position read from the log (a stale-epoch commit the verifier
    # names), is reported as it is.
    verified = Upload(evidence_id="ev-x", case_id="c1", uploader="pros", index=named.index,
                      time=None, epoch=1, ciphertext_size=9)
    (delivery,) = compute_deliveries(slog.anchor, statements, [verified], [])
    assert [r.participant for r in delivery.recipients] == ["coord"]
