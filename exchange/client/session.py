"""The client library's session: identity + server URL + signed HTTP + pinned log state.

:class:`Client` signs every request (RFC 9421 via ``SignedSession``), pins the
audit log's verifier key, and keeps the last verified checkpoint in the state
directory: every new checkpoint must be signed by the pinned key and be
consistent (RFC 6962 consistency proof) with the stored one, else
:class:`LogForked`/:class:`CheckpointRollback`. Participant keys are checked
against their logged enrolment or key-change entry and a local pin
(``exchange.client.pins``). The operations (cases, evidence, feed) live in
sibling modules as functions taking a ``Client`` (re-exported by ``exchange.client``).

Use as ``async with Client(identity, url, anchor=..., state_dir=...) as c:``.
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

from exchange.audit.checkpoint import (
    Checkpoint,
    CheckpointError,
    key_chain,
    open_checkpoint,
    open_transition,
)
from exchange.audit.entry import AuditEntry, parse_entry
from exchange.audit.note import Ed25519Verifier, NoteError, parse_verifier_key
from exchange.audit.proof import ProofError, RootMismatch, verify_consistency, verify_inclusion
from exchange.audit.receipt import Receipt, encode_receipt, parse_receipt, verify_receipt
from exchange.audit.tree import leaf_hash
from exchange.audit.witness_policy import WitnessPolicy
from exchange.client.config import state_dir_for
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
from exchange.client.problems import AUDIT_INDEX_HEADER, printable, refusal
from exchange.client.state import LocalState
from exchange.client.trust import TrustView, VerifiedParticipant
from exchange.client.witnessing import covering, require_witnessed
from exchange.crypto.anchor import TrustAnchor
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
    ``warn`` receives warnings (default: ``warnings.warn``). With a
    ``witness_policy``, a checkpoint is accepted only with its witness quorum
    (``exchange.client.witnessing``).
    """

    def __init__(
        self,
        identity: ParticipantIdentity,
        url: str,
        *,
        anchor: TrustAnchor | None,
        state_dir: Path,
        warn: Callable[[str], None] | None = None,
        connect_url: str | None = None,
        witness_policy: WitnessPolicy | None = None,
        log_key: str | None = None,
    ) -> None:
        self.identity = identity
        if witness_policy is None and anchor is not None and anchor.has_witnesses:
            # The pinned anchor names the witnesses; a given policy overrides it.
            witness_policy = WitnessPolicy.from_json(anchor.witness_policy)
        self.witness_policy = witness_policy
        self.url = url.rstrip("/")
        self.anchor = anchor
        # Without an anchor a bare log key still lets an auditor check the log itself
        # (nothing about keys, members or epochs can be trusted then).
        self.log_key = anchor.log_key if anchor is not None else log_key
        self.state = LocalState(state_dir)
        self._trust = TrustView(self, anchor) if anchor is not None else None
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
        self._current_key = ""
        #: Log-key transitions verified so far (kept in log.json; see _learn_rotations).
        self._rotations: list[Any] = []

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
            return await self._call(method, path, json=json, ok=ok, doing=doing,
                                    headers=headers)
        except ServerRefused as err:
            if err.slug != "wrong-server-url" or not await self._follow_move(err.body):
                raise
        return await self._call(method, path, json=json, ok=ok, doing=doing, headers=headers)

    async def _follow_move(self, problem: Any) -> bool:
        """Sign for the URL the server names, if the verified directory records it.

        The server's word is only a lead: the directory chain (statements with
        inclusion proofs under the log key) must name exactly that URL as the
        public URL in force, else the claim is refused (exit 3). Requests keep
        going to the address we reached; the user is told to update --url.
        Returns False when there is nothing to follow (no URL, or the same).
        """
        url = problem.get("public_url") if isinstance(problem, dict) else None
        if not isinstance(url, str) or self.anchor is None or url == self.http.base_url:
            return False
        previous = self.http.base_url
        self.http.base_url = url.rstrip("/")
        try:
            state = await self.trust.sync(fresh=True)
        except ClientError:
            self.http.base_url = previous
            raise
        recorded = state.directory.server_url
        if recorded is None or recorded.rstrip("/") != self.http.base_url:
            self.http.base_url = previous
            if recorded is None:
                return False  # never moved: another spelling of the same server
            raise VerificationFailed(
                f"the server says its public URL is {printable(url, 100)}, but the verified "
                f"directory records {printable(recorded, 100)}",
                "keep using your --url; tell your administrator and auditor")
        self._link_state(previous)
        self.url = self.http.base_url
        self.warn(f"the server moved to {self.url} (a verified server.url statement); set "
                  f"--url / EXCHANGE_URL to {self.url}")
        return True

    def _link_state(self, previous: str) -> None:
        """Let the CLI's state folder of the new URL be this one (pins kept across a move).

        Only when the state folder is the CLI's per-server one and the new
        URL has none yet: a symbolic link is created, nothing is moved.
        """
        here = self.state.root
        root = here.parent.parent
        if state_dir_for(root, previous, self.identity.id) != here:
            return
        target = state_dir_for(root, self.http.base_url,
                               self.identity.id)
        if target.exists() or target.is_symlink():
            return
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            target.symlink_to(here, target_is_directory=True)
        except OSError as err:
            self.warn(f"could not link the state folder for the new URL: {err.strerror}")

    async def _call(self, method: str, path: str, *, json: Any, ok: tuple[int, ...],
                    doing: str, headers: dict[str, str] | None) -> Reply:
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
            return await self._call_text(path)
        except ServerRefused as err:
            if err.slug != "wrong-server-url" or not await self._follow_move(err.body):
                raise
        return await self._call_text(path)

    async def _call_text(self, path: str) -> tuple[bytes, int | None]:
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

    @property
    def trust(self) -> TrustView:
        """The verified view of keys, members and epochs (needs the pinned trust anchor)."""
        if self._trust is None:
            raise LogKeyMissing(
                "no trust anchor is pinned, so nothing the server says can be checked",
                "ask your administrator for the trust anchor file (written by 'exchange "
                "server init' as trust.json), compare its fingerprint with them by phone "
                "('exchange trust show FILE'), then pass it with --trust or set EXCHANGE_TRUST",
            )
        return self._trust

    def _log_key(self) -> str:
        log_key = self.log_key or self.trust.anchor.log_key  # LogKeyMissing without either
        if self._log_key_checked:
            return self._current_key
        try:
            parse_verifier_key(log_key)
        except NoteError as err:
            raise KeyProblem(f"the configured log key is not a valid verifier key: {err}",
                             "copy it again exactly as the administrator gave it") from None
        pinned = self.state.read_json(LOG_FILE)
        if isinstance(pinned, dict) and isinstance(pinned.get("log_key"), str):
            if pinned["log_key"] != log_key:
                raise VerificationFailed(
                    "the pinned trust anchor names another log key than the one this client "
                    "pinned before",
                    f"pinned: {pinned['log_key']}",
                    "if the administrator really replaced the log, move the state directory "
                    f"{str(self.state.root)!r} aside and rerun",
                )
        else:
            pinned = {"log_key": log_key}
            self.state.write_json(LOG_FILE, pinned)
        self._rotations = list(pinned.get("rotations") or [])
        self._current_key = self._replay_rotations(log_key, self._rotations)
        self._log_key_checked = True
        return self._current_key

    def _replay_rotations(self, key: str, rotations: list[Any]) -> str:
        """Return the key in force after ``rotations`` (each checked again from ``key``)."""
        first = parse_verifier_key(key)
        try:
            if not isinstance(first, Ed25519Verifier):
                raise ValueError("the log key is not an Ed25519 key")
            notes = [base64.b64decode(item["transition"]) for item in rotations]
            return key_chain(first, notes)[-1].vkey()
        except (AuditError, ValueError, KeyError, TypeError) as err:
            raise VerificationFailed(
                f"a log-key transition kept in {str(self.state.root)!r} does not verify: "
                f"{err}", "the state directory was altered; move it aside and rerun"
            ) from None

    async def _learn_rotations(self) -> bool:
        """Take new log keys from the server's transitions; return whether any was new.

        A key counts only through a note signed by the key in force and by the
        new key, at a tree consistent with the checkpoint verified before
        (and not smaller: the old key may sign nothing after it retired).
        """
        current = self._log_key()
        reply = await self.call("GET", "/v1/audit/log-keys", doing="reading the log keys")
        offered = reply.records("rotations", "the log-key transitions")
        learned = False
        for item in offered[len(self._rotations):]:
            try:
                note = base64.b64decode(str(item["transition"]), validate=True)
                checkpoint, new = open_transition(note, parse_verifier_key(current))
            except (AuditError, ValueError, KeyError) as err:
                raise VerificationFailed(
                    f"the server offers a new log key without a valid transition: {err}",
                    "a log key nobody holding the old one vouched for is refused; tell your "
                    "administrator and auditor") from None
            trusted = self.trusted_checkpoint()
            if trusted is not None:
                if trusted.size > checkpoint.size:
                    raise VerificationFailed(
                        f"the old log key signed a tree of size {trusted.size}, beyond the "
                        f"transition to a new key at size {checkpoint.size}",
                        "keep the state directory as evidence and tell your auditor")
                if trusted.size < checkpoint.size:
                    proof = await self._consistency(trusted.size, checkpoint.size)
                    try:
                        verify_consistency(trusted.size, checkpoint.size, proof, trusted.root,
                                           checkpoint.root)
                    except (ProofError, RootMismatch) as err:
                        raise VerificationFailed(
                            f"the log-key transition's tree is not consistent with the "
                            f"checkpoint verified before: {err}",
                            "keep the state directory as evidence and tell your auditor"
                        ) from None
                elif not hmac.compare_digest(trusted.root, checkpoint.root):
                    raise VerificationFailed("the log-key transition shows another tree")
            self._rotations.append({"index": checkpoint.size, "new_key": new.vkey(),
                                    "transition": base64.b64encode(note).decode("ascii")})
            self.state.write_json(LOG_FILE, {"log_key": self.log_key or self.trust.anchor.log_key,
                                             "rotations": self._rotations})
            self.state.write_bytes(CHECKPOINT_FILE, note)  # signed by the new key too
            current = self._current_key = new.vkey()
            self.warn(f"the log's key changed at entry {checkpoint.size} (a transition the "
                      f"previous key signed): now {current}")
            learned = True
        return learned

    def log_rotations(self) -> list[bytes]:
        """The verified log-key transition notes, oldest first (for the offline verifier)."""
        self._log_key()
        return [base64.b64decode(item["transition"]) for item in self._rotations]

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
        note = await require_witnessed(note, key, self.witness_policy, self._latest_note)
        try:
            new = open_checkpoint(note, key).checkpoint
        except (AuditError, ValueError) as err:
            if await self._learn_rotations():
                return await self.verify_checkpoint(note)
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

    async def _latest_note(self) -> bytes:
        return (await self.call_text("/v1/audit/checkpoint"))[0]

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
        checkpoint = await covering(index, checkpoint, self.checkpoint, self.witness_policy)
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
            await covering(index, await self.checkpoint(), self.checkpoint, self.witness_policy)
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

    def sent_signature(self, method: str, path: str) -> str | None:
        """Return the Signature header this client last sent for ``method path``."""
        for sent_method, sent_path, signature in reversed(self.http.sent):
            if (sent_method, sent_path) == (method.upper(), path):
                return signature
        return None

    async def logged_entry(self, index: int) -> tuple[bytes, AuditEntry]:
        """Return the server's receipt of entry ``index`` and the entry, both verified.

        The receipt's checkpoint must verify and be consistent with what this
        client verified, and the entry it carries must be included in it
        (own entries; auditors and administrators may read any). Anything
        else is :class:`VerificationFailed`.
        """
        text = await self.receipt(index)
        try:
            receipt = parse_receipt(text)
            if receipt.extra is None:
                raise AuditError("the receipt carries no entry")
            verify_receipt(text, receipt.extra, parse_verifier_key(self._log_key()))
            entry = parse_entry(receipt.extra)
        except (AuditError, ValueError) as err:
            raise VerificationFailed(f"the receipt of audit entry {index} does not verify: "
                                     f"{printable(str(err), 200)}") from None
        if entry.index != index:
            raise VerificationFailed(f"the receipt of audit entry {index} carries entry "
                                     f"{entry.index}")
        return text, entry

    async def own_entry(self, index: int | None, method: str, path: str, *,
                        details: dict[str, Any] | None = None) -> bytes:
        """Check that the log holds *our* entry for ``method path`` at ``index``; return it.

        The receipt's entry must be included in a checkpoint consistent with
        everything this client verified, name us as actor with outcome ok, and
        carry exactly the request signature we sent (and, when given, these
        ``details``). The receipt is returned for the custody record. A
        missing or different entry is :class:`VerificationFailed`: the server
        acknowledged an access it did not log as it happened.
        """
        if index is None:
            raise VerificationFailed(f"the server logged no audit entry for {method} "
                                     f"{printable(path, 120)}")
        sent = self.sent_signature(method, path)
        text, entry = await self.logged_entry(index)
        receipt = parse_receipt(text)
        mismatch = None
        if entry.index != index or entry.actor != self.identity.id or entry.outcome != "ok":
            mismatch = "another actor, index or outcome"
        elif entry.request is None or sent is None or not hmac.compare_digest(
                entry.request.signature, sent):
            mismatch = "another request signature than the one this client sent"
        elif details and any(entry.details.get(k) != v for k, v in details.items()):
            mismatch = "other details than this client's request"
        if mismatch is not None:
            raise VerificationFailed(
                f"audit entry {index}, which the server named for this {method} request, "
                f"records {mismatch}",
                "the server did not log this access as it happened; keep the state directory "
                "and tell your auditor")
        if self.witness_policy is not None:
            # Keep the proof against the cosigned checkpoint this client verified, so the
            # custody record carries a checkpoint others can compare.
            mine = parse_receipt(await self.proof_receipt(index))
            text = Receipt(index=index, proof=mine.proof, checkpoint=mine.checkpoint,
                           extra=receipt.extra).encode()
        return text

    # -- participants -----------------------------------------------------------------

    def forget_participants(self) -> None:
        """Drop the participants looked up in this session (after a directory change)."""
        self._participants.clear()

    async def participant(self, participant_id: str) -> VerifiedParticipant:
        """Return ``participant_id``'s keys, role and status from the verified directory.

        Never from the server's participant listing: the keys are those of the
        participant's enrolment or latest key-change statement, signed by the
        administrators named in the trust anchor (or appointed by them) and
        included in the verified log. Unknown participants raise
        :class:`VerificationFailed`.
        """
        if participant_id in self._participants:
            return self._participants[participant_id]
        state = await self.trust.sync()
        known = state.directory.participants.get(participant_id)
        if known is None:
            raise VerificationFailed(
                f"no verified statement enrols {participant_id!r}",
                "the server names a participant the administrators never enrolled; "
                "check the id, or tell your administrator")
        verified = VerifiedParticipant(
            bundle=known.bundle, role=known.role, status=known.status,
            organisation=known.organisation, country=known.country,
            key_index=known.keys_since, logged=True)
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
