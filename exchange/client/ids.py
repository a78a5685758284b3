"""Identifiers the server sends, checked before they reach a path, a URL or a log line.

Every id the client receives (case, evidence, upload, participant) is
hostile until it matches the strict pattern of its kind: an id that is
absolute, holds ``/``, ``..``, a percent sign, a control character or is
merely very long would otherwise become a file name, a request path or a
terminal escape. Ids never name local files directly anyway: partial
downloads live under a hash of the id (:func:`local_key`) and file names come
only from the signed manifest (:func:`local_file_name`).
"""

from __future__ import annotations

import hashlib
import re

from exchange.client.errors import MalformedReply
from exchange.client.problems import printable

__all__ = [
    "CUSTODY_SUFFIX",
    "check_case_id",
    "check_evidence_id",
    "check_participant_id",
    "check_upload_id",
    "local_file_name",
    "local_key",
]

#: What the server may use for each kind of id: ASCII letters, digits and a few
#: separators, starting and ending with a letter or digit (so never ``.``/``..``).
_PATTERNS = {
    "case": re.compile(r"[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?"),
    "evidence": re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62}[A-Za-z0-9])?"),
    "upload": re.compile(r"[A-Za-z0-9_-]{1,64}"),
    "participant": re.compile(r"[a-z0-9](?:[a-z0-9._@-]{0,62}[a-z0-9])?"),
}
#: Suffix of the chain-of-custody record written next to each pulled file.
CUSTODY_SUFFIX = ".custody.json"
_MAX_NAME_BYTES = 170  # + ".<evidence id>" (65) + the custody suffix (13) < 255


def _check(kind: str, value: object, what: str) -> str:
    if isinstance(value, str) and _PATTERNS[kind].fullmatch(value):
        return value
    shown = printable(value, 80) if isinstance(value, str) else type(value).__name__
    raise MalformedReply(f"{what}: the server sent {kind} id '{shown}', which is not a "
                          f"valid {kind} id; refusing to use it")


def check_case_id(value: object, what: str = "reading the server's answer") -> str:
    """Return ``value`` if it is a well-formed case id, else raise :class:`MalformedReply`."""
    return _check("case", value, what)


def check_evidence_id(value: object, what: str = "reading the server's answer") -> str:
    """Return ``value`` if it is a well-formed evidence id, else raise :class:`MalformedReply`."""
    return _check("evidence", value, what)


def check_upload_id(value: object, what: str = "reading the server's answer") -> str:
    """Return ``value`` if it is a well-formed upload id, else raise :class:`MalformedReply`."""
    return _check("upload", value, what)


def check_participant_id(value: object, what: str = "reading the server's answer") -> str:
    """Return ``value`` if it is a well-formed participant id, else :class:`MalformedReply`."""
    return _check("participant", value, what)


def local_key(*parts: str) -> str:
    """Return a file-name-safe hash of ``parts`` (names of client-owned files and directories)."""
    joined = "\x00".join(parts).encode("utf-8", "surrogateescape")
    return hashlib.sha256(joined).hexdigest()[:32]


def local_file_name(name: str, fallback: str) -> str:
    """Return the signed manifest's file ``name`` made safe as one local path component.

    Control and formatting characters (bidirectional overrides included) and
    path separators become ``_``, leading dots are dropped (no hidden files,
    never ``.``/``..``), the name is cut to 170 UTF-8 bytes, and a name that
    could be taken for a custody record gets a trailing ``_``. An empty result
    becomes ``fallback`` (a checked evidence id).
    """
    cleaned = "".join("_" if ch in "/\\" or not ch.isprintable() else ch for ch in name)
    cleaned = cleaned.lstrip(". ")
    while len(cleaned.encode("utf-8")) > _MAX_NAME_BYTES:
        cleaned = cleaned[:-1]
    cleaned = cleaned.rstrip(" ")
    if cleaned.endswith(CUSTODY_SUFFIX):
        cleaned += "_"
    return cleaned or fallback
