"""RFC 9421 HTTP Message Signatures (Ed25519 profile) and RFC 9530 Content-Digest.

Pure: builds and checks signature bases from component values; no HTTP I/O.
Used by the transport layer to sign and verify requests and by the audit
verifier to re-check the request evidence stored in each log entry.

Theory of operation: Signature-Input and Signature are Structured Field
Dictionaries keyed by a label (``_sfv``). The Signature-Input member lists the
covered component identifiers and the signature parameters; the signature base
(§2.5) is one ``identifier: value`` line per component (``_components``) plus
the ``@signature-params`` line, which is the member re-serialized exactly as
parsed. Verification (§3.2) checks our profile first (cheap, before any key
lookup or curve arithmetic), then the Ed25519 signature, then, if the body is
given, its Content-Digest (``_digest``). Replay (nonce) checking needs storage
and is the caller's job: the verified nonce is returned for it.
"""

from __future__ import annotations

import base64
import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from exchange.wire._components import (
    DERIVED_COMPONENTS,
    ComponentId,
    Headers,
    _Message,
    resolve_components,
)
from exchange.wire._digest import (
    PREFIX_DIGEST_FIELD,
    SUPPORTED_DIGEST_ALGORITHMS,
    ContentDigestVerifier,
    content_digest,
    content_digest_from_sha256,
    parse_content_digest,
    parse_prefix_digest,
)
from exchange.wire._httpsig_errors import (
    ClockSkew,
    ComponentMissing,
    ContentDigestError,
    DigestMismatch,
    DigestMissing,
    HttpSigError,
    SignatureAmbiguous,
    SignatureBaseError,
    SignatureExpired,
    SignatureInvalid,
    SignatureMissing,
    SignatureParamsInvalid,
    StructuredFieldError,
    UnknownKey,
    UnsupportedAlgorithm,
    UnsupportedComponent,
)
from exchange.wire._sfv import Item, serialize_dictionary
from exchange.wire._siginput import (
    SignatureInputMember,
    SignatureParams,
    parse_signature,
    parse_signature_input,
)

__all__ = [
    "COVERED_HEADERS",
    "DERIVED_COMPONENTS",
    "ED25519_ALG",
    "PREFIX_DIGEST_FIELD",
    "SUPPORTED_DIGEST_ALGORITHMS",
    "ClockSkew",
    "ComponentId",
    "ComponentMissing",
    "ContentDigestError",
    "ContentDigestVerifier",
    "DigestMismatch",
    "DigestMissing",
    "Headers",
    "HttpSigError",
    "PublicKeyLookup",
    "SignatureAmbiguous",
    "SignatureBaseError",
    "SignatureExpired",
    "SignatureInputMember",
    "SignatureInvalid",
    "SignatureMissing",
    "SignatureParams",
    "SignatureParamsInvalid",
    "StructuredFieldError",
    "UnknownKey",
    "UnsupportedAlgorithm",
    "UnsupportedComponent",
    "VerifiedSignature",
    "content_digest",
    "content_digest_from_sha256",
    "parse_content_digest",
    "parse_prefix_digest",
    "parse_signature",
    "parse_signature_input",
    "resolve_components",
    "select_signature",
    "sign_request",
    "signature_base",
    "verify_request",
]

#: The exchange's signature profile: request headers a signature must cover whenever they
#: are present (with ``@method`` and ``@target-uri``). Here, in the pure wire package, so the
#: client signs by it without importing the server's request handling.
COVERED_HEADERS = (
    "content-digest", PREFIX_DIGEST_FIELD, "content-type", "content-length", "upload-offset",
    "upload-length", "upload-metadata", "tus-resumable", "range", "last-event-id",
)

#: The only ``alg`` value we accept (RFC 9421 §3.3.6).
ED25519_ALG = "ed25519"
ED25519_SEED_SIZE = 32
ED25519_PUBLIC_KEY_SIZE = 32
ED25519_SIGNATURE_SIZE = 64
_SIGNATURE_PARAMS_ID = '"@signature-params"'

#: Returns the Ed25519 public key for a keyid: raw 32 bytes or a VerifyKey; None
#: (or raising KeyError) when the keyid is unknown.
PublicKeyLookup = Callable[[str], VerifyKey | bytes | None]


def _printable(text: str) -> bool:
    return text.isascii() and text.isprintable()


def signature_base(covered: Sequence[tuple[str, str]], signature_params: str) -> bytes:
    """Return the RFC 9421 §2.5 signature base.

    ``covered`` is the ordered list of (serialized component identifier, value),
    e.g. ``('"@method"', "POST")``; ``signature_params`` is the serialized
    ``@signature-params`` value, e.g. ``("@method");created=1618884473;keyid="k"``.
    Raises ``SignatureBaseError`` (a ``ValueError``) when an identifier or value is
    not printable ASCII (a newline would let a value forge a line of the base),
    or when an identifier repeats or is ``@signature-params`` (both forbidden by §2.5).
    """
    lines: list[str] = []
    seen: set[str] = set()
    for identifier, value in covered:
        if not (_printable(identifier) and _printable(value)):
            raise SignatureBaseError(
                f"signature base component {identifier[:40]!r} must be printable ASCII"
            )
        if identifier in seen or identifier == _SIGNATURE_PARAMS_ID:
            raise SignatureBaseError(f"component {identifier[:40]!r} may not appear here twice")
        seen.add(identifier)
        lines.append(f"{identifier}: {value}")
    if not _printable(signature_params):
        raise SignatureBaseError("signature params must be printable ASCII")
    lines.append(f"{_SIGNATURE_PARAMS_ID}: {signature_params}")
    return "\n".join(lines).encode("ascii")


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifiedSignature:
    """What a successful ``verify_request`` proves, ready to store as audit evidence.

    ``signature_input_member``, ``signature_member`` and ``covered`` are exactly
    the ``RequestEvidence`` fields: the signature base can be rebuilt from them.
    """

    label: str
    keyid: str
    params: SignatureParams
    components: tuple[ComponentId, ...]
    covered: tuple[tuple[str, str], ...]
    signature: bytes
    nonce: str | None
    signature_input_member: str
    signature_member: str


def _component_id(component: str | ComponentId) -> ComponentId:
    if isinstance(component, ComponentId):
        return component
    if not isinstance(component, str):
        raise TypeError("a component must be a str name or a ComponentId")
    return ComponentId(name=component if component.startswith("@") else component.lower())


def _signing_key(key: SigningKey | bytes) -> SigningKey:
    if isinstance(key, SigningKey):
        return key
    if not isinstance(key, bytes):
        raise TypeError("key must be a nacl SigningKey or a 32-byte Ed25519 seed")
    if len(key) != ED25519_SEED_SIZE:
        raise ValueError(f"ed25519 seed must be {ED25519_SEED_SIZE} bytes, found {len(key)}")
    return SigningKey(key)


def sign_request(
    *,
    method: str,
    target_uri: str,
    headers: Headers,
    covered_components: Sequence[str | ComponentId],
    key: SigningKey | bytes,
    keyid: str,
    created: int,
    expires: int | None = None,
    nonce: str | None = None,
    label: str = "sig1",
    tag: str | None = None,
    include_alg: bool = True,
) -> tuple[str, str]:
    """Return the (Signature-Input, Signature) field values signing this request.

    ``headers`` must already hold every covered field (add Content-Digest first).
    Our verifier insists on ``expires`` and ``nonce``; they are optional here only
    so published examples without them can be reproduced.
    """
    member = SignatureInputMember(
        label=label,
        components=tuple(_component_id(c) for c in covered_components),
        params=SignatureParams(
            created=created,
            expires=expires,
            keyid=keyid,
            nonce=nonce,
            alg=ED25519_ALG if include_alg else None,
            tag=tag,
        ),
    )
    covered = resolve_components(
        member.components, method=method, target_uri=target_uri, headers=headers
    )
    base = signature_base(covered, member.signature_params)
    signature = _signing_key(key).sign(base).signature
    return member.serialize(), serialize_dictionary({label: Item(signature)})


def select_signature(
    headers: Headers, *, label: str | None = None
) -> tuple[SignatureInputMember, bytes]:
    """Return the Signature-Input member and signature bytes to verify.

    With ``label`` None, a single signature is used, and among several the one
    :func:`_pick_label` chooses (RFC 9421 §4.3). Lets an
    async caller read the keyid and fetch the key before ``verify_request``.
    Raises ``SignatureMissing``, ``SignatureAmbiguous`` or a parse error.
    """
    message = _Message(method=None, target_uri=None, headers=headers, status=None,
                       only=_SIGNATURE_FIELDS)
    return _select(message, label)


_SIGNATURE_FIELDS = frozenset({"signature-input", "signature"})


def _select(message: _Message, label: str | None) -> tuple[SignatureInputMember, bytes]:
    input_value = message.field("signature-input")
    signature_value = message.field("signature")
    if input_value is None or signature_value is None:
        raise SignatureMissing("request has no signature-input and signature fields")
    inputs = parse_signature_input(input_value)
    signatures = parse_signature(signature_value)
    if label is None:
        label = _pick_label(inputs, signatures)
    if label is None or label not in inputs or label not in signatures:
        raise SignatureMissing(f"no signature-input and signature pair for label {label!r}")
    return inputs[label], signatures[label]


#: The label our own client gives its signature; preferred among several.
OUR_LABEL = "sig1"


def _fits_profile(member: SignatureInputMember) -> bool:
    params = member.params
    return (params.alg in (None, ED25519_ALG) and params.keyid is not None
            and params.created is not None and bool(params.nonce))


def _pick_label(inputs: dict[str, SignatureInputMember],
                signatures: dict[str, bytes]) -> str | None:
    """Choose which of several signatures (RFC 9421 §4.3) speaks for the requester.

    A proxy may add its own signature next to the client's. Only members
    present in both fields and shaped like our profile (ed25519 or no ``alg``;
    ``keyid``, ``created`` and ``nonce`` present) are candidates; the one
    labelled :data:`OUR_LABEL` wins, else the first in field order. The choice
    reads no key, so it cannot be steered by trying keys; the chosen signature
    must then verify in full (the others are not checked: they speak for
    someone else).
    """
    paired = [name for name in inputs if name in signatures]
    if len(paired) <= 1:
        return paired[0] if paired else next(iter(inputs), None)
    candidates = [name for name in paired if _fits_profile(inputs[name])]
    if OUR_LABEL in candidates:
        return OUR_LABEL
    if not candidates:
        raise SignatureAmbiguous(
            f"none of the signatures {sorted(paired)[:8]!r} fits the ed25519 profile"
        )
    return candidates[0]


def _check_profile(
    member: SignatureInputMember,
    *,
    required: frozenset[ComponentId],
    now: int | float,
    max_skew_s: int,
    expected_tag: str | None,
    require_expires: bool,
    require_nonce: bool,
) -> str:
    """Return the keyid after checking everything that needs neither key nor curve."""
    params = member.params
    if params.alg is not None and params.alg != ED25519_ALG:
        raise UnsupportedAlgorithm(f"alg must be {ED25519_ALG!r}, found {params.alg[:40]!r}")
    if params.keyid is None:
        raise SignatureParamsInvalid("signature has no keyid parameter")
    if params.created is None:
        raise SignatureParamsInvalid("signature has no created parameter")
    if require_expires and params.expires is None:
        raise SignatureParamsInvalid("signature has no expires parameter")
    if require_nonce and not params.nonce:
        raise SignatureParamsInvalid("signature has no nonce parameter")
    if expected_tag is not None and params.tag != expected_tag:
        found = None if params.tag is None else params.tag[:40]
        raise SignatureParamsInvalid(f"signature tag must be {expected_tag!r}, found {found!r}")
    covered = frozenset(member.components)
    missing = required - covered
    if missing:
        names = sorted(c.serialize() for c in missing)
        raise ComponentMissing(f"signature does not cover required components {names}")
    # Covering more than required (``@authority``, ``date``...) is accepted
    # (RFC 9421 §3.2 leaves it to the verifier): the signer vouches for more and
    # every covered value still enters the signature base we check.
    if params.expires is not None:
        if params.expires <= params.created:
            raise SignatureParamsInvalid(
                f"expires {params.expires} must be after created {params.created}"
            )
        if now > params.expires:
            raise SignatureExpired(f"signature expired at {params.expires}, now is {int(now)}")
    if abs(now - params.created) > max_skew_s:
        raise ClockSkew(
            f"signature created at {params.created} is more than {max_skew_s}s from now {int(now)}"
        )
    return params.keyid


def _verify_key(public_key_lookup: PublicKeyLookup, keyid: str) -> bytes:
    """Return the raw 32-byte public key ``keyid`` names."""
    try:
        key = public_key_lookup(keyid)
    except KeyError:
        key = None
    if key is None:
        raise UnknownKey(f"unknown keyid {keyid[:60]!r}")
    if isinstance(key, VerifyKey):
        return bytes(key)
    if not isinstance(key, bytes) or len(key) != ED25519_PUBLIC_KEY_SIZE:
        raise TypeError("public_key_lookup must return a VerifyKey or 32 raw bytes")
    return key


@functools.lru_cache(maxsize=64)
def _required_ids(components: frozenset[str | ComponentId]) -> frozenset[ComponentId]:
    """The identifiers of a required set (a server asks the same few sets again and again)."""
    return frozenset(_component_id(c) for c in components)


def verify_request(
    *,
    method: str,
    target_uri: str,
    headers: Headers,
    public_key_lookup: PublicKeyLookup,
    now: int | float,
    max_skew_s: int,
    required_components: Iterable[str | ComponentId],
    label: str | None = None,
    expected_tag: str | None = None,
    require_expires: bool = True,
    require_nonce: bool = True,
    body: bytes | None = None,
    selected: tuple[SignatureInputMember, bytes] | None = None,
) -> VerifiedSignature:
    """Return the verified signature of a request, or raise an ``HttpSigError`` leaf.

    The signature must cover ``required_components`` (and may cover more), carry keyid,
    created (within ``max_skew_s`` of ``now``, Unix seconds), expires (not passed)
    and nonce, and ``alg`` if present must be ed25519. When ``body`` is given it
    must match a covered Content-Digest (sha-256); for streamed bodies use
    ``ContentDigestVerifier`` afterwards. The nonce is returned, not checked for
    replay. ``target_uri`` must come from the server's configured origin.
    ``selected``, when given, MUST be ``select_signature(headers, label=label)``
    of these very headers: a server that selected the signature to read the
    keyid and look the key up passes it on instead of having the fields parsed
    a second time.
    """
    if not isinstance(max_skew_s, int) or max_skew_s < 0:
        raise ValueError("max_skew_s must be a non-negative int")
    required = _required_ids(frozenset(required_components))
    if body is not None and ComponentId(name="content-digest") not in required:
        raise ValueError("verifying a body requires content-digest among required_components")
    message = _Message(method=method, target_uri=target_uri, headers=headers, status=None)
    member, signature = _select(message, label) if selected is None else selected
    keyid = _check_profile(
        member,
        required=required,
        now=now,
        max_skew_s=max_skew_s,
        expected_tag=expected_tag,
        require_expires=require_expires,
        require_nonce=require_nonce,
    )
    public_key = _verify_key(public_key_lookup, keyid)
    covered = message.covered(member.components)
    base = signature_base(covered, member.signature_params)
    if len(signature) != ED25519_SIGNATURE_SIZE:
        raise SignatureInvalid("signature does not verify")
    try:
        # PyNaCl's VerifyKey.verify without its wrapper objects: libsodium's
        # crypto_sign_open over signature || message, as VerifyKey.verify calls it.
        crypto_sign_open(signature + base, public_key)
    except BadSignatureError:
        raise SignatureInvalid("signature does not verify") from None
    if body is not None:
        checker = ContentDigestVerifier(message.field("content-digest"), require_sha256=True)
        checker.update(body)
        checker.verify()
    signature_b64 = base64.b64encode(signature).decode("ascii")
    return VerifiedSignature(
        label=member.label,
        keyid=keyid,
        params=member.params,
        components=member.components,
        covered=covered,
        signature=signature,
        nonce=member.params.nonce,
        signature_input_member=member.serialize(),
        signature_member=f"{member.label}=:{signature_b64}:",
    )
