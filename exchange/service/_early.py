"""RFC 9421 signature verification ahead of the transaction, confirmed inside it.

Why: ``Service.perform`` authenticates inside its unit of the group commit,
and a batch's units run one after another on the event loop. Parsing and
verifying a signature is most of a small request's CPU time; done before the
unit is queued, it overlaps the previous batch's COMMIT (an fsync) instead of
lengthening the batch.

The early check needs the signer's public key before the transaction reads
it, so it uses a hint: the signing key that the last transaction to look the
participant up found (:class:`KeyHints`, public keys only, bounded). Nothing
is trusted on the strength of the hint: inside the transaction the
participant row is read as before, and the early result counts only when the
key it was verified with is byte-identical to the row's key (otherwise, say
after a key change, the signature is verified again with the row's key). The
participant's status, the body digest and the nonce are still checked in the
transaction, and so is expiry (the early check may have run a few
milliseconds earlier).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from exchange.errors import CryptoError
from exchange.wire.httpsig import SignatureInputMember, VerifiedSignature, select_signature

__all__ = ["MAX_KEY_HINTS", "EarlyCheck", "KeyHints", "early_check"]

#: Participants whose signing key is remembered (32 bytes each): the active population.
MAX_KEY_HINTS = 4096

Selected = tuple[SignatureInputMember, bytes]
#: ``verify(selected, keyid, key)``: RFC 9421 verification of the request with ``key``.
Verifier = Callable[[Selected, str, bytes], VerifiedSignature]


class KeyHints:
    """keyid → the signing key last read from the store for it (bounded, oldest out first)."""

    def __init__(self, max_entries: int = MAX_KEY_HINTS) -> None:
        self._max_entries = max_entries
        self._keys: dict[str, bytes] = {}

    def __repr__(self) -> str:
        return f"KeyHints(entries={len(self._keys)})"

    def get(self, keyid: str) -> bytes | None:
        """Return the remembered key of ``keyid``, if any (a hint, never proof)."""
        return self._keys.get(keyid)

    def remember(self, keyid: str, key: bytes) -> None:
        """Note the key a transaction just read for ``keyid``."""
        if keyid not in self._keys and len(self._keys) >= self._max_entries:
            del self._keys[next(iter(self._keys))]
        self._keys[keyid] = key


@dataclass(frozen=True, slots=True)
class EarlyCheck:
    """The outcome of :func:`early_check` for one request.

    ``key`` is the key the signature was verified with (None: not attempted,
    no hint); then exactly one of ``verified`` and ``error`` is set.
    """

    selected: Selected
    keyid: str | None
    key: bytes | None = None
    verified: VerifiedSignature | None = None
    error: CryptoError | None = None

    def result_for(self, key: bytes) -> VerifiedSignature | None:
        """Return the early verification if it used exactly ``key``; raise its error if it failed.

        None means the early check did not use this key: verify in the transaction.
        """
        if self.key is None or self.key != key:
            return None
        if self.error is not None:
            raise self.error
        return self.verified


def early_check(
    headers: tuple[tuple[str, str], ...], hints: KeyHints, verify: Verifier
) -> EarlyCheck | None:
    """Select the request's signature and verify it with the hinted key, if there is one.

    Returns None when the signature fields do not even parse: the transaction
    repeats the selection and refuses the request with the same error.
    """
    try:
        selected = select_signature(headers)
    except CryptoError:
        return None
    keyid = selected[0].params.keyid
    key = None if keyid is None else hints.get(keyid)
    if keyid is None or key is None:
        return EarlyCheck(selected, keyid)
    try:
        return EarlyCheck(selected, keyid, key, verified=verify(selected, keyid, key))
    except CryptoError as err:
        return EarlyCheck(selected, keyid, key, error=err)
