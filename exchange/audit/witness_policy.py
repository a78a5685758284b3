"""Witness policy: which C2SP tlog-witness cosigners a checkpoint needs, and how many.

A policy names each witness (a label people recognise, its tlog-cosignature
Ed25519 verifier key, type 0x04, and the URL of its ``add-checkpoint``
prefix) and a quorum k. A checkpoint counts only when the log key signed it
and at least k of the named witnesses cosigned it. If the quorum is more
than half the witnesses, two inconsistent checkpoints can never both meet
it unless witnesses collude, since each witness cosigns only consistent
extensions of what it cosigned before.

JSON shape (also the witness section of a trust anchor)::

    {"witnesses": [{"name": "...", "key": "<verifier key>", "url": "..."}], "quorum": k}

Verification rules (signed-note): cosignature lines from keys the policy
does not name are ignored; a line from a named key whose signature fails
rejects the checkpoint (even if the quorum is met by others), because a
trusted key's bad signature means something is wrong. Cosignature
timestamps are not compared with a clock here (the spec's MAY); the caller
owns time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from exchange.audit.checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint
from exchange.audit.note import (
    CosignatureVerifier,
    NoteError,
    Verifier,
    parse_note,
    parse_verifier_key,
)

__all__ = [
    "MAX_WITNESSES",
    "PolicyError",
    "Witness",
    "WitnessPolicy",
    "WitnessQuorumError",
    "Witnessed",
    "cosignature_status",
    "parse_policy",
    "verify_witnessed",
]

#: More witnesses than this is a configuration mistake (and would near the note's 100 lines).
MAX_WITNESSES = 32
_MAX_POLICY_BYTES = 64 * 1024


class PolicyError(NoteError):
    """A witness policy document or value breaks a rule; the message names the field."""


class WitnessQuorumError(CheckpointError):
    """A checkpoint lacks its witness quorum, or a named witness's cosignature is invalid.

    ``missing`` and ``invalid`` name the witnesses (policy names) that did not
    cosign or whose cosignature failed; ``cosigned`` those that did.
    """

    def __init__(self, message: str, *, size: int, quorum: int, cosigned: tuple[str, ...],
                 missing: tuple[str, ...], invalid: tuple[str, ...]) -> None:
        super().__init__(message)
        self.size = size
        self.quorum = quorum
        self.cosigned = cosigned
        self.missing = missing
        self.invalid = invalid


def _check_url(url: str, where: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise PolicyError(f"{where}.url must be an absolute http(s) URL without query, "
                          f"found {url[:80]!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Witness:
    """One witness: a label, its cosignature verifier key (type 0x04) and its URL prefix."""

    name: str
    key: str
    url: str

    def __post_init__(self) -> None:
        for field_name in ("name", "key", "url"):
            if not isinstance(getattr(self, field_name), str):
                raise TypeError(f"witness {field_name} must be a string")
        if not self.name or len(self.name) > 200 or not self.name.isprintable():
            raise PolicyError(f"witness name {self.name[:60]!r} must be 1-200 printable "
                              "characters")
        verifier = parse_verifier_key(self.key)
        if not isinstance(verifier, CosignatureVerifier):
            raise PolicyError(f"witness {self.name!r}: key is not a tlog-cosignature (0x04) "
                              "verifier key")
        _check_url(self.url, f"witness {self.name!r}")

    @property
    def verifier(self) -> CosignatureVerifier:
        """Return the parsed cosignature verifier."""
        verifier = parse_verifier_key(self.key)
        assert isinstance(verifier, CosignatureVerifier)
        return verifier

    def to_json(self) -> dict[str, str]:
        """Return the JSON object of this witness."""
        return {"name": self.name, "key": self.key, "url": self.url}


@dataclass(frozen=True, slots=True, kw_only=True)
class WitnessPolicy:
    """The witnesses and the quorum k a checkpoint needs; validated on construction."""

    witnesses: tuple[Witness, ...]
    quorum: int

    def __post_init__(self) -> None:
        if not isinstance(self.witnesses, tuple) or not all(
                isinstance(w, Witness) for w in self.witnesses):
            raise TypeError("witnesses must be a tuple of Witness")
        if isinstance(self.quorum, bool) or not isinstance(self.quorum, int):
            raise TypeError("quorum must be an int")
        if len(self.witnesses) > MAX_WITNESSES:
            raise PolicyError(f"policy names {len(self.witnesses)} witnesses, at most "
                              f"{MAX_WITNESSES}")
        if not 0 <= self.quorum <= len(self.witnesses):
            raise PolicyError(f"quorum {self.quorum} must be between 0 and the number of "
                              f"witnesses ({len(self.witnesses)})")
        names = [w.name for w in self.witnesses]
        if len(set(names)) != len(names):
            raise PolicyError("two witnesses share a name")
        keys = [(w.verifier.name, w.verifier.key_id) for w in self.witnesses]
        if len(set(keys)) != len(keys):
            raise PolicyError("two witnesses share a cosigner key")

    def to_json(self) -> dict[str, Any]:
        """Return the policy as its JSON object (see the module docstring)."""
        return {"witnesses": [w.to_json() for w in self.witnesses], "quorum": self.quorum}

    def encode(self) -> bytes:
        """Return the policy as UTF-8 JSON text ending in a newline."""
        return (json.dumps(self.to_json(), indent=2) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, obj: object) -> WitnessPolicy:
        """Return the policy in a decoded JSON value; :class:`PolicyError` names the bad field."""
        if not isinstance(obj, Mapping):
            raise PolicyError("witness policy must be a JSON object")
        unknown = sorted(set(obj) - {"witnesses", "quorum"})
        if unknown:
            raise PolicyError(f"witness policy: unknown field {unknown[0][:40]!r}")
        items = obj.get("witnesses")
        quorum = obj.get("quorum")
        if not isinstance(items, list):
            raise PolicyError("witness policy: witnesses must be a list")
        if isinstance(quorum, bool) or not isinstance(quorum, int):
            raise PolicyError("witness policy: quorum must be an integer")
        witnesses = []
        for position, item in enumerate(items):
            if not isinstance(item, Mapping) or set(item) != {"name", "key", "url"} or not all(
                    isinstance(item[k], str) for k in ("name", "key", "url")):
                raise PolicyError(f"witness policy: witnesses[{position}] must be an object "
                                  "with string fields name, key and url (only)")
            try:
                witnesses.append(Witness(name=item["name"], key=item["key"], url=item["url"]))
            except NoteError as err:
                raise PolicyError(f"witness policy: witnesses[{position}]: {err}") from None
        return cls(witnesses=tuple(witnesses), quorum=quorum)

    def verifiers(self) -> list[Verifier]:
        """Return the witnesses' cosignature verifiers, in policy order."""
        return [w.verifier for w in self.witnesses]


def parse_policy(data: bytes | str) -> WitnessPolicy:
    """Return the policy in a JSON document; :class:`PolicyError` on any defect."""
    if len(data) > _MAX_POLICY_BYTES:
        raise PolicyError(f"witness policy is larger than {_MAX_POLICY_BYTES} bytes")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as err:
        raise PolicyError(f"witness policy is not valid JSON: {str(err)[:80]}") from None
    return WitnessPolicy.from_json(obj)


def cosignature_status(note: bytes, witnesses: Sequence[Witness]) -> tuple[
        tuple[str, ...], tuple[str, ...]]:
    """Return (names with a valid cosignature, names with an invalid one) among ``witnesses``.

    Only the note's structure is checked here (the log signature is the
    caller's business, see :func:`verify_witnessed`). Raises ``NoteError``
    when the note is malformed.
    """
    text, signatures = parse_note(note)
    message = text.encode("utf-8")
    valid: list[str] = []
    invalid: list[str] = []
    for witness in witnesses:
        verifier = witness.verifier
        lines = [s for s in signatures if (s.name, s.key_id) == (verifier.name, verifier.key_id)]
        if not lines:
            continue
        if all(verifier.verify(message, s.data) for s in lines):
            valid.append(witness.name)
        else:
            invalid.append(witness.name)
    return tuple(valid), tuple(invalid)


@dataclass(frozen=True, slots=True)
class Witnessed:
    """A checkpoint signed by the log and cosigned by ``cosigners`` (a quorum of the policy)."""

    signed: SignedCheckpoint
    cosigners: tuple[str, ...]


def verify_witnessed(note: bytes, log_key: Verifier | str, policy: WitnessPolicy, *,
                     origin: str | None = None) -> Witnessed:
    """Return the checkpoint in ``note`` once the log key and a witness quorum vouch for it.

    Raises ``CheckpointError``/``NoteError`` for the log signature and body
    (see ``open_checkpoint``), and :class:`WitnessQuorumError` naming the
    witnesses whose cosignature is invalid, or missing when fewer than the
    quorum cosigned.
    """
    signed = open_checkpoint(note, log_key, origin=origin)
    valid, invalid = cosignature_status(note, policy.witnesses)
    missing = tuple(w.name for w in policy.witnesses if w.name not in valid + invalid)
    size = signed.checkpoint.size
    if invalid:
        raise WitnessQuorumError(
            f"checkpoint of size {size} carries an invalid cosignature from "
            f"{', '.join(invalid)}", size=size, quorum=policy.quorum, cosigned=valid,
            missing=missing, invalid=invalid)
    if len(valid) < policy.quorum:
        raise WitnessQuorumError(
            f"checkpoint of size {size} has {len(valid)} of the {policy.quorum} witness "
            f"cosignatures the policy requires; missing: {', '.join(missing) or '-'}",
            size=size, quorum=policy.quorum, cosigned=valid, missing=missing, invalid=invalid)
    return Witnessed(signed=signed, cosigners=valid)
