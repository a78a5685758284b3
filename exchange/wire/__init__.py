"""exchange.wire: the HTTP wire protocols, pure (no I/O).

One home for what both ends of a request must agree on byte for byte:
RFC 9651 Structured Field Values (``_sfv``), RFC 9421 HTTP Message
Signatures (``httpsig``: signing, verification, Signature-Input), RFC 9530
Content-Digest (``_digest``) and the tus 1.0 upload state machine (``tus``).
It sits below ``service/``, ``transport/`` and ``client/`` and may import only
``crypto/`` and ``errors``; the architecture test keeps it free of I/O.
"""
