"""Exception leaves for RFC 9421 HTTP Message Signatures and RFC 9530 Content-Digest.

Kept apart from ``httpsig`` so the Structured Field parser (``_sfv``) can raise
them without an import cycle; ``exchange.wire.httpsig`` re-exports them all.
Each leaf carries a stable RFC 9457 ``problem_type`` slug and an ``http_status``
hint: 401 when the requester is not authenticated, 400 when the request is malformed.
"""

from __future__ import annotations

from exchange.errors import CryptoError

__all__ = [
    "ClockSkew",
    "ComponentMissing",
    "ContentDigestError",
    "DigestMismatch",
    "DigestMissing",
    "HttpSigError",
    "SignatureAmbiguous",
    "SignatureBaseError",
    "SignatureExpired",
    "SignatureInvalid",
    "SignatureMissing",
    "SignatureParamsInvalid",
    "StructuredFieldError",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "UnsupportedComponent",
]


class HttpSigError(CryptoError):
    """Root of every HTTP signature and content-digest failure."""

    http_status = 400
    problem_type = "http-signature"


class StructuredFieldError(HttpSigError):
    """A Structured Field (RFC 9651) value is malformed or outside our subset."""

    problem_type = "malformed-field"


class SignatureBaseError(HttpSigError, ValueError):
    """A signature base cannot be built (non-printable value, duplicate component).

    Also a ``ValueError`` because ``signature_base`` has always raised that.
    """

    problem_type = "signature-base-invalid"


class UnsupportedComponent(HttpSigError):
    """A component identifier names a derived component or parameter we do not support."""

    problem_type = "component-unsupported"


class ComponentMissing(HttpSigError):
    """A required component is not covered, or a covered component is absent from the message."""

    problem_type = "component-missing"


class SignatureParamsInvalid(HttpSigError):
    """A signature parameter is missing, of the wrong type, unknown or inconsistent."""

    problem_type = "signature-params-invalid"


class UnsupportedAlgorithm(HttpSigError):
    """The ``alg`` parameter names an algorithm other than ed25519."""

    problem_type = "unsupported-algorithm"


class SignatureAmbiguous(HttpSigError):
    """Several signatures are present and none of them fits the profile (or none is ours)."""

    problem_type = "signature-ambiguous"


class SignatureMissing(HttpSigError):
    """No Signature / Signature-Input pair for the label is present."""

    http_status = 401
    problem_type = "signature-missing"


class SignatureInvalid(HttpSigError):
    """The signature does not verify. Deliberately carries no detail about why."""

    http_status = 401
    problem_type = "signature-invalid"


class SignatureExpired(HttpSigError):
    """The ``expires`` time of the signature has passed."""

    http_status = 401
    problem_type = "signature-expired"


class ClockSkew(HttpSigError):
    """The ``created`` time is further from the verifier's clock than the allowed skew."""

    http_status = 401
    problem_type = "clock-skew"


class UnknownKey(HttpSigError):
    """The ``keyid`` does not name a key the verifier knows."""

    http_status = 401
    problem_type = "unknown-key"


class ContentDigestError(HttpSigError):
    """A Content-Digest field is unusable (RFC 9530)."""

    problem_type = "digest-invalid"


class DigestMissing(ContentDigestError):
    """The Content-Digest field is absent or carries no algorithm we accept."""

    problem_type = "digest-missing"


class DigestMismatch(ContentDigestError):
    """The content does not hash to the value in the Content-Digest field."""

    problem_type = "digest-mismatch"
