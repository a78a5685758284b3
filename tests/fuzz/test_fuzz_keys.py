"""Hostile-input fuzzing of key files: ``exchange-keystore/v1`` documents
(``open_keystore``, ``read_public_bundle``; cheap Argon2 parameters) and public
bundles (``parse_bundle``).

Only :class:`KeystoreError` / :class:`BundleError` may escape; a damaged or
altered keystore never opens to different keys; hostile Argon2 parameters are
refused before Argon2 runs; accepted bundles round-trip.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from exchange.crypto.jcs import CanonicalizationError, canonicalize
from exchange.crypto.keys import BundleError, ParticipantIdentity, PublicBundle, parse_bundle
from exchange.crypto.keystore import (
    MAX_MEMORY_KIB,
    MAX_PARALLELISM,
    MAX_TIME_COST,
    Argon2Params,
    KeystoreCorrupt,
    KeystoreError,
    open_keystore,
    read_public_bundle,
    seal_keystore,
)
from tests.fuzz._fuzz import FUZZ, FUZZ_SLOW, hostile_text, mutated, only

CHEAP = Argon2Params(time_cost=1, memory_kib=8, parallelism=1)
PASSPHRASE = "correct horse battery staple"
IDENTITY = ParticipantIdentity.generate("prosecutor-1", "Prosecutor One")
PQ_IDENTITY = ParticipantIdentity.generate("centre.hq", pq=True)
KEYSTORES = (seal_keystore(IDENTITY, PASSPHRASE, params=CHEAP),
             seal_keystore(PQ_IDENTITY, PASSPHRASE, params=CHEAP))
BUNDLES = (IDENTITY.public_bundle().encode(), PQ_IDENTITY.public_bundle().encode())
BUNDLE_OBJECTS = {b.fingerprint: b for b in (IDENTITY.public_bundle(), PQ_IDENTITY.public_bundle())}

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), hostile_text,
                          st.sampled_from([2**64, -1, 0, 10**30, "AAAA", "argon2id", 19]))
_json_values = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=3)
                            | st.dictionaries(hostile_text, inner, max_size=3), max_leaves=6)


def _open(data: bytes) -> None:
    identity = only(KeystoreError, open_keystore, data, PASSPHRASE)
    if identity is not None:
        # A keystore that opens holds exactly the keys that were sealed.
        assert identity.public_bundle().fingerprint in BUNDLE_OBJECTS
        original = IDENTITY if identity.id == IDENTITY.id else PQ_IDENTITY
        assert bytes(identity.signing_key) == bytes(original.signing_key)
        assert identity.age_identity.to_string() == original.age_identity.to_string()
    bundle = only(KeystoreError, read_public_bundle, data)
    assert identity is None or bundle == identity.public_bundle()


def _with_checksum(doc: dict[str, Any]) -> bytes:
    """Re-seal the unkeyed checksum so a change reaches the checks behind it."""
    try:
        body = {k: v for k, v in doc.items() if k != "checksum"}
        doc["checksum"] = hashlib.sha256(canonicalize(body)).hexdigest()
    except (CanonicalizationError, TypeError, ValueError):
        pass
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


@FUZZ
@given(data=st.data())
def test_keystore_mutations(data: st.DataObject) -> None:
    valid = data.draw(st.sampled_from(KEYSTORES))
    _open(data.draw(mutated(valid, KEYSTORES)))


@FUZZ_SLOW
@given(data=st.data())
def test_keystore_structured_near_misses_with_a_valid_checksum(data: st.DataObject) -> None:
    doc = json.loads(data.draw(st.sampled_from(KEYSTORES)))
    section = data.draw(st.sampled_from([None, "kdf", "aead", "public"]))
    target = doc if section is None else doc[section]
    key = data.draw(st.sampled_from(sorted(target)) | hostile_text)
    if data.draw(st.booleans()):
        target[key] = data.draw(_json_values)
    else:
        target.pop(key, None)
    _open(_with_checksum(doc))


@FUZZ
@given(time_cost=st.integers(-1, 2**40), memory_kib=st.integers(-1, 2**40),
       parallelism=st.integers(-1, 2**24))
def test_hostile_argon2_parameters_are_refused_before_argon2_runs(
    time_cost: int, memory_kib: int, parallelism: int
) -> None:
    doc = json.loads(KEYSTORES[0])
    doc["kdf"].update(time_cost=time_cost, memory_kib=memory_kib, parallelism=parallelism)
    in_bounds = (1 <= time_cost <= MAX_TIME_COST and 1 <= parallelism <= MAX_PARALLELISM
                 and 8 * parallelism <= memory_kib <= MAX_MEMORY_KIB)
    if not in_bounds:  # in-bounds costs are legitimate (up to a few seconds): not run here
        # Refused before Argon2 runs: only() bounds the CPU time of the whole call.
        assert only(KeystoreCorrupt, open_keystore, _with_checksum(doc), PASSPHRASE) is None


@FUZZ
@given(data=st.one_of(st.binary(max_size=300), hostile_text.map(lambda t: t.encode("utf-8",
                                                                                   "surrogatepass")),
                      st.sampled_from([b"[" * 100_000, b"{}" + b" " * 300_000, b"1" * 5000,
                                       b'{"format":' * 30_000])))
def test_keystore_and_bundle_random_bytes(data: bytes) -> None:
    _open(data)
    only(BundleError, parse_bundle, data)


def _check_bundle(data: bytes) -> None:
    bundle = only(BundleError, parse_bundle, data)
    if bundle is None:
        return
    assert parse_bundle(bundle.encode()) == bundle
    if b'"fingerprints"' in data:
        # Stated fingerprints pin the keys: changed keys are never accepted with them.
        assert bundle.fingerprint in BUNDLE_OBJECTS


@FUZZ
@given(data=st.data())
def test_bundle_mutations(data: st.DataObject) -> None:
    _check_bundle(data.draw(mutated(data.draw(st.sampled_from(BUNDLES)), BUNDLES)))


@FUZZ
@given(data=st.data())
def test_bundle_structured_near_misses(data: st.DataObject) -> None:
    obj = json.loads(data.draw(st.sampled_from(BUNDLES)))
    key = data.draw(st.sampled_from(sorted(obj)) | hostile_text)
    if data.draw(st.booleans()):
        obj[key] = data.draw(_json_values)
    else:
        obj.pop(key, None)
    _check_bundle(json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass"))


def test_valid_files_round_trip() -> None:
    for data in KEYSTORES:
        _open(data)
        assert open_keystore(data, PASSPHRASE).public_bundle() == read_public_bundle(data)
    for data in BUNDLES:
        assert parse_bundle(data).encode() == data
    assert isinstance(parse_bundle(BUNDLES[1]), PublicBundle)
    assert only(KeystoreCorrupt, open_keystore, KEYSTORES[0][:-2], PASSPHRASE) is None
