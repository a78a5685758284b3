"""The trust anchor: what a participant pins once, out of band (DESIGN.md trust model).

Nothing the server says can change it. It names

- the log: its origin and its signed-note verifier key;
- the first administrators, each with every public key (their bundle), and
  how many administrators must sign an administrative statement (the quorum);
- the witness policy (witnesses' names, cosigner keys, URLs and the quorum
  of cosignatures a checkpoint needs), empty until witnesses are set up.

Encoded as one canonical JSON document (RFC 8785); its fingerprint, a short
grouped base32 string like a key fingerprint, is what people compare over
the phone or print in the JIT agreement's annex::

    {"format": "exchange-trust-anchor/v1", "origin": ..., "log_key": ...,
     "admins": [{"bundle": {...}, "organisation": ..., "country": ...}],
     "admin_quorum": 1, "witness_policy": {"witnesses": [], "quorum": 0}}

Later changes of administrators are ``admin.set`` statements signed by the
administrators already trusted (``exchange.crypto.chains``); the anchor
itself never changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exchange.crypto.jcs import canonicalize
from exchange.crypto.keys import (
    BundleError,
    PublicBundle,
    bundle_from_json_obj,
    fingerprint,
    loads_strict,
)
from exchange.errors import CryptoError

__all__ = ["ANCHOR_FORMAT", "AnchorAdmin", "AnchorError", "TrustAnchor", "parse_anchor"]

ANCHOR_FORMAT = "exchange-trust-anchor/v1"
MAX_ANCHOR_BYTES = 256 * 1024
MAX_ADMINS = 32
_KEYS = frozenset({"format", "origin", "log_key", "admins", "admin_quorum", "witness_policy"})
_ADMIN_KEYS = frozenset({"bundle", "organisation", "country"})


class AnchorError(CryptoError, ValueError):
    """A trust anchor document is malformed."""

    problem_type = "trust-anchor"


@dataclass(frozen=True, slots=True)
class AnchorAdmin:
    """A first administrator: public keys, organisation and country."""

    bundle: PublicBundle
    organisation: str = ""
    country: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object form (the bundle without its derived fingerprints)."""
        bundle = self.bundle.to_json_obj()
        bundle.pop("fingerprints", None)
        return {"bundle": bundle, "organisation": self.organisation, "country": self.country}


@dataclass(frozen=True, slots=True)
class TrustAnchor:
    """A parsed trust anchor (see the module docstring)."""

    origin: str
    log_key: str
    admins: tuple[AnchorAdmin, ...]
    admin_quorum: int = 1
    witness_policy: Any = None  # {"witnesses": [...], "quorum": k}; None = no witnesses

    def __post_init__(self) -> None:
        if not self.admins or len(self.admins) > MAX_ADMINS:
            raise AnchorError(f"a trust anchor names 1 to {MAX_ADMINS} administrators")
        ids = [a.bundle.id for a in self.admins]
        if len(set(ids)) != len(ids):
            raise AnchorError("an administrator is named twice")
        if isinstance(self.admin_quorum, bool) or not isinstance(self.admin_quorum, int) or not (
                1 <= self.admin_quorum <= len(self.admins)):
            raise AnchorError("admin_quorum must be between 1 and the number of administrators")
        if not isinstance(self.origin, str) or not self.origin or " " in self.origin:
            raise AnchorError("origin must be the log origin")
        if not isinstance(self.log_key, str) or not self.log_key.startswith(self.origin + "+"):
            raise AnchorError("log_key must be the log's verifier key, named after its origin")
        policy = self.witness_policy
        if policy is not None and not (
                isinstance(policy, dict) and isinstance(policy.get("witnesses"), list)
                and isinstance(policy.get("quorum"), int)):
            raise AnchorError("witness_policy must be {\"witnesses\": [...], \"quorum\": k}")

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object form."""
        return {"format": ANCHOR_FORMAT, "origin": self.origin, "log_key": self.log_key,
                "admins": [a.to_json() for a in self.admins],
                "admin_quorum": self.admin_quorum,
                "witness_policy": self.witness_policy or {"witnesses": [], "quorum": 0}}

    def encode(self) -> bytes:
        """Return the canonical bytes (what is written to ``trust.json``)."""
        return canonicalize(self.to_json()) + b"\n"

    @property
    def fingerprint(self) -> str:
        """The short string people compare out of band."""
        return fingerprint("trust-anchor", self.to_json())

    @property
    def has_witnesses(self) -> bool:
        """True when the anchor requires cosigned checkpoints."""
        return bool(self.witness_policy) and int(self.witness_policy.get("quorum", 0)) > 0


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name, "")
    if not isinstance(value, str) or len(value) > 200:
        raise AnchorError(f"{name} must be a string of at most 200 characters")
    return value


def parse_anchor(data: bytes | str) -> TrustAnchor:
    """Parse a trust anchor document (canonical or not: it is pinned, not logged)."""
    try:
        doc = loads_strict(data, what="trust anchor", max_bytes=MAX_ANCHOR_BYTES)
    except BundleError as err:
        raise AnchorError(str(err)) from None
    if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT:
        raise AnchorError(f"not an {ANCHOR_FORMAT} document")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise AnchorError(f"unknown member {unknown[0]!r:.40}")
    admins = doc.get("admins")
    if not isinstance(admins, list):
        raise AnchorError("admins must be a list")
    parsed = []
    for admin in admins:
        if not isinstance(admin, dict) or not set(admin) <= _ADMIN_KEYS or "bundle" not in admin:
            raise AnchorError("each administrator is {bundle, organisation, country}")
        try:
            bundle = bundle_from_json_obj(admin["bundle"])
        except BundleError as err:
            raise AnchorError(f"administrator bundle: {err}") from None
        parsed.append(AnchorAdmin(bundle, _text(admin, "organisation"), _text(admin, "country")))
    policy = doc.get("witness_policy")
    if isinstance(policy, dict) and policy.get("quorum") == 0 and not policy.get("witnesses"):
        policy = None
    return TrustAnchor(origin=doc.get("origin", ""), log_key=doc.get("log_key", ""),
                       admins=tuple(parsed), admin_quorum=doc.get("admin_quorum", 1),
                       witness_policy=policy)
