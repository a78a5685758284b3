"""One conformance suite for every metadata store (STYLE.md item 29): sqlite and postgres."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from exchange.storage.errors import (
    AlreadyExists,
    InvalidValue,
    NotFound,
    ReplayedNonce,
    UploadOffsetMismatch,
    ValueTooLarge,
)
from exchange.storage.metadata import (
    MAX_MANIFEST_BYTES,
    MAX_SMALL_BLOB_BYTES,
    Case,
    Envelope,
    EvidenceRecord,
    KeyEpoch,
    Membership,
    MetadataStore,
    Participant,
    ParticipantStatus,
    Transaction,
    UploadSession,
)
from tests.unit.storage.helpers import Backend, entry_for, run, sha

BLOB = sha(b"ciphertext")


def participant(pid: str = "p-alice", fingerprint: str = "fp-alice") -> Participant:
    return Participant(
        participant_id=pid, role="prosecutor", organisation="Parquet de Paris", country="FR",
        display_name="Alice Ä.", signing_key=b"\x01" * 32, age_recipient="age1qqq",
        fingerprint=fingerprint, status=ParticipantStatus.ACTIVE, enrolled_at=100,
        enrolment_audit_index=0,
    )


CASE = Case(case_id="case-1", metadata=b"\x00encrypted\xff", created_by="p-alice", created_at=200)
EPOCH = KeyEpoch(case_id="case-1", epoch=1, recipient="age1epoch", created_by="p-alice",
                 created_at=201)


def evidence(eid: str = "ev-1", audit_index: int = 0) -> EvidenceRecord:
    return EvidenceRecord(
        evidence_id=eid, case_id="case-1", blob_id=BLOB, ciphertext_size=1234,
        sealed_manifest=b"age-manifest", uploader="p-alice", epoch=1, committed_at=300,
        audit_index=audit_index,
    )


async def seed(tx: Transaction) -> None:
    await tx.add_participant(participant())
    await tx.add_participant(participant("p-bob", "fp-bob"))
    await tx.create_case(CASE)
    await tx.add_member(Membership(case_id="case-1", participant_id="p-alice", role="owner",
                                   added_at=200))
    await tx.add_key_epoch(EPOCH)


async def snapshot(store: MetadataStore) -> tuple[object, ...]:
    """Everything a test can observe, to assert that a refused call changed nothing."""
    async with store.transaction("snapshot") as tx:
        participants = await tx.list_participants()
        cases = await tx.list_cases_for("p-alice")
        members = await tx.list_members("case-1", include_removed=True)
        ev = await tx.list_evidence("case-1")
        uploads = await tx.expired_upload_sessions(2**62)
    return participants, cases, members, ev, uploads, await store.root_hash()


def test_participants_round_trip(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
            async with store.transaction() as tx:
                assert await tx.get_participant("p-alice") == participant()
                assert await tx.get_participant_by_fingerprint("fp-bob") == participant(
                    "p-bob", "fp-bob")
                await tx.set_participant_status("p-bob", ParticipantStatus.SUSPENDED)
                bob = await tx.get_participant("p-bob")
                assert bob.status is ParticipantStatus.SUSPENDED
                assert [p.participant_id for p in await tx.list_participants()] == [
                    "p-alice", "p-bob"]

    run(body())


def test_rejects_duplicate_participant_id_and_fingerprint(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
            before = await snapshot(store)
            async with store.transaction() as tx:
                with pytest.raises(AlreadyExists):
                    await tx.add_participant(participant("p-alice", "fp-new"))
                with pytest.raises(AlreadyExists):
                    await tx.add_participant(participant("p-new", "fp-alice"))
                # the transaction stays usable after a refused call
                assert (await tx.get_participant("p-alice")).fingerprint == "fp-alice"
            assert await snapshot(store) == before

    run(body())


def test_unknown_ids_raise_not_found(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
            before = await snapshot(store)
            async with store.transaction() as tx:
                calls = [
                    tx.get_participant("nobody"),
                    tx.get_participant_by_fingerprint("fp-nobody"),
                    tx.set_participant_status("nobody", ParticipantStatus.REVOKED),
                    tx.get_case("no-case"),
                    tx.create_case(replace(CASE, case_id="case-2", created_by="nobody")),
                    tx.add_member(Membership(case_id="no-case", participant_id="p-bob",
                                             role="r", added_at=1)),
                    tx.add_member(Membership(case_id="case-1", participant_id="nobody",
                                             role="r", added_at=1)),
                    tx.remove_member("case-1", "p-bob", 5),
                    tx.get_membership("case-1", "p-bob"),
                    tx.list_members("no-case"),
                    tx.get_key_epoch("case-1", 9),
                    tx.latest_key_epoch("no-case"),
                    tx.add_key_epoch(replace(EPOCH, case_id="no-case")),
                    tx.put_envelope(Envelope(case_id="case-1", epoch=9, participant_id="p-bob",
                                             data=b"x")),
                    tx.put_envelope(Envelope(case_id="case-1", epoch=1, participant_id="nobody",
                                             data=b"x")),
                    tx.get_envelope("case-1", 1, "p-bob"),
                    tx.add_evidence(replace(evidence(), epoch=9)),
                    tx.add_evidence(replace(evidence(), uploader="nobody")),
                    tx.get_evidence("no-ev"),
                    tx.list_evidence("no-case"),
                    tx.get_upload_session("no-upload"),
                    tx.advance_upload_session("no-upload", 0, 1),
                    tx.delete_upload_session("no-upload"),
                    tx.create_upload_session(UploadSession(
                        upload_id="u-1", participant_id="nobody", case_id="case-1", length=1,
                        offset=0, expires_at=1)),
                ]
                for call in calls:
                    with pytest.raises(NotFound):
                        await call
            assert await snapshot(store) == before

    run(body())


def test_cases_members_epochs_envelopes(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
                await tx.add_member(Membership(case_id="case-1", participant_id="p-bob",
                                               role="reader", added_at=210))
                await tx.put_envelope(Envelope(case_id="case-1", epoch=1,
                                               participant_id="p-bob", data=b"\x00env"))
            async with store.transaction() as tx:
                assert await tx.get_case("case-1") == CASE
                assert [c.case_id for c in await tx.list_cases_for("p-bob")] == ["case-1"]
                assert (await tx.get_membership("case-1", "p-bob")).role == "reader"
                with pytest.raises(AlreadyExists):
                    await tx.add_member(Membership(case_id="case-1", participant_id="p-bob",
                                                   role="reader", added_at=211))
                await tx.remove_member("case-1", "p-bob", 220)
                assert await tx.list_cases_for("p-bob") == []
                assert [m.participant_id for m in await tx.list_members("case-1")] == ["p-alice"]
                everyone = await tx.list_members("case-1", include_removed=True)
                assert [(m.participant_id, m.removed_at) for m in everyone] == [
                    ("p-alice", None), ("p-bob", 220)]
                # re-adding after removal is a new membership
                await tx.add_member(Membership(case_id="case-1", participant_id="p-bob",
                                               role="reader", added_at=230))
                await tx.add_key_epoch(replace(EPOCH, epoch=2, recipient="age1two"))
                assert (await tx.latest_key_epoch("case-1")).recipient == "age1two"
                assert await tx.get_key_epoch("case-1", 1) == EPOCH
                with pytest.raises(AlreadyExists):
                    await tx.add_key_epoch(EPOCH)
                env = await tx.get_envelope("case-1", 1, "p-bob")
                assert env.data == b"\x00env"
                with pytest.raises(AlreadyExists):
                    await tx.put_envelope(env)
                with pytest.raises(AlreadyExists):
                    await tx.create_case(CASE)

    run(body())


def test_evidence_records(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
                appended = await tx.append_audit(entry_for("ev-1", action="evidence.commit"))
                await tx.add_evidence(evidence(audit_index=appended.index))
            async with store.transaction() as tx:
                assert await tx.get_evidence("ev-1") == evidence()
                with pytest.raises(AlreadyExists):
                    await tx.add_evidence(evidence())
                await tx.add_evidence(replace(evidence("ev-2"), committed_at=301))
                assert [e.evidence_id for e in await tx.list_evidence("case-1")] == [
                    "ev-1", "ev-2"]

    run(body())


def test_upload_sessions(backend: Backend) -> None:
    session = UploadSession(upload_id="u-1", participant_id="p-alice", case_id="case-1",
                            length=100, offset=0, expires_at=500, metadata=b"meta")

    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
                await tx.create_upload_session(session)
                await tx.create_upload_session(replace(session, upload_id="u-2", expires_at=900))
            async with store.transaction() as tx:
                with pytest.raises(AlreadyExists):
                    await tx.create_upload_session(session)
                await tx.advance_upload_session("u-1", 0, 60)
                with pytest.raises(UploadOffsetMismatch) as mismatch:
                    await tx.advance_upload_session("u-1", 0, 70)
                assert (mismatch.value.expected, mismatch.value.found) == (60, 0)
                with pytest.raises(ValueTooLarge):
                    await tx.advance_upload_session("u-1", 60, 101)
                with pytest.raises(InvalidValue):
                    await tx.advance_upload_session("u-1", 60, 59)
                assert (await tx.get_upload_session("u-1")).offset == 60
                assert [s.upload_id for s in await tx.expired_upload_sessions(500)] == ["u-1"]
                await tx.delete_upload_session("u-1")
                with pytest.raises(NotFound):
                    await tx.get_upload_session("u-1")
                assert await tx.get_upload_session("u-2") == replace(
                    session, upload_id="u-2", expires_at=900)

    run(body())


def test_nonce_replay_is_refused(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await tx.record_nonce("key-1", "n-1", 100)
                await tx.record_nonce("key-2", "n-1", 100)  # nonces are per key
                await tx.record_nonce("key-1", "n-2", 200)
            async with store.transaction() as tx:
                with pytest.raises(ReplayedNonce):
                    await tx.record_nonce("key-1", "n-1", 300)
                assert await tx.purge_nonces(100) == 2
                await tx.record_nonce("key-1", "n-1", 300)

    run(body())


def test_nonce_replay_seen_by_a_second_store(backend: Backend) -> None:
    """Two stores on one database (two server processes' view) share replay protection."""
    async def body() -> None:
        async with backend.open() as first, backend.open() as second:
            async with first.transaction() as tx:
                await tx.record_nonce("key-1", "n-1", 100)
            async with second.transaction() as tx:
                with pytest.raises(ReplayedNonce):
                    await tx.record_nonce("key-1", "n-1", 100)

    run(body())


def test_nonces_spent_outside_a_unit_are_the_same_nonces(backend: Backend) -> None:
    """``store.record_nonce`` (authentication outside the group commit) and a unit's
    ``record_nonce`` share one table: a nonce spent by either is refused by both, and
    of many concurrent spends of one nonce exactly one succeeds."""
    async def body() -> None:
        async with backend.open() as store:
            await store.record_nonce("key-1", "n-1", 100)
            async with store.transaction() as tx:
                with pytest.raises(ReplayedNonce):
                    await tx.record_nonce("key-1", "n-1", 100)
                await tx.record_nonce("key-1", "n-2", 100)
            with pytest.raises(ReplayedNonce):
                await store.record_nonce("key-1", "n-2", 100)
            await store.record_nonce("key-2", "n-2", 100)  # nonces are per key

            async def spend() -> bool:
                try:
                    await store.record_nonce("key-1", "race", 100)
                except ReplayedNonce:
                    return False
                return True

            outcomes = await asyncio.gather(*(spend() for _ in range(12)))
            assert outcomes.count(True) == 1

    run(body())


def test_participant_outside_a_unit_is_the_committed_one(backend: Backend) -> None:
    """``store.get_participant`` reads committed state: a unit still open is not seen."""
    async def body() -> None:
        async with backend.open() as store:
            with pytest.raises(NotFound):
                await store.get_participant("p-alice")
            async with store.transaction() as tx:
                await tx.add_participant(participant())
                with pytest.raises(NotFound):
                    await store.get_participant("p-alice")
            assert await store.get_participant("p-alice") == participant()
            async with store.transaction() as tx:
                await tx.set_participant_status("p-alice", ParticipantStatus.SUSPENDED)
                assert (await store.get_participant("p-alice")).status is \
                    ParticipantStatus.ACTIVE
            assert (await store.get_participant("p-alice")).status is \
                ParticipantStatus.SUSPENDED

    run(body())


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: replace(participant(), display_name="x" * 257), ValueTooLarge),
        (lambda: replace(participant(), participant_id="x" * 129), ValueTooLarge),
        (lambda: replace(participant(), participant_id="has space"), InvalidValue),
        (lambda: replace(participant(), participant_id=""), InvalidValue),
        (lambda: replace(participant(), organisation="nul\x00"), InvalidValue),
        (lambda: replace(participant(), enrolled_at=-1), InvalidValue),
        (lambda: replace(participant(), enrolled_at=2**63), InvalidValue),
        (lambda: replace(participant(), signing_key="text"), TypeError),
        (lambda: replace(CASE, metadata=b"x" * (MAX_SMALL_BLOB_BYTES + 1)), ValueTooLarge),
        (lambda: replace(evidence(), sealed_manifest=b"x" * (MAX_MANIFEST_BYTES + 1)),
         ValueTooLarge),
        (lambda: replace(evidence(), blob_id="../../etc/passwd"), InvalidValue),
        (lambda: replace(EPOCH, epoch=2**31), InvalidValue),
        (lambda: UploadSession(upload_id="u", participant_id="p", case_id="c", length=1,
                               offset=2, expires_at=0), InvalidValue),
    ],
)
def test_rejects_malformed_records(make: object, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()  # type: ignore[operator]


def test_oversized_values_are_refused_by_operations(backend: Backend) -> None:
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
            before = await snapshot(store)
            async with store.transaction() as tx:
                with pytest.raises(ValueTooLarge):
                    await tx.record_nonce("k", "n" * 10_000, 1)
                with pytest.raises(ValueTooLarge):
                    await tx.get_case("c" * 1000)
                with pytest.raises(TypeError):
                    await tx.add_participant("not a participant")  # type: ignore[arg-type]
            assert await snapshot(store) == before

    run(body())


def test_failed_block_changes_nothing(backend: Backend) -> None:
    """An exception escaping the block undoes its writes and its audit entries."""
    async def body() -> None:
        async with backend.open() as store:
            async with store.transaction() as tx:
                await seed(tx)
            before = await snapshot(store)
            with pytest.raises(RuntimeError, match="boom"):
                async with store.transaction() as tx:
                    await tx.add_participant(participant("p-carol", "fp-carol"))
                    await tx.append_audit(entry_for("p-carol", action="participant.enrol"))
                    raise RuntimeError("boom")
            assert await snapshot(store) == before
            async with store.transaction() as tx:
                with pytest.raises(NotFound):
                    await tx.get_participant("p-carol")

    run(body())
