"""The one exception tree of the project.

Every error we raise on purpose derives from :class:`ExchangeError`. Leaf
classes exist only where a caller branches on them. ``http_status`` is a hint
that the transport layer maps directly to a response (after h11's
``error_status_hint``); ``problem_type`` is the stable RFC 9457 type slug.
Messages are lowercase, carry no secrets and say what was expected and found.
"""

from __future__ import annotations


class ExchangeError(Exception):
    """Root of every deliberate error in exchange."""

    http_status: int = 500
    problem_type: str = "internal"


class CryptoError(ExchangeError):
    """A cryptographic format, key or authentication failure."""

    http_status = 400
    problem_type = "crypto"


class AuditError(ExchangeError):
    """A malformed or unverifiable audit structure (tree, proof, note, entry)."""

    http_status = 400
    problem_type = "audit"


class StorageError(ExchangeError):
    """A storage-layer failure (blob store or metadata store)."""

    http_status = 500
    problem_type = "storage"


class TransportError(ExchangeError):
    """A failure at the HTTP layer (signatures, protocol, limits)."""

    http_status = 400
    problem_type = "transport"
