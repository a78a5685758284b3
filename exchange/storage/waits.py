"""Where a request waited for the database, for its log line: a slow answer names its cause.

The edge middleware opens a tally for each request (:func:`tally`); the
stores add the seconds the request spent in each of these waits
(:func:`add`):

- ``queued``: from asking for a unit of work to being given its turn, less
  ``lock`` (this process's batch ahead of it, and the units ahead of it in
  its own batch);
- ``lock``: opening the unit's batch: taking the log's lock, which another
  process's batch may hold through its flush, and reading the log's tail;
- ``commit``: from the end of its unit to its batch being durable (the units
  after it in the batch, the audit entries' write, the flush);
- ``nonce``: spending the request's nonce outside a unit (PostgreSQL: one
  autocommitted insert and its flush);
- ``read``: reads outside a unit (the audit log's entries, tree nodes and
  checkpoints): taking a reading connection, the statements, giving it back.

A context variable holds the tally. Each request is handled in its own task
context, so tallies never mix; work a request hands to the store's own task
(the sequencer) is not counted for it. Outside a request nothing is tallied.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = ["add", "tally"]

_current: contextvars.ContextVar[dict[str, float] | None] = contextvars.ContextVar(
    "database_waits", default=None)


@contextlib.contextmanager
def tally() -> Iterator[dict[str, float]]:
    """Count the waits of the code run inside the block; yield the seconds by kind."""
    waits: dict[str, float] = {}
    token = _current.set(waits)
    try:
        yield waits
    finally:
        _current.reset(token)


def add(kind: str, seconds: float) -> None:
    """Add ``seconds`` of waiting of ``kind`` to the current request's tally, if any."""
    waits = _current.get()
    if waits is not None:
        waits[kind] = waits.get(kind, 0.0) + seconds
