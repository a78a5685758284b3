"""Participant key pins, checked against the enrolment or key-change entry in the audit log.

Theory of operation. The server serves a participant's public keys together
with ``key_index`` (the audit index of the entry that logged them) and
``key_entry`` (that entry's bytes). The client checks, in this order:

1. the served keys are self-consistent (the fingerprint is the one of the keys);
2. the entry is in the log: its leaf hash is included, at ``key_index``, in a
   checkpoint the client verified (and keeps consistent with earlier ones);
3. the entry is an ``ok`` ``participant.enrol`` or ``participant.key_change``
   of this participant and carries exactly the served keys;
4. the keys equal the local pin (``pins.json``), or, if they differ, the
   change is itself a newer logged entry (accepted with a warning naming it).

Any failure is :class:`KeySubstituted`: the server (or someone who edited its
database) presents keys that the log does not vouch for.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from exchange.audit.entry import (
    PARTICIPANT_ENROL,
    PARTICIPANT_KEY_CHANGE,
    AuditEntry,
    EntryError,
    parse_entry,
)
from exchange.client.errors import KeySubstituted
from exchange.crypto.keys import BundleError, PublicBundle

__all__ = ["Pin", "VerifiedParticipant", "bundle_from_view", "check_entry", "check_pin"]


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedParticipant:
    """A participant whose served keys were checked against the log and the local pin."""

    bundle: PublicBundle
    role: str
    status: str
    organisation: str
    country: str
    key_index: int | None
    logged: bool  # False only when the server offered no key entry to check

    @property
    def id(self) -> str:
        """The participant id."""
        return self.bundle.id

    @property
    def fingerprint(self) -> str:
        """The overall fingerprint of the keys (read it aloud to compare)."""
        return self.bundle.fingerprint


@dataclass(frozen=True, slots=True, kw_only=True)
class Pin:
    """What the client remembers about a participant's keys."""

    fingerprint: str
    key_index: int | None

    def to_json(self) -> dict[str, Any]:
        """Return the pins.json form."""
        return {"fingerprint": self.fingerprint, "key_index": self.key_index}

    @classmethod
    def from_json(cls, obj: object) -> Pin | None:
        """Return the pin in a pins.json value, or None if malformed."""
        if not isinstance(obj, dict) or not isinstance(obj.get("fingerprint"), str):
            return None
        index = obj.get("key_index")
        return cls(fingerprint=obj["fingerprint"],
                   key_index=index if isinstance(index, int) else None)


def _substituted(pid: str, what: str, *, fingerprint: str) -> KeySubstituted:
    return KeySubstituted(
        f"the server's keys for {pid!r} do not match the audit log: {what}",
        f"compare fingerprint {fingerprint} with {pid} in person (phone, video) and "
        "tell your administrator; do not share evidence with this participant until resolved",
        participant=pid,
    )


def bundle_from_view(view: dict[str, Any]) -> PublicBundle:
    """Return the public keys in a participant view; refuse a view that contradicts itself."""
    pid = str(view.get("id", ""))[:128]
    try:
        signing_key = base64.b64decode(str(view.get("signing_key", "")), validate=True)
        bundle = PublicBundle(
            id=pid, display_name=str(view.get("display_name") or pid),
            signing_key=signing_key, age_recipient=str(view.get("age_recipient", "")),
            pq_recipient=view.get("pq_recipient"),
        )
    except (BundleError, binascii.Error, ValueError, TypeError) as err:
        raise _substituted(pid, f"malformed keys ({err})", fingerprint="?") from None
    if view.get("fingerprint") != bundle.fingerprint:
        raise _substituted(pid, "the stated fingerprint is not the one of the keys",
                           fingerprint=bundle.fingerprint)
    return bundle


def check_entry(bundle: PublicBundle, entry_bytes: bytes) -> AuditEntry:
    """Return the parsed key entry if it logs exactly ``bundle``'s keys, else raise.

    The caller must already have proven that ``entry_bytes`` is in the log.
    """
    pid = bundle.id
    try:
        entry = parse_entry(entry_bytes)
    except EntryError as err:
        raise _substituted(pid, f"the key entry is malformed ({err})",
                           fingerprint=bundle.fingerprint) from None
    if entry.action not in (PARTICIPANT_ENROL, PARTICIPANT_KEY_CHANGE) or entry.outcome != "ok":
        raise _substituted(pid, f"entry {entry.index} is a {entry.action} ({entry.outcome}), "
                           "not an enrolment or key change", fingerprint=bundle.fingerprint)
    details = dict(entry.details)
    expected = {
        "participant": pid,
        "signing_key": base64.b64encode(bundle.signing_key).decode("ascii"),
        "age_recipient": bundle.age_recipient,
        "pq_recipient": bundle.pq_recipient,
        "fingerprint": bundle.fingerprint,
    }
    for name, value in expected.items():
        if details.get(name) != value:
            raise _substituted(
                pid, f"{name} differs from the one logged at audit index {entry.index}",
                fingerprint=bundle.fingerprint)
    return entry


def check_pin(bundle: PublicBundle, key_index: int | None, pin: Pin | None, *,
              logged: bool) -> str | None:
    """Return a warning if a logged key change replaced the pinned keys; raise if unlogged.

    ``logged`` says the keys were proven against the entry at ``key_index``.
    """
    if pin is None or pin.fingerprint == bundle.fingerprint:
        return None
    newer = (key_index is not None and (pin.key_index is None or key_index > pin.key_index))
    if logged and newer:
        return (f"the keys of {bundle.id!r} changed: the key change is logged at audit index "
                f"{key_index} (new fingerprint {bundle.fingerprint}, was {pin.fingerprint})")
    raise _substituted(
        bundle.id,
        f"fingerprint {bundle.fingerprint} differs from the pinned {pin.fingerprint} and the "
        "log shows no key change since", fingerprint=bundle.fingerprint)
