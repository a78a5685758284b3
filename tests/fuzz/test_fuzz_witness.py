"""Hostile-input fuzzing of the witness: add-checkpoint bodies and witness policies.

Only :class:`WitnessProtocolError` (with one of the spec's status codes) may
escape the request parser and checker; a mutated valid request is cosigned
only if it still carries the very checkpoint the log signed. Policies raise
only :class:`PolicyError`, and an accepted policy re-encodes to what was read.
"""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from exchange.audit.witness_policy import PolicyError, WitnessPolicy, parse_policy
from exchange.witness.protocol import (
    Stored,
    WitnessProtocolError,
    check_extension,
    open_request,
    parse_request,
)
from tests.fuzz._fuzz import FUZZ, mutated, only
from tests.witness_harness import MemoryLog

LOG = MemoryLog()
LOG.append(*[bytes([i]) for i in range(9)])
REQUESTS = (LOG.request(0, 3), LOG.request(3, 9), LOG.request(5, 9), LOG.request(9, 9))
STORED = {0: Stored.nothing(), 3: Stored(size=3, root=LOG.root(3)),
          5: Stored(size=5, root=LOG.root(5)), 9: Stored(size=9, root=LOG.root(9))}
STATUSES = {400, 403, 404, 409, 422}


def _check(body: bytes) -> None:
    try:
        parsed = parse_request(body)
        checkpoint = open_request(parsed, {LOG.origin: [LOG.signer.verifier()]})
        check_extension(STORED.get(parsed.old, Stored.nothing()), parsed, checkpoint)
    except WitnessProtocolError as err:
        assert err.http_status in STATUSES
        assert len(str(err)) < 600
        return
    # Accepted: it must be exactly a checkpoint the log signed, extending the stored one.
    assert checkpoint.root == LOG.root(checkpoint.size)


@FUZZ
@given(data=st.data())
def test_add_checkpoint_mutations(data: st.DataObject) -> None:
    _check(data.draw(mutated(data.draw(st.sampled_from(REQUESTS)), REQUESTS)))


@FUZZ
@given(data=st.binary(max_size=400))
def test_add_checkpoint_random_bytes(data: bytes) -> None:
    _check(data)
    _check(b"old 0\n\n" + data)


_POLICY = json.dumps({"witnesses": [
    {"name": "w", "key": "w.test+912e09ce+BAOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4",
     "url": "https://w.test"}], "quorum": 1}).encode()


def test_policy_seed_is_valid() -> None:
    assert parse_policy(_POLICY).quorum == 1


@FUZZ
@given(data=st.data())
def test_policy_documents(data: st.DataObject) -> None:
    text = data.draw(mutated(_POLICY) | st.binary(max_size=200))
    policy = only(PolicyError, parse_policy, text)
    if policy is not None:
        assert isinstance(policy, WitnessPolicy)
        assert WitnessPolicy.from_json(json.loads(policy.encode())) == policy
