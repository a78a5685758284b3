"""What a request has read of the database, so that its answer leaves only once that is durable.

The embedded SQLite store commits a batch without waiting for the disk and makes
it durable with a flush of its own, while the next batch already runs
(``exchange.storage.sqlite_store``). A unit of work is acknowledged only after
its batch's flush, but between a batch's ``COMMIT`` and that flush other
readers can see what it wrote. Nothing read in that window may leave the
server before it is durable: a client told of an entry, a tree size or an
event that a power cut then erases would hold evidence of a "rollback" that no
one made.

So every read outside a unit notes the store's commit count at its end
(:func:`saw`) in the current request's :class:`Seen` (opened by the edge
middleware with :func:`tracking`), and the answer waits for
``store.wait_durable(seen.commit)`` before its headers are sent (and a stream
before each event). A read inside a unit needs no note: the unit's own
acknowledgement comes after a flush that covers everything it read. Stores
whose commits are durable when they return (PostgreSQL) never make anyone wait.

A context variable holds the :class:`Seen`, as :mod:`exchange.storage.waits`
does for the waits: each request runs in its own task context.
"""

from __future__ import annotations

import contextvars

__all__ = ["Seen", "saw", "tracking"]


class Seen:
    """The highest commit number whose writes the code in a :func:`tracking` block read."""

    __slots__ = ("commit",)

    def __init__(self) -> None:
        self.commit = 0


_current: contextvars.ContextVar[Seen | None] = contextvars.ContextVar(
    "database_seen", default=None)


def tracking() -> _Tracking:
    """Note the commits that the reads inside the block could see; yield the record."""
    return _Tracking()


class _Tracking:
    """The block of :func:`tracking`.

    A class rather than ``contextlib.contextmanager``: the edge opens one for
    every request, and a generator's wrapper costs several times the work itself.
    """

    __slots__ = ("_seen", "_token")

    def __init__(self) -> None:
        self._seen = Seen()
        self._token: contextvars.Token[Seen | None] | None = None

    def __enter__(self) -> Seen:
        self._token = _current.set(self._seen)
        return self._seen

    def __exit__(self, *_exc: object) -> None:
        assert self._token is not None
        _current.reset(self._token)


def saw(commit: int) -> None:
    """Record that a read just ended when ``commit`` commits had begun (no-op outside a block)."""
    seen = _current.get()
    if seen is not None and commit > seen.commit:
        seen.commit = commit
