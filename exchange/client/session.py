"""The client library's session: identity + server URL + signed HTTP + pinned log state.

:class:`Client` signs every request (RFC 9421 via ``SignedSession``), pins the
audit log's verifier key, and keeps the last verified checkpoint in the state
directory: every new checkpoint must be signed by the pinned key and be
consistent (RFC 6962 consistency proof) with the stored one, else
:class:`LogForked`/:class:`CheckpointRollback`. Participant keys are checked
against their logged enrolment or key-change entry and a local pin
(``exchange.client.pins``). The operations (cases, evidence, feed) live in
sibling modules as functions taking a ``Client`` (re-exported by ``exchange.client``).

Use as ``async with Client(identity, url, log_key=..., state_dir=...) as c:``.
"""

from __future__ import annotations

import base64
import hmac
import warnings
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

import aiohttp

from exchange.audit.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from exchange.audit.note import NoteError, parse_verifier_key
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency, verify_inclusion
from exchange.audit.receipt import encode_receipt, parse_receipt
from exchange.audit.tree import leaf_hash
from exchange.client.errors import (
    CheckpointRollback,
    ClientError,
    KeyProblem,
    LogForked,
    LogKeyMissing,
    MalformedReply,
    ServerRefused,
    VerificationFailed,
)
from exchange.client.pins import (
    Pin,
    VerifiedParticipant,
    bundle_from_view,
    check_entry,
    check_pin,
)
from exchange.client.problems import AUDIT_INDEX_HEADER, printable, refusal
from exchange.client.state import LocalState
from exchange.crypto.envelope import CaseKey
from exchange.crypto.keys import ParticipantIdentity
from exchange.errors import AuditError
from exchange.transport.client import SignedSession
from exchange.transport.client_evidence import (
    MAX_ANSWER_BYTES,
    MalformedAnswer,
    read_at_most,
    read_json_answer,
    read_problem,
)

__all__ = ["Client", "ClientWarning", "Reply"]

CHECKPOINT_FILE = "checkpoint"
PINS_FILE = "pins.json"
LOG_FILE = "log.json"
CONNECT_TIMEOUT_S = 30
SOCK_READ_TIMEOUT_S = 120
_NETWORK_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)


class ClientWarning(UserWarning):
    """Something the user should know but that does not stop the operation."""


class Reply:
    """A decoded JSON answer and the audit index the server logged it under."""

    __slots__ = ("audit_index", "body", "status")

    def __init__(self, body: Any, status: int, audit_index: int | None) -> None:
        self.body = body
        self.status = status
        self.audit_index = audit_index

    def object(self, what: str) -> dict[str, Any]:
        """Return the body as a JSON object; raise :class:`MalformedReply` if it is not one."""
        if not isinstance(self.body, dict):
            raise MalformedReply(f"the server's answer to {what} is not a json object")
        return self.body

    def records(self, key: str, what: str) -> list[dict[str, Any]]:
        """Return ``body[key]``, a list of JSON objects (missing: empty); else MalformedReply."""
        items = self.object(what).get(key, [])
        if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
            raise MalformedReply(f"the server's answer to {what} has no list of objects "
                                 f"under {key!r}")
        return items


def audit_index_of(response: aiohttp.ClientResponse) -> int | None:
    """Return the ``Exchange-Audit-Index`` of a response, if any."""
    value = response.headers.get(AUDIT_INDEX_HEADER, "")
    return int(value) if value.isdigit() else None


class Client:
    """An authenticated connection to one exchange server as one participant.

    ``log_key`` is the log's verifier key (``name+hash+base64``, printed by
    ``exchange server init``); without it nothing can be verified and
    :class:`LogKeyMissing` is raised on first use. ``state_dir`` holds the
    pins and the last verified checkpoint (see ``exchange.client.state``).
    ``warn`` receives warnings (default: ``warnings.warn``).
    """

    def __init__(
        self,
        identity: ParticipantIdentity,
        url: str,
        *,
        log_key: str | None,
        state_dir: Path,
        warn: Callable[[str], None] | None = None,
        connect_url: str | None = None,
    ) -> None:
        self.identity = identity
        self.url = url.rstrip("/")
        self.log_key = log_key
        self.state = LocalState(state_dir)
        # No total timeout: a 100 GB download or a live feed lasts as long as it lasts;
        # a silent connection is still cut after SOCK_READ_TIMEOUT_S (feeds heartbeat).
        self._aiohttp = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(
            total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=SOCK_READ_TIMEOUT_S))
        self.http = SignedSession(self.url, identity, connect_url=connect_url,
                                  session=self._aiohttp)
        self._warn = warn or (lambda text: warnings.warn(text, ClientWarning, stacklevel=3))
        self._participants: dict[str, VerifiedParticipant] = {}
        #: Case keys unwrapped in this session, by (case id, epoch); never written to disk.
        self.case_keys: dict[tuple[str, int], CaseKey] = {}
        self._verified: Checkpoint | None = None
        self._log_key_checked = False

    def __repr__(self) -> str:
        return f"Client(url={self.url!r}, participant={self.identity.id!r})"

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the HTTP session."""
        await self.http.close()
        await self._aiohttp.close()

    def warn(self, text: str) -> None:
        """Pass a warning to the configured callback."""
        self._warn(text)

    # -- requests ---------------------------------------------------------------------

    async def call(self, method: str, path: str, *, json: Any = None,
                   ok: tuple[int, ...] = (200, 201), doing: str = "",
                   headers: dict[str, str] | None = None) -> Reply:
        """Send a signed request and return its JSON answer; raise ``ServerRefused`` otherwise.

        Network failures become a :class:`ClientError` naming the server. The
        first call refuses to run without a configured log key (nothing the
        server says could be checked).
        """
        self._log_key()
        try:
            response = await self.http.request(method, path, json=json, headers=headers)
            async with response:
                index = audit_index_of(response)
                if response.status in ok:
                    body = None
                    if response.status != 204:
                        body = await read_json_answer(response, what=f"{method} {path}")
                    return Reply(body, response.status, index)
                problem = await read_problem(response)
        except _NETWORK_ERRORS as err:
            raise self.unreachable(err) from None
        except MalformedAnswer as err:
            raise self.malformed(err, doing) from None
        raise refusal(response.status, problem, audit_index=index, doing=doing)

    def unreachable(self, err: BaseException) -> ClientError:
        """Return the error for a server that could not be reached."""
        reason = str(err) or type(err).__name__
        return ClientError(f"cannot reach the server at {self.url}: {reason[:200]}",
                           "check --url / EXCHANGE_URL and your network, then retry")

    async def call_text(self, path: str) -> tuple[bytes, int | None]:
        """GET ``path`` and return its raw body and audit index (for notes and receipts).

        Bodies over ``MAX_ANSWER_BYTES`` are refused (:class:`MalformedReply`).
        """
        try:
            response = await self.http.request("GET", path)
            async with response:
                index = audit_index_of(response)
                if response.status == 200:
                    body = await read_at_most(response, MAX_ANSWER_BYTES)
                    if body is None:
                        raise MalformedAnswer(f"the answer to GET {path} is larger than "
                                              f"{MAX_ANSWER_BYTES} bytes")
                    return body, index
                problem = await read_problem(response)
        except _NETWORK_ERRORS as err:
            raise self.unreachable(err) from None
        except MalformedAnswer as err:
            raise self.malformed(err, "") from None
        raise refusal(response.status, problem, audit_index=index)

    def malformed(self, err: MalformedAnswer, doing: str) -> MalformedReply:
        """Return the error for an answer that is not what the protocol promises."""
        prefix = f"{printable(doing, 200)}: " if doing else ""
        return MalformedReply(f"{prefix}the server at {self.url} sent a malformed answer: "
                              f"{printable(str(err), 300)}",
                              "retry; if it keeps happening, tell the server administrator")

    # -- the audit log ----------------------------------------------------------------

    def _log_key(self) -> str:
        if self._log_key_checked and self.log_key:
            return self.log_key
        if not self.log_key:
            raise LogKeyMissing(
                "no verifier key for the server's audit log is configured, so nothing the "
                "server says can be checked",
                "ask your administrator for the log's verifier key (printed by "
                "'exchange server init'), then pass it with --log-key or set EXCHANGE_LOG_KEY",
            )
        try:
            parse_verifier_key(self.log_key)
        except NoteError as err:
            raise KeyProblem(f"the configured log key is not a valid verifier key: {err}",
                             "copy it again exactly as the administrator gave it") from None
        pinned = self.state.read_json(LOG_FILE)
        if isinstance(pinned, dict) and isinstance(pinned.get("log_key"), str):
            if pinned["log_key"] != self.log_key:
                raise VerificationFailed(
                    "the configured log key differs from the one this client pinned before",
                    f"pinned: {pinned['log_key']}",
                    "if the administrator really replaced the log, move the state directory "
                    f"{str(self.state.root)!r} aside and rerun",
                )
        else:
            self.state.write_json(LOG_FILE, {"log_key": self.log_key})
        self._log_key_checked = True
        return self.log_key

    def trusted_checkpoint(self) -> Checkpoint | None:
        """Return the last verified checkpoint kept in the state directory (None at first)."""
        raw = self.state.read_bytes(CHECKPOINT_FILE)
        if raw is None:
            return None
        try:
            return open_checkpoint(raw, self._log_key()).checkpoint
        except (AuditError, ValueError) as err:
            raise VerificationFailed(
                f"the stored checkpoint in {str(self.state.root)!r} does not verify: {err}",
                "the state directory was altered; move it aside and rerun") from None

    async def checkpoint(self) -> Checkpoint:
        """Fetch the server's current checkpoint, verify it (see :meth:`verify_checkpoint`)."""
        note, _ = await self.call_text("/v1/audit/checkpoint")
        return await self.verify_checkpoint(note)

    async def verify_checkpoint(self, note: bytes) -> Checkpoint:
        """Return the checkpoint in ``note`` once it verifies and extends the trusted one.

        Checks the signature under the pinned log key, then consistency with the
        stored checkpoint: a larger tree needs a valid consistency proof from
        the stored size (then becomes the stored one); an equal size needs the
        same root; a smaller tree must be a consistent prefix of the stored
        one (a stale view: the stored checkpoint is returned). Anything else
        raises :class:`LogForked` (or :class:`CheckpointRollback`).
        """
        key = self._log_key()
        try:
            new = open_checkpoint(note, key).checkpoint
        except (AuditError, ValueError) as err:
            raise VerificationFailed(
                f"the server's checkpoint does not verify under the pinned log key: {err}",
                "the server may be impersonated or misconfigured; tell your administrator",
            ) from None
        old_raw = self.state.read_bytes(CHECKPOINT_FILE)
        old = self.trusted_checkpoint()
        if old is None:
            self.state.write_bytes(CHECKPOINT_FILE, note)
            self._verified = new
            return new
        if new.size == old.size:
            if not hmac.compare_digest(new.root, old.root):
                raise LogForked(
                    f"the server shows two different logs of size {new.size}",
                    "keep the state directory as evidence and tell your auditor",
                    old=old_raw or b"", new=note)
            return old
        small, large = (new, old) if new.size < old.size else (old, new)
        try:
            proof = await self._consistency(small.size, large.size)
            verify_consistency(small.size, large.size, proof, small.root, large.root)
        except ServerRefused as err:
            # A server that cannot prove its own larger tree no longer has it.
            if new.size < old.size and err.status == 404:
                raise self._rolled_back(new.size, old.size, old_raw or b"", note) from None
            raise
        except (ProofError, RootMismatch, CheckpointError) as err:
            if new.size < old.size:
                raise self._rolled_back(new.size, old.size, old_raw or b"", note) from None
            raise LogForked(
                f"the audit log of size {new.size} is not consistent with the one of size "
                f"{old.size} this client verified before ({err})",
                "the server rewrote or forked its history; keep the state directory "
                f"{str(self.state.root)!r} as evidence and tell your auditor",
                old=old_raw or b"", new=note) from None
        if new.size < old.size:
            return old
        self.state.write_bytes(CHECKPOINT_FILE, note)
        self._verified = new
        return new

    def _rolled_back(self, size: int, verified: int, old: bytes, new: bytes) -> CheckpointRollback:
        """Return the error for a log smaller than, and not a prefix of, the verified one."""
        return CheckpointRollback(
            f"the server's audit log was rolled back: it has {size} entries, fewer than the "
            f"{verified} this client verified before (a restored backup, or another log)",
            "stop using this server and tell your administrator and your auditor; keep the "
            f"state directory {str(self.state.root)!r} as evidence",
            "the README section 'Restoring a backup' says what happens next",
            old=old, new=new)

    async def _consistency(self, old: int, new: int) -> list[bytes]:
        reply = await self.call("GET", f"/v1/audit/proof/consistency?old={old}&new={new}",
                                doing="fetching a consistency proof")
        return _hashes(reply.body)

    async def inclusion(self, leaf: bytes, index: int, checkpoint: Checkpoint) -> list[bytes]:
        """Return the inclusion proof of entry ``leaf`` at ``index``, verified in ``checkpoint``."""
        if index >= checkpoint.size:
            raise VerificationFailed(
                f"audit entry {index} is not in the verified log of size {checkpoint.size}")
        reply = await self.call("GET", f"/v1/audit/proof/inclusion?index={index}"
                                       f"&size={checkpoint.size}",
                                doing="fetching an inclusion proof")
        proof = _hashes(reply.body)
        try:
            verify_inclusion(leaf_hash(leaf), index, checkpoint.size, proof, checkpoint.root)
        except (ProofError, RootMismatch) as err:
            raise VerificationFailed(
                f"audit entry {index} is not in the log the server signed ({err})") from None
        return proof

    async def proof_receipt(self, index: int, checkpoint_note: bytes | None = None) -> bytes:
        """Return a tlog-proof receipt of entry ``index`` built from a proof and our checkpoint.

        Works for any entry (not only our own): the proof comes from the
        public inclusion-proof API and the checkpoint is the last verified one.
        """
        if checkpoint_note is None:
            await self.checkpoint()
            checkpoint_note = self.state.read_bytes(CHECKPOINT_FILE) or b""
        checkpoint = open_checkpoint(checkpoint_note, self._log_key()).checkpoint
        reply = await self.call("GET", f"/v1/audit/proof/inclusion?index={index}"
                                       f"&size={checkpoint.size}",
                                doing="fetching an inclusion proof")
        return encode_receipt(index, _hashes(reply.body), checkpoint_note)

    async def receipt(self, index: int) -> bytes:
        """Return the server's tlog-proof receipt of entry ``index`` (own entries; auditors any).

        The receipt's checkpoint is verified and checked for consistency.
        """
        text, _ = await self.call_text(f"/v1/audit/receipt/{index}")
        try:
            parsed = parse_receipt(text)
        except AuditError as err:
            raise VerificationFailed(f"the server's receipt is malformed: {err}") from None
        await self.verify_checkpoint(parsed.checkpoint)
        return text

    # -- participants -----------------------------------------------------------------

    def _pins(self) -> dict[str, Any]:
        pins = self.state.read_json(PINS_FILE)
        return pins if isinstance(pins, dict) else {}

    async def participant(self, participant_id: str) -> VerifiedParticipant:
        """Return ``participant_id``'s public keys once checked against the log and the pin.

        Raises :class:`KeySubstituted` when the served keys are not the logged
        ones or differ from the pin without a logged key change. Results are
        cached for the life of this client.
        """
        if participant_id in self._participants:
            return self._participants[participant_id]
        reply = await self.call("GET", f"/v1/participants/{participant_id}",
                                doing=f"looking up participant {participant_id!r}")
        view = reply.body
        if not isinstance(view, dict) or view.get("id") != participant_id:
            raise VerificationFailed(f"the server answered for another participant than "
                                     f"{participant_id!r}")
        bundle = bundle_from_view(view)
        key_index = view.get("key_index")
        key_index = key_index if isinstance(key_index, int) else None
        entry_b64 = view.get("key_entry")
        logged = False
        if isinstance(entry_b64, str) and key_index is not None:
            entry_bytes = base64.b64decode(entry_b64)
            checkpoint = await self.checkpoint()
            await self.inclusion(entry_bytes, key_index, checkpoint)
            entry = check_entry(bundle, entry_bytes)
            if entry.index != key_index:
                raise VerificationFailed(f"the key entry of {participant_id!r} is entry "
                                         f"{entry.index}, not {key_index}")
            logged = True
        else:
            self.warn(f"the server offers no key entry for {participant_id!r}: its keys are "
                      "checked against the local pin only")
        pins = self._pins()
        note = check_pin(bundle, key_index, Pin.from_json(pins.get(participant_id)),
                         logged=logged)
        if note is not None:
            self.warn(note)
        if Pin.from_json(pins.get(participant_id)) != Pin(fingerprint=bundle.fingerprint,
                                                         key_index=key_index):
            pins[participant_id] = Pin(fingerprint=bundle.fingerprint,
                                       key_index=key_index).to_json()
            self.state.write_json(PINS_FILE, pins)
        verified = VerifiedParticipant(
            bundle=bundle, role=str(view.get("role", "")), status=str(view.get("status", "")),
            organisation=str(view.get("organisation", "")), country=str(view.get("country", "")),
            key_index=key_index, logged=logged)
        self._participants[participant_id] = verified
        return verified


def _hashes(body: Any) -> list[bytes]:
    hashes = body.get("hashes") if isinstance(body, dict) else None
    if not isinstance(hashes, list) or not all(isinstance(h, str) for h in hashes):
        raise VerificationFailed("the server's proof is malformed")
    try:
        return [base64.b64decode(h, validate=True) for h in hashes]
    except ValueError:
        raise VerificationFailed("the server's proof is malformed") from None
