"""Log-key transitions: a new key counts only through a note both keys signed."""

from __future__ import annotations

import pytest

from exchange.audit.checkpoint import (
    KEY_TRANSITION_PREFIX,
    Checkpoint,
    CheckpointError,
    key_chain,
    open_transition,
    open_under_any,
    sign_checkpoint,
    sign_transition,
)
from exchange.audit.note import Ed25519Signer, NoteError, sign_note
from exchange.audit.tree import empty_root

ORIGIN = "exchange.test/log"
OLD = Ed25519Signer(ORIGIN, bytes(range(32)))
NEW = Ed25519Signer(ORIGIN, bytes(range(1, 33)))
OTHER = Ed25519Signer(ORIGIN, bytes(range(2, 34)))
TREE = Checkpoint(origin=ORIGIN, size=0, root=empty_root())


def test_a_dual_signed_transition_introduces_the_new_key() -> None:
    note = sign_transition(TREE, OLD, NEW, new_vkey=NEW.verifier().vkey())
    checkpoint, new = open_transition(note, OLD.verifier())
    assert checkpoint.size == 0 and new.vkey() == NEW.verifier().vkey()
    keys = key_chain(OLD.verifier(), [note])
    assert [k.vkey() for k in keys] == [OLD.verifier().vkey(), NEW.verifier().vkey()]
    # Checkpoints of either time open under the chain; the newest key is tried first.
    assert open_under_any(sign_checkpoint(TREE, OLD), keys) == TREE
    assert open_under_any(sign_checkpoint(TREE, NEW), keys) == TREE
    with pytest.raises((CheckpointError, NoteError)):  # as open_checkpoint raises
        open_under_any(sign_checkpoint(TREE, OTHER), keys)


def _named(vkey: str) -> str:
    return Checkpoint(origin=ORIGIN, size=0, root=empty_root(),
                      extensions=(KEY_TRANSITION_PREFIX + vkey,)).text()


@pytest.mark.parametrize("signers, current", [
    ([OLD], OLD),  # the new key never signed: nobody shows they hold it
    ([NEW], OLD),  # the old key never vouched for it (a swapped log.key)
    ([OTHER, NEW], OLD),  # vouched for by a key that is not the one in force
    ([OLD, NEW], NEW),  # replayed against the key it introduced
])
def test_anything_short_of_both_keys_is_refused(signers: list[Ed25519Signer],
                                                current: Ed25519Signer) -> None:
    note = sign_note(_named(NEW.verifier().vkey()), signers)
    with pytest.raises(CheckpointError):
        open_transition(note, current.verifier())


def test_a_transition_names_exactly_one_key() -> None:
    with pytest.raises(CheckpointError):
        open_transition(sign_checkpoint(TREE, OLD), OLD.verifier())
