"""The service object and ``perform``: every access is one audit entry in its own transaction.

Theory of operation (DESIGN.md §7, server design "Every access is one audit
entry"). ``perform`` opens one unit of work and, inside it: looks up the
participant named by the signature's keyid, verifies the RFC 9421 signature
(and the body's Content-Digest when the body is given), refuses suspended
participants, records the nonce (a replay, also from another process sharing
the database, fails here), runs the operation (which checks authorisation
first) and appends the ``ok`` entry with the request's signature material.
If anything raises an :class:`ExchangeError`, that unit is undone and a second
short unit appends a ``denied`` entry (reason = the error's ``problem_type``),
recording the nonce of a validly signed request unless it was the replay
itself; the error then propagates wrapped in :class:`AuditedRefusal`, which
names the entry. So every refusal of a participant whose signature verified
is logged, and nothing half-done is. A request whose signature does not
verify (unsigned, unknown key, bad signature, outside the profile) is not an
access by anyone: it is counted and logged operationally
(:class:`~exchange.service.unauthenticated.UnauthenticatedRefusals`), never
appended, since anyone could otherwise grow the log forever.
The signature may be checked before the unit is queued, with the key a
previous transaction read for that participant (``exchange.service._early``);
the unit accepts that result only if it was made with the key it reads.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from exchange.audit.entry import AuditEntry, DetailValue, RequestEvidence
from exchange.config import ServerConfig
from exchange.errors import CryptoError, ExchangeError, StorageError
from exchange.service._early import EarlyCheck, KeyHints, Selected, early_check
from exchange.service.errors import (
    AuditedRefusal,
    MisdirectedRequest,
    ParticipantSuspended,
    ReplayedRequest,
    SignatureLifetimeTooLong,
)
from exchange.service.events import record_case_event
from exchange.service.unauthenticated import UnauthenticatedRefusals
from exchange.storage.blobs import BlobStore
from exchange.storage.errors import NotFound, ReplayedNonce
from exchange.storage.metadata import (
    AppendedEntry,
    EntryFactory,
    MetadataStore,
    Participant,
    ParticipantStatus,
    Transaction,
)
from exchange.wire.httpsig import (
    ContentDigestVerifier,
    SignatureExpired,
    SignatureInvalid,
    SignatureParamsInvalid,
    UnknownKey,
    VerifiedSignature,
    select_signature,
    verify_request,
)

__all__ = [
    "Actor",
    "Details",
    "OpResult",
    "Performed",
    "Service",
    "SignedRequest",
    "is_outage",
]

T = TypeVar("T")
_BASE = re.compile(r"[a-z][a-z0-9+.-]*://[^/?#]*", re.IGNORECASE)


def _base_of(uri: str) -> str:
    """Return the ``scheme://authority`` part of an absolute URI."""
    found = _BASE.match(uri)
    return uri if found is None else found.group(0)
Details = Mapping[str, DetailValue]
#: Longest error text copied into a denied entry's details.
MAX_DETAIL_CHARS = 300
MAX_ENTRY_ID_CHARS = 256  # ids are at most 128 characters; a longer one is an attack, kept short
_CONTROL = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def _clean(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """Return ``text`` safe for an entry's details: no control characters, bounded."""
    return _CONTROL.sub("?", text)[:limit]


def _loggable_id(value: str | None) -> str | None:
    """Return a request-supplied case/object id in a form an audit entry accepts.

    A refusal must be logged even when the id in the URL is garbage (control
    characters, lone surrogates, empty, huge): the entry keeps a bounded copy
    with those characters replaced instead of failing to record the attempt.
    """
    if value is None:
        return None
    return _clean(value, MAX_ENTRY_ID_CHARS) or "?"


@dataclass(frozen=True, slots=True, kw_only=True)
class SignedRequest:
    """The parts of an HTTP request that its RFC 9421 signature speaks for.

    ``target_uri`` is built from the configured public URL, never from the Host
    header. ``required_components`` is exactly the set the signature must cover.
    ``body`` is the whole body for routes that buffer it (JSON); streamed bodies
    leave it None and check their Content-Digest while streaming.
    """

    method: str
    target_uri: str
    headers: tuple[tuple[str, str], ...]
    required_components: frozenset[str]
    body: bytes | None = None
    #: The peer address (for the operational log of unauthenticated refusals only).
    source: str | None = None
    #: Other spellings of this server the client may have signed for (the URL it
    #: reached, per its Host header; URLs before a ``server move``), each with the
    #: same path and query. Used only to explain a signature that does not verify.
    other_uris: tuple[str, ...] = ()

    def field(self, name: str) -> str | None:
        """Return a header's value, repeated lines joined with ", " (RFC 9421 §2.1)."""
        values = [v.strip() for k, v in self.headers if k.lower() == name]
        return ", ".join(values) if values else None

    def claimed_keyid(self) -> str | None:
        """Return the keyid the request claims, without trusting it (for denied entries)."""
        try:
            member, _ = select_signature(self.headers)
        except CryptoError:
            return None
        keyid = member.params.keyid
        return None if keyid is None else _clean(keyid, 128)


@dataclass(frozen=True, slots=True, kw_only=True)
class Actor:
    """An authenticated participant and the signature material that proves its request."""

    participant: Participant
    evidence: RequestEvidence
    nonce: str
    expires: int
    created: int

    @property
    def id(self) -> str:
        """The participant id (also the signature's keyid)."""
        return self.participant.participant_id

    @property
    def role(self) -> str:
        """The participant's global role."""
        return self.participant.role

    def __repr__(self) -> str:
        return f"Actor(id={self.id!r}, role={self.role!r})"


@dataclass(frozen=True, slots=True, kw_only=True)
class OpResult(Generic[T]):
    """What an operation returns to ``perform``.

    ``details`` go into the ok entry; ``case`` and ``object``, when set, name
    what the entry is about if only the operation could tell (a generated
    case id, a participant id read from the body). ``after`` runs in the same
    transaction once the entry's index is known (an enrolment stores it).
    """

    value: T
    details: Details = field(default_factory=dict)
    case: str | None = None
    object: str | None = None
    after: Callable[[Transaction, int], Awaitable[None]] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Performed(Generic[T]):
    """An operation's value, the index of the audit entry that logged it, and who asked."""

    value: T
    audit_index: int
    actor: Actor


Operation = Callable[[Transaction, Actor], Awaitable[OpResult[T]]]
MembershipHook = Callable[[Transaction, str, str, dict[str, Any], int], Awaitable[None]]


class Service:
    """The server's state: metadata store, blob store, configuration and clock.

    One instance per process, shared by every request; holds no per-request state.
    """

    def __init__(
        self,
        *,
        store: MetadataStore,
        blobs: BlobStore,
        config: ServerConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.config = config
        self.clock = clock
        #: ``hook(tx, kind, case_id, payload, audit_index)``, run in the transaction of
        #: every membership change (writes the live feed's case events).
        self.membership_hook: MembershipHook | None = record_case_event
        #: Refusals of requests whose signature did not verify (counted, not audited).
        self.unauthenticated = UnauthenticatedRefusals()
        self._key_hints = KeyHints()

    def __repr__(self) -> str:
        return f"Service(origin={self.config.origin!r})"

    # -- authentication ---------------------------------------------------------

    def _verify_with(
        self, request: SignedRequest, selected: Selected, keyid: str, key: bytes,
        target_uri: str | None = None,
    ) -> VerifiedSignature:
        """Return ``request``'s signature verified with ``key`` (our profile, now)."""
        limits = self.config.limits
        return verify_request(
            method=request.method,
            target_uri=request.target_uri if target_uri is None else target_uri,
            headers=request.headers,
            public_key_lookup=lambda k: key if k == keyid else None,
            now=self.clock(),
            max_skew_s=limits.clock_skew_s,
            required_components=request.required_components,
            selected=selected,
        )

    def _early(self, request: SignedRequest) -> EarlyCheck | None:
        """Verify ahead of the transaction with a hinted key (see ``exchange.service._early``)."""
        return early_check(
            request.headers, self._key_hints,
            lambda selected, keyid, key: self._verify_with(request, selected, keyid, key),
        )

    async def _verify(
        self, tx: Transaction | MetadataStore, request: SignedRequest,
        early: EarlyCheck | None = None,
    ) -> Actor:
        """Return the actor whose key verifies ``request``; any status (checked after).

        ``early`` counts only if it was verified with the key read here.
        """
        selected = select_signature(request.headers) if early is None else early.selected
        keyid = selected[0].params.keyid
        if keyid is None:
            raise SignatureParamsInvalid("signature has no keyid parameter")
        try:
            participant = await tx.get_participant(keyid)
        except (NotFound, ValueError, TypeError):
            raise UnknownKey(f"unknown keyid {keyid[:60]!r}") from None
        self._key_hints.remember(keyid, participant.signing_key)
        try:
            verified = None if early is None else early.result_for(participant.signing_key)
            if verified is None:
                verified = self._verify_with(request, selected, keyid, participant.signing_key)
            elif verified.params.expires is not None and self.clock() > verified.params.expires:
                raise SignatureExpired(f"signature expired at {verified.params.expires}")
        except SignatureInvalid:
            self._explain_misdirected(request, selected, keyid, participant.signing_key)
            raise
        params = verified.params
        assert params.created is not None and params.expires is not None and verified.nonce
        evidence = RequestEvidence(
            signature_input=verified.signature_input_member,
            signature=verified.signature_member,
            covered=verified.covered,
        )
        return Actor(participant=participant, evidence=evidence, nonce=verified.nonce,
                     expires=params.expires, created=params.created)

    def _explain_misdirected(self, request: SignedRequest, selected: Selected, keyid: str,
                             key: bytes) -> None:
        """Raise :class:`MisdirectedRequest` if the signature verifies for another URL.

        Only the participant's own key can make it verify, so the answer tells
        nothing to anyone else; the request stays unlogged like any signature
        that does not verify for this server's URL.
        """
        for other in request.other_uris:
            if other == request.target_uri:
                continue
            try:
                self._verify_with(request, selected, keyid, key, target_uri=other)
            except ExchangeError:
                continue
            raise MisdirectedRequest(_base_of(other), _base_of(request.target_uri))

    def _check(self, actor: Actor, request: SignedRequest) -> None:
        """Refuse a validly signed request that breaks the profile: status, lifetime, body."""
        if actor.participant.status is not ParticipantStatus.ACTIVE:
            raise ParticipantSuspended(
                f"participant {actor.id!r} is {actor.participant.status.value}"
            )
        lifetime = actor.expires - actor.created
        if lifetime > self.config.limits.max_signature_age_s:
            raise SignatureLifetimeTooLong(
                f"signature lives {lifetime}s, at most "
                f"{self.config.limits.max_signature_age_s}s allowed"
            )
        if request.body is not None:
            checker = ContentDigestVerifier(request.field("content-digest"), require_sha256=True)
            checker.update(request.body)
            checker.verify()

    @staticmethod
    async def _record_nonce(tx: Transaction | MetadataStore, actor: Actor) -> None:
        """Spend the request's nonce; a nonce seen before (by any process) is a replay."""
        try:
            await tx.record_nonce(actor.id, actor.nonce, actor.expires)
        except ReplayedNonce:
            raise ReplayedRequest(
                f"nonce {actor.nonce[:40]!r} of {actor.id!r} was used before"
            ) from None

    async def authenticate(
        self, request: SignedRequest, action: str, *, case: str | None = None,
        object: str | None = None, record_nonce: bool = True,
    ) -> Actor:
        """Return the authenticated, active actor of ``request`` without an ok entry.

        For gates that must not log success (``Expect: 100-continue``, with
        ``record_nonce=False`` since the operation records it) and for reads
        that are deliberately unlogged (checkpoint polls). A refusal is logged
        and raised as :class:`AuditedRefusal`.
        """
        actor: Actor | None = None
        early = self._early(request)
        try:
            # Outside the group commit: the key as last committed, the nonce spent on
            # its own. Nothing is logged here, so nothing needs the log's order; the
            # operation that follows (if any) checks its own rights in its unit.
            actor = await self._verify(self.store, request, early)
            self._check(actor, request)
            if record_nonce:
                await self._record_nonce(self.store, actor)
        except ExchangeError as err:
            raise await self._refuse(
                request, action, err, case=case, object=object, actor=actor
            ) from err
        return actor

    # -- operations ---------------------------------------------------------------

    async def perform(
        self,
        request: SignedRequest,
        action: str,
        op: Operation[T],
        *,
        case: str | None = None,
        object: str | None = None,
    ) -> Performed[T]:
        """Authenticate ``request``, run ``op`` and log it, all in one transaction.

        Returns the operation's value and its entry's index. Raises
        :class:`AuditedRefusal` (wrapping the cause) when anything was refused;
        storage failures outside the refusal path propagate unchanged.
        """
        actor: Actor | None = None
        early = self._early(request)

        async def unit(tx: Transaction) -> tuple[OpResult[T], AppendedEntry]:
            nonlocal actor
            actor = await self._verify(tx, request, early)
            self._check(actor, request)
            await self._record_nonce(tx, actor)
            return await self._apply(tx, actor, action, op, case=case, object=object)

        try:
            outcome, appended = await self.store.run_unit(action, unit)
        except AuditedRefusal:
            raise
        except ExchangeError as err:
            if is_outage(err):
                raise
            raise await self._refuse(
                request, action, err, case=case, object=object, actor=actor
            ) from err
        assert actor is not None
        return Performed(value=outcome.value, audit_index=appended.index, actor=actor)

    async def _apply(
        self, tx: Transaction, actor: Actor, action: str, op: Operation[T], *,
        case: str | None, object: str | None,
    ) -> tuple[OpResult[T], AppendedEntry]:
        """Run ``op`` and append its ok entry in ``tx``; then its ``after`` hook."""
        outcome = await op(tx, actor)
        appended = await tx.append_audit(self._entry(
            actor, action, outcome.case or case, outcome.object or object,
            outcome="ok", reason=None, details=outcome.details,
        ))
        if outcome.after is not None:
            await outcome.after(tx, appended.index)
        return outcome, appended

    async def log_refusal(
        self, request: SignedRequest, action: str, error: ExchangeError, *,
        case: str | None = None, object: str | None = None, actor: Actor | None = None,
    ) -> ExchangeError:
        """Return what to raise for ``error``: a denied entry when ``actor`` is known.

        Without an authenticated ``actor`` the refusal is only counted (see
        the module docstring) and ``error`` itself is returned.
        """
        return await self._refuse(request, action, error, case=case, object=object, actor=actor)

    async def log_denied(
        self, request: SignedRequest, action: str, error: ExchangeError, *, actor: Actor,
        case: str | None = None, object: str | None = None,
    ) -> AuditedRefusal:
        """Log ``error`` of the authenticated ``actor`` as a denied entry."""
        details: dict[str, DetailValue] = {"detail": _clean(str(error))}

        async def unit(tx: Transaction) -> AppendedEntry:
            if not isinstance(error, ReplayedRequest):
                # A validly signed request is spent even when refused; a
                # concurrent twin may have recorded the nonce already.
                with suppress(ReplayedNonce):
                    await tx.record_nonce(actor.id, actor.nonce, actor.expires)
            return await tx.append_audit(self._entry(
                actor, action, _loggable_id(case), _loggable_id(object), outcome="denied",
                reason=error.problem_type, details=details,
            ))

        appended = await self.store.run_unit(f"{action}.denied", unit)
        return AuditedRefusal(error, appended.index)

    async def perform_as(
        self,
        request: SignedRequest,
        actor: Actor,
        action: str,
        op: Operation[T],
        *,
        case: str | None = None,
        object: str | None = None,
    ) -> Performed[T]:
        """Run ``op`` and log it for an ``actor`` that :meth:`authenticate` returned earlier.

        For streamed bodies (uploads): the request is authenticated and its
        nonce spent before the body is read, and the entry is written once the
        bytes are durable, possibly after the signature expired, so nothing is
        verified again here. Refusals are logged as in :meth:`perform`.
        """
        async def unit(tx: Transaction) -> tuple[OpResult[T], AppendedEntry]:
            return await self._apply(tx, actor, action, op, case=case, object=object)

        try:
            outcome, appended = await self.store.run_unit(action, unit)
        except AuditedRefusal:
            raise
        except ExchangeError as err:
            if is_outage(err):
                raise
            raise await self._refuse(
                request, action, err, case=case, object=object, actor=actor
            ) from err
        return Performed(value=outcome.value, audit_index=appended.index, actor=actor)

    async def _refuse(
        self, request: SignedRequest, action: str, error: ExchangeError, *,
        case: str | None, object: str | None, actor: Actor | None,
    ) -> ExchangeError:
        if actor is None:
            self.unauthenticated.note(request.source, error.problem_type, action,
                                    claimed_keyid=request.claimed_keyid())
            return error
        return await self.log_denied(request, action, error, actor=actor, case=case,
                                     object=object)

    @staticmethod
    def _entry(
        actor: Actor, action: str, case: str | None, object: str | None, *,
        outcome: str, reason: str | None, details: Details,
    ) -> EntryFactory:
        def make(index: int, prev: bytes, time: str) -> AuditEntry:
            return AuditEntry(
                index=index, time=time, actor=actor.id,
                actor_key=actor.participant.fingerprint,
                action=action, case=case, object=object,
                outcome="ok" if outcome == "ok" else "denied", reason=reason,
                request=actor.evidence, details=details, prev=prev,
            )

        return make


def is_outage(err: ExchangeError) -> bool:
    """Whether ``err`` means the metadata store is unusable or closed (not the request's
    fault: answered 503, never logged as a refusal)."""
    return isinstance(err, StorageError) and err.problem_type in ("storage", "store-closed")
