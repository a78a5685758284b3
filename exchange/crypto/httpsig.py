"""RFC 9421 HTTP Message Signatures (Ed25519 profile) and RFC 9530 Content-Digest.

Pure: builds and checks signature bases from component values; no HTTP I/O.
Used by the transport layer to sign and verify requests and by the audit
verifier to re-check the request evidence stored in each log entry.
"""

from __future__ import annotations

from collections.abc import Sequence


def signature_base(covered: Sequence[tuple[str, str]], signature_params: str) -> bytes:
    """Return the RFC 9421 §2.5 signature base.

    ``covered`` is the ordered list of (serialized component identifier, value),
    e.g. ``('"@method"', "POST")``; ``signature_params`` is the serialized
    ``@signature-params`` value, e.g. ``("@method");created=1618884473;keyid="k"``.
    """
    lines = [f"{identifier}: {value}" for identifier, value in covered]
    lines.append(f'"@signature-params": {signature_params}')
    text = "\n".join(lines)
    if any(ord(ch) > 0x7E or (ord(ch) < 0x20 and ch != "\n") for ch in text):
        raise ValueError("signature base components must be printable ASCII")
    return text.encode("ascii")
