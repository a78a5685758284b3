"""An aiohttp client session that signs every request (RFC 9421 Ed25519, RFC 9530 digests).

The client library of issue 6 builds on :class:`SignedSession`. Each request
gets a fresh nonce, ``created`` = now and ``expires`` = now + ``lifetime_s``,
and covers ``@method``, ``@target-uri`` and every header of the server's
profile that it carries (``exchange.wire.httpsig.COVERED_HEADERS``). The
session sets ``Content-Length``, ``Content-Type`` and ``Content-Digest``
itself so that aiohttp adds no uncovered header of that list.
"""

from __future__ import annotations

import json as jsonlib
import secrets
import time
from collections import deque
from collections.abc import AsyncIterable, Callable, Mapping
from types import TracebackType
from typing import Any

import aiohttp
from nacl.signing import SigningKey
from yarl import URL

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport import client_evidence
from exchange.transport.client_evidence import ByteSource, UploadHandle
from exchange.wire.httpsig import (
    COVERED_HEADERS,
    PREFIX_DIGEST_FIELD,
    content_digest,
    sign_request,
)

__all__ = ["DEFAULT_LIFETIME_S", "SignedSession", "sign_headers"]

#: Signatures live one minute: long enough for a slow upload to start, short for replays.
DEFAULT_LIFETIME_S = 60
_BODYLESS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


def sign_headers(
    method: str, target_uri: str, headers: Mapping[str, str], *, key: SigningKey, keyid: str,
    now: int, lifetime_s: int, expires: int | None = None, nonce: str | None = None,
) -> dict[str, str]:
    """Return ``headers`` plus Signature-Input and Signature for one request.

    Covers ``@method``, ``@target-uri`` and the profile's headers present in
    ``headers`` (which must already hold the final Content-Length,
    Content-Type and Content-Digest). ``expires`` defaults to now +
    ``lifetime_s`` and ``nonce`` to a fresh random value.
    """
    out = dict(headers)
    present = {name.lower() for name in out}
    covered = ["@method", "@target-uri", *(h for h in COVERED_HEADERS if h in present)]
    signature_input, signature = sign_request(
        method=method.upper(),
        target_uri=target_uri,
        headers=out,
        covered_components=covered,
        key=key,
        keyid=keyid,
        created=now,
        expires=now + lifetime_s if expires is None else expires,
        nonce=secrets.token_urlsafe(18) if nonce is None else nonce,
    )
    out["Signature-Input"] = signature_input
    out["Signature"] = signature
    return out


class SignedSession:
    """Signs and sends requests to ``base_url`` as ``identity`` (keyid = participant id).

    ``base_url`` must be the server's public URL (what it builds ``@target-uri``
    from); ``connect_url``, when given, is where requests are actually sent (a
    process behind a proxy or load balancer that answers for ``base_url``).
    Use as an async context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        identity: ParticipantIdentity,
        *,
        session: aiohttp.ClientSession | None = None,
        clock: Callable[[], float] = time.time,
        lifetime_s: int = DEFAULT_LIFETIME_S,
        connect_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.connect_url = (connect_url or base_url).rstrip("/")
        self.keyid = identity.id
        self._key: SigningKey = identity.signing_key
        self._own_session = session is None
        self._session = session or aiohttp.ClientSession()
        self._clock = clock
        self.lifetime_s = lifetime_s
        #: (method, path, Signature value) of the last requests signed: a client checks
        #: that the log entry of an access carries exactly the signature it sent.
        self.sent: deque[tuple[str, str, str]] = deque(maxlen=256)

    def __repr__(self) -> str:
        return f"SignedSession(base_url={self.base_url!r}, keyid={self.keyid!r})"

    async def __aenter__(self) -> SignedSession:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the underlying aiohttp session if this object created it."""
        if self._own_session:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        """The aiohttp session (for unsigned requests such as health)."""
        return self._session

    def url(self, path: str) -> URL:
        """Return the URL ``path`` (already percent-encoded) is sent to, never re-quoted."""
        return URL(self.connect_url + path, encoded=True)

    def sign(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        *,
        created: int | None = None,
        expires: int | None = None,
        nonce: str | None = None,
    ) -> dict[str, str]:
        """Return ``headers`` plus Signature-Input and Signature for this request.

        Covers ``@method``, ``@target-uri`` and the profile's headers present
        in ``headers``. ``created``/``expires``/``nonce`` default to now,
        now + ``lifetime_s`` and a fresh random value.
        """
        signed = sign_headers(method, self.base_url + path, headers, key=self._key,
                              keyid=self.keyid, now=int(self._clock()) if created is None
                              else created, lifetime_s=self.lifetime_s, expires=expires,
                              nonce=nonce)
        self.sent.append((method.upper(), path, signed["Signature"]))
        return signed

    def prepare(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        digest: str | None = None,
    ) -> tuple[dict[str, str], bytes | AsyncIterable[bytes] | None]:
        """Return the signed headers and the body to send for a request.

        ``json`` is serialised compactly; ``data`` bytes are sent as given; an
        async iterable is streamed (chunked unless ``headers`` has a
        Content-Length) and then ``digest`` (its Content-Digest value) is required.
        """
        method = method.upper()
        out = dict(headers or {})
        body: bytes | AsyncIterable[bytes] | None = data
        if json is not None:
            if data is not None:
                raise ValueError("give json or data, not both")
            body = jsonlib.dumps(json, separators=(",", ":")).encode("utf-8")
            out.setdefault("Content-Type", "application/json")
        if isinstance(body, bytes):
            if body:
                out.setdefault("Content-Type", "application/octet-stream")
                out["Content-Digest"] = content_digest(body)
            if body or method not in _BODYLESS:
                out["Content-Length"] = str(len(body))
            if not body:
                body = None
        elif body is not None:
            if digest is not None:
                out["Content-Digest"] = digest
            elif PREFIX_DIGEST_FIELD not in {name.lower() for name in out}:
                raise ValueError("a streamed body needs its Content-Digest value (digest=) "
                                 f"or, for a PATCH, an {PREFIX_DIGEST_FIELD} header")
            out.setdefault("Content-Type", "application/octet-stream")
        elif method not in _BODYLESS:
            out["Content-Length"] = "0"
        return self.sign(method, path, out), body

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: bytes | AsyncIterable[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        digest: str | None = None,
        expect_continue: bool = False,
    ) -> aiohttp.ClientResponse:
        """Sign and send one request; return the response (the caller reads and releases it)."""
        signed, body = self.prepare(method, path, json=json, data=data, headers=headers,
                                    digest=digest)
        # aiohttp would add Content-Type to a bodiless POST: an uncovered profile header.
        skip = () if "Content-Type" in signed else ("Content-Type",)
        return await self._session.request(
            method.upper(), self.url(path), data=body, headers=signed,
            expect100=expect_continue, allow_redirects=False, skip_auto_headers=skip,
        )

    # -- evidence (tus uploads, downloads): see exchange.transport.client_evidence --

    async def create_upload(self, case_id: str, length: int, *,
                            metadata: Mapping[str, bytes] | None = None) -> UploadHandle:
        """Create a tus upload of ``length`` bytes in ``case_id``."""
        return await client_evidence.create_upload(self, case_id, length, metadata=metadata)

    async def upload_offset(self, upload_path: str) -> int:
        """Return the server's offset of an upload (HEAD)."""
        return await client_evidence.upload_offset(self, upload_path)

    async def append_chunk(self, upload_path: str, offset: int, end: int, source: ByteSource,
                           *, expect_continue: bool = True,
                           digest: str | client_evidence.PrefixDigest | None = None) -> int:
        """PATCH bytes ``[offset, end)`` of ``source`` (see ``client_evidence.append_chunk``)."""
        return await client_evidence.append_chunk(self, upload_path, offset, end, source,
                                                  expect_continue=expect_continue,
                                                  digest=digest)

    async def commit_upload(self, upload_path: str, *, sealed_manifest: bytes,
                            ciphertext_sha256: str, epoch: int,
                            case_head: str) -> dict[str, Any]:
        """Commit a complete upload as evidence; return the record."""
        return await client_evidence.commit_upload(
            self, upload_path, sealed_manifest=sealed_manifest,
            ciphertext_sha256=ciphertext_sha256, epoch=epoch, case_head=case_head)

    async def open_download(self, evidence_id: str, *, start: int | None = None,
                            end: int | None = None) -> aiohttp.ClientResponse:
        """Request evidence ciphertext (optionally bytes ``[start, end)``); caller streams."""
        return await client_evidence.open_download(self, evidence_id, start=start, end=end)
