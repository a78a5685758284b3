"""Early signature checks: a hinted key is used only when the transaction reads the same key."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import pytest

from exchange.config import ServerConfig
from exchange.crypto.keys import ParticipantIdentity
from exchange.service import cases
from exchange.service._early import KeyHints, early_check
from exchange.service.core import Service, SignedRequest
from exchange.service.errors import AuditedRefusal, ParticipantSuspended
from exchange.storage.fs_blobs import FsBlobStore
from exchange.storage.metadata import Participant, ParticipantStatus
from exchange.storage.sqlite_store import SqliteStore
from exchange.wire.httpsig import SignatureExpired, SignatureInvalid, sign_request

URL = "http://exchange.test"


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _request(identity: ParticipantIdentity, clock: _Clock) -> SignedRequest:
    now = int(clock())
    signature_input, signature = sign_request(
        method="GET", target_uri=URL + "/v1/cases", headers={},
        covered_components=["@method", "@target-uri"], key=identity.signing_key, keyid="p-1",
        created=now, expires=now + 60, nonce=secrets.token_urlsafe(18),
    )
    return SignedRequest(method="GET", target_uri=URL + "/v1/cases",
                         headers=(("Signature-Input", signature_input), ("Signature", signature)),
                         required_components=frozenset({"@method", "@target-uri"}))


def _participant(identity: ParticipantIdentity) -> Participant:
    bundle = identity.public_bundle()
    return Participant(
        participant_id="p-1", role="prosecutor", organisation="o", country="NL",
        display_name="p", signing_key=bytes(identity.signing_key.verify_key),
        age_recipient=bundle.recipient().to_string(), fingerprint=bundle.fingerprint,
        status=ParticipantStatus.ACTIVE, enrolled_at=1, enrolment_audit_index=None,
    )


def test_key_hints_are_bounded_oldest_out() -> None:
    hints = KeyHints(max_entries=2)
    hints.remember("a", b"1")
    hints.remember("b", b"2")
    hints.remember("a", b"3")  # an update does not evict
    assert (hints.get("a"), hints.get("b")) == (b"3", b"2")
    hints.remember("c", b"4")
    assert hints.get("a") is None and hints.get("b") == b"2" and hints.get("c") == b"4"


def test_early_check_records_which_key_it_used() -> None:
    clock = _Clock()
    real, other = ParticipantIdentity.generate("p-1"), ParticipantIdentity.generate("p-1")
    request = _request(real, clock)
    service = Service(store=None, blobs=None, config=ServerConfig(  # type: ignore[arg-type]
        data_dir=Path("/nonexistent"), origin="o"), clock=clock)
    hints = KeyHints()

    def verify(selected: object, keyid: str, key: bytes) -> object:
        return service._verify_with(request, selected, keyid, key)  # type: ignore[arg-type]

    assert early_check(request.headers, hints, verify).key is None  # type: ignore[arg-type,union-attr]
    assert early_check((("Signature", "x"),), hints, verify) is None  # type: ignore[arg-type]
    real_key, other_key = bytes(real.signing_key.verify_key), bytes(other.signing_key.verify_key)
    hints.remember("p-1", real_key)
    good = early_check(request.headers, hints, verify)  # type: ignore[arg-type]
    assert good is not None and good.result_for(real_key) is not None
    assert good.result_for(other_key) is None  # another key in the row: verify again
    hints.remember("p-1", other_key)
    bad = early_check(request.headers, hints, verify)  # type: ignore[arg-type]
    assert bad is not None and bad.result_for(real_key) is None
    with pytest.raises(SignatureInvalid):
        bad.result_for(other_key)


def test_service_trusts_only_the_key_it_reads(tmp_path: Path) -> None:
    async def scenario() -> None:
        clock = _Clock()
        old, new = ParticipantIdentity.generate("p-1"), ParticipantIdentity.generate("p-1")
        store = await SqliteStore.open(tmp_path, clock=clock)
        service = Service(store=store, blobs=FsBlobStore(tmp_path),
                          config=ServerConfig(data_dir=tmp_path, origin="o"), clock=clock)

        async def list_cases(identity: ParticipantIdentity) -> int:
            done = await service.perform(_request(identity, clock), "case.list",
                                         cases.list_cases_op())
            return done.audit_index

        try:
            async with store.transaction("seed") as tx:
                await tx.add_participant(_participant(old))
            await list_cases(old)  # first request: no hint, verified in the transaction
            assert service._key_hints.get("p-1") == bytes(old.signing_key.verify_key)
            await list_cases(old)  # verified early with the hint, confirmed in the transaction

            bundle = new.public_bundle()
            async with store.transaction("rekey") as tx:
                await tx.change_participant_keys(
                    "p-1", display_name="p", signing_key=bytes(new.signing_key.verify_key),
                    age_recipient=bundle.recipient().to_string(),
                    fingerprint=bundle.fingerprint)
            # The hint still holds the old key: the old key's signature verifies early,
            # yet the transaction reads the new key and refuses it (not audited: it does
            # not verify under the key of record, so it is nobody's access).
            size = await store.tree_size()
            with pytest.raises(SignatureInvalid):
                await list_cases(old)
            assert await store.tree_size() == size
            assert service.unauthenticated.by_reason["signature-invalid"] == 1
            await list_cases(new)  # hint (old key) disagrees with the row: verified again

            # Expiry is checked again in the transaction even when verified early.
            late = _request(new, clock)
            early = service._early(late)
            assert early is not None and early.verified is not None
            clock.now += 3600
            async with store.transaction("late") as tx:
                with pytest.raises(SignatureExpired):
                    await service._verify(tx, late, early)
            clock.now -= 3600

            async with store.transaction("suspend") as tx:
                await tx.set_participant_status("p-1", ParticipantStatus.SUSPENDED)
            with pytest.raises(AuditedRefusal) as refused:
                await list_cases(new)
            assert isinstance(refused.value.error, ParticipantSuspended)
        finally:
            await store.close()

    asyncio.run(scenario())
