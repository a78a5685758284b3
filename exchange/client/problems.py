"""Turn the server's RFC 9457 problem documents into one plain sentence and a hint.

The server's ``type`` slugs are stable (``https://exchange.invalid/problems/<slug>``);
the table below says, for the slugs a user can meet, what happened in words a
non-specialist understands and what to do next. Unknown slugs fall back to
the server's own ``detail``.

Everything taken from the server is hostile until shown otherwise: the slug
must be well formed (``client_evidence.problem_slug``), the detail is shown as
a truncated ``repr`` (so control characters cannot reach a terminal), and the
caller's ``doing`` (which may quote server-supplied ids) is escaped the same way.
"""

from __future__ import annotations

from typing import Any

from exchange.client.errors import ServerRefused
from exchange.terminal import printable
from exchange.transport.client_evidence import problem_slug

__all__ = ["AUDIT_INDEX_HEADER", "printable", "refusal"]

AUDIT_INDEX_HEADER = "Exchange-Audit-Index"
_MAX_DETAIL_CHARS = 200
_MAX_DOING_CHARS = 200

_PLAIN: dict[str, tuple[str, str]] = {
    "unknown-key": ("the server does not know your key",
                    "ask your administrator to enrol you ('exchange enroll BUNDLE ...')"),
    "participant-suspended": ("your participant account is suspended",
                              "contact your administrator"),
    "signature-invalid": ("the server could not verify your request signature",
                          "check that --keystore is the identity the administrator enrolled"),
    "wrong-server-url": ("the request was signed for another URL of this server than its "
                         "public URL (another host name or port for the same server)",
                         "use the server's public URL as --url / EXCHANGE_URL"),
    "clock-skew": ("your computer's clock is too far from the server's",
                   "set the clock (e.g. enable NTP) and retry"),
    "signature-expired": ("the request expired before it reached the server",
                          "retry; check the computer's clock if it keeps happening"),
    "replayed-nonce": ("the server saw this exact request before (replay refused)", "retry"),
    "forbidden": ("your role does not allow this", "ask a participant with the right role"),
    "not-a-member": ("you are not an active member of this case (or it does not exist)",
                     "check the case id ('exchange case list'), or ask a prosecutor of the "
                     "case to add you"),
    "not-found": ("the server has no such object", "check the identifier ('exchange case list')"),
    "already-exists": ("that already exists on the server", ""),
    "blob-corrupt": ("the server's stored copy of this evidence is damaged",
                     "tell the server administrator; the uploader may need to upload again"),
    "too-many-uploads": ("you have too many unfinished uploads on the server",
                         "finish or wait for earlier uploads, then retry"),
    "upload-gone": ("the server no longer has this upload (expired or terminated)",
                    "rerun the command to start the upload again"),
    "upload-expired": ("the server no longer has this upload (expired)",
                       "rerun the command to start the upload again"),
    "hash-mismatch": ("the server's copy of the upload does not match what was sent",
                      "rerun the command to upload the file again"),
    "service-unavailable": ("the server's database is unavailable", "retry in a minute"),
    "request-too-large": ("the request is larger than the server accepts", ""),
    "upload-too-large": ("the file is larger than the server accepts",
                         "ask the administrator about the upload size limit"),
    "unknown-epoch": ("the case key epoch is unknown to the server",
                      "rerun: the case key may have been rotated meanwhile"),
}


def refusal(status: int, body: Any, *, audit_index: int | None = None,
            doing: str = "") -> ServerRefused:
    """Return the :class:`ServerRefused` for a problem answer (``body`` as decoded JSON).

    ``body`` is whatever the server sent (any JSON value, or None); the
    message stays one printable line of bounded length whatever it holds.
    """
    slug = problem_slug(body)
    raw_detail = body.get("detail") if isinstance(body, dict) else None
    detail = f"{raw_detail[:_MAX_DETAIL_CHARS]!r}" if isinstance(raw_detail, str) and \
        raw_detail else ""
    plain, hint = _PLAIN.get(slug, ("", ""))
    if not plain:
        plain = f"the server refused the request ({status} {slug})"
        if detail:
            plain += f": {detail}"
    elif detail and slug in ("forbidden", "not-found", "already-exists", "not-a-member",
                             "wrong-server-url"):
        plain += f" ({detail})"
    prefix = f"{printable(doing, _MAX_DOING_CHARS)}: " if doing else ""
    hints = (hint,) if hint else ()
    if audit_index is not None:
        hints = (*hints, f"the refusal is logged at audit index {audit_index}")
    return ServerRefused(prefix + plain, *hints, status=status, slug=slug, body=body,
                         audit_index=audit_index)
