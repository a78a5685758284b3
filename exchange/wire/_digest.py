"""RFC 9530 Content-Digest: produce the field for a body and check a body against it.

The field is a Structured Field Dictionary of algorithm → Byte Sequence. We
produce sha-256 (our profile) and accept sha-256 and sha-512; deprecated or
unknown algorithms (md5, sha, crc32c, ...) are ignored, as §5 allows, and never
count as evidence. Checking is incremental so 100 GB uploads hash in one pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from exchange.wire._httpsig_errors import (
    ContentDigestError,
    DigestMismatch,
    DigestMissing,
)
from exchange.wire._sfv import Item, parse_dictionary

__all__ = [
    "PREFIX_DIGEST_FIELD",
    "SUPPORTED_DIGEST_ALGORITHMS",
    "ContentDigestVerifier",
    "content_digest",
    "content_digest_from_sha256",
    "parse_content_digest",
    "parse_prefix_digest",
]

#: The exchange's PATCH header (issue 17): the SHA-256 of the upload's bytes from
#: offset 0 through the end of this PATCH, in Content-Digest's syntax. Both sides
#: keep that running hash anyway (it is the blob address), so a PATCH signed with
#: it costs one SHA-256 pass per byte per side instead of two; see docs/hashing.md.
PREFIX_DIGEST_FIELD = "exchange-prefix-digest"

SHA256_SIZE = 32
SHA512_SIZE = 64
#: hashlib, not pyca: hashlib releases the GIL while it hashes, so the server can
#: hash PATCH bodies in a worker thread without stalling its event loop (issue 17).
_HASHES: dict[str, tuple[Callable[[], Any], int]] = {
    "sha-256": (hashlib.sha256, SHA256_SIZE),
    "sha-512": (hashlib.sha512, SHA512_SIZE),
}
#: Algorithm keys (RFC 9530 §7.2 registry, status "Active") we verify.
SUPPORTED_DIGEST_ALGORITHMS = frozenset(_HASHES)


def content_digest_from_sha256(digest: bytes) -> str:
    """Return the Content-Digest field value for a body whose SHA-256 is ``digest``."""
    if not isinstance(digest, bytes):
        raise TypeError("digest must be bytes")
    if len(digest) != SHA256_SIZE:
        raise ValueError(f"sha-256 digest must be {SHA256_SIZE} bytes, found {len(digest)}")
    return "sha-256=:" + base64.b64encode(digest).decode("ascii") + ":"


def content_digest(body: bytes) -> str:
    """Return the Content-Digest field value (sha-256) for ``body``, e.g. ``sha-256=:...:``."""
    if not isinstance(body, bytes | bytearray | memoryview):
        raise TypeError("body must be bytes")
    return content_digest_from_sha256(hashlib.sha256(body).digest())


def parse_content_digest(value: str | bytes) -> dict[str, bytes]:
    """Return {algorithm: digest} for the supported algorithms in a Content-Digest value.

    Every member must be a Byte Sequence (§2); supported members must have the
    algorithm's digest size. Raises ``StructuredFieldError`` or ``ContentDigestError``.
    """
    digests: dict[str, bytes] = {}
    for algorithm, member in parse_dictionary(value).items():
        if not isinstance(member, Item) or not isinstance(member.value, bytes):
            raise ContentDigestError(
                f"content-digest member {algorithm!r} must be a byte sequence"
            )
        if algorithm in _HASHES:
            size = _HASHES[algorithm][1]
            if len(member.value) != size:
                raise ContentDigestError(
                    f"{algorithm} digest must be {size} bytes, found {len(member.value)}"
                )
            digests[algorithm] = member.value
    return digests


def parse_prefix_digest(value: str | bytes) -> bytes:
    """Return the sha-256 member of an ``Exchange-Prefix-Digest`` value (32 bytes).

    Raises ``StructuredFieldError``, ``ContentDigestError`` or ``DigestMissing``.
    """
    digests = parse_content_digest(value)
    if "sha-256" not in digests:
        raise DigestMissing(f"{PREFIX_DIGEST_FIELD} has no sha-256 member")
    return digests["sha-256"]


class ContentDigestVerifier:
    """Checks content against a Content-Digest field, one chunk at a time.

    Feed the content with ``update`` and call ``verify`` once at the end. Every
    supported member present is checked, not just the strongest, so a request
    cannot carry one good and one bad digest. Single use: after ``verify`` (pass
    or fail) the object refuses further calls.
    """

    __slots__ = ("_done", "_expected", "_hashers")

    def __init__(self, field_value: str | bytes | None, *, require_sha256: bool = True) -> None:
        """Parse ``field_value``; raise ``DigestMissing`` if it is absent or has no usable member.

        With ``require_sha256`` (our profile) a sha-256 member must be present.
        """
        if field_value is None:
            raise DigestMissing("content-digest field is absent")
        self._expected = parse_content_digest(field_value)
        if require_sha256 and "sha-256" not in self._expected:
            raise DigestMissing(
                f"content-digest has no sha-256 member, found {sorted(self._expected)!r}"
            )
        if not self._expected:
            raise DigestMissing("content-digest has no sha-256 or sha-512 member")
        self._hashers = {
            algorithm: _HASHES[algorithm][0]() for algorithm in self._expected
        }
        self._done = False

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms that will be checked, in field order."""
        return tuple(self._expected)

    def update(self, chunk: bytes) -> None:
        """Hash the next chunk of content."""
        if self._done:
            raise RuntimeError("content digest verifier already finalized")
        for hasher in self._hashers.values():
            hasher.update(chunk)

    def verify(self) -> None:
        """Return if every supported digest matches the content; raise ``DigestMismatch`` if not."""
        if self._done:
            raise RuntimeError("content digest verifier already finalized")
        self._done = True
        mismatched = [
            algorithm
            for algorithm, hasher in self._hashers.items()
            if not hmac.compare_digest(hasher.digest(), self._expected[algorithm])
        ]
        if mismatched:
            raise DigestMismatch(f"content does not match its {', '.join(mismatched)} digest")
