"""Text that meets a terminal: the one place where control and escape characters are escaped.

Kept outside ``exchange.client`` so that offline commands (``age``, ``key``)
can use it without importing the network client; ``exchange.client.problems``
re-exports it.
"""

from __future__ import annotations

__all__ = ["printable"]


def printable(text: str, max_chars: int = 20_000) -> str:
    """Return ``text`` cut to ``max_chars`` with every non-printable character escaped.

    Every line the CLI writes (``exchange.cli._ui``) goes through it, as do
    sentences of our own that quote values from the server (ids, names,
    decrypted titles). Control characters (C0, DEL, C1 such as CSI), escape
    sequences, bidirectional overrides and other format characters, line and
    paragraph separators become visible escapes (``\\x1b``, ``\\u202e``);
    unlike ``repr`` it leaves the readable parts as they are.
    """
    cut = text[:max_chars]
    if cut.isprintable():
        return cut
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in cut)
