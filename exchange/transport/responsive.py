"""What keeps the server's event loop answering small requests while transfers run (issue 17).

Every request of a server process waits for one event-loop thread. Two things
held that thread back under the 100-client load benchmark, and neither shows
as CPU time in the request's own code:

- **Bulk threads took the core.** Uploads are hashed and written, and pulls
  read, on the default executor's threads. On a busy core Linux's scheduler
  shares time fairly between runnable threads, and a thread that slept (a
  worker woken with a 2 MiB piece) is run ahead of one that has been running
  (the loop). Sampling the loop thread's scheduler statistics under load
  showed it runnable but waiting for the core about 4 s of every 20 s while the
  core was 30 % idle on average. :func:`bulk_executor` runs those threads at nice
  ``BULK_NICE``: the loop and the database's threads get most of the core
  whenever they want it, the bulk work the rest, which is most of the time. Not lower: a nice value
  weighs against every thread of the session or control group, other
  processes' too, and at 19 (weight 15 against 1,024) a bulk thread beside two
  busy processes got so little of the core that an interrupted upload's
  clean-up held its lock for seconds. At 10 (weight 110) it keeps about a tenth
  of a core against each busy thread of normal priority.
- **The cyclic garbage collector stopped the loop for 45-65 ms.** A full
  collection visits every tracked object, and most of them are the modules,
  classes and functions loaded at start, alive until the process ends.
  :func:`freeze_startup_objects` moves them out of the collector's
  generations once the server is ready (``gc.freeze``, as CPython's
  documentation suggests for long-running servers), so later collections
  visit only what was allocated since.

The database's threads (SQLite's writer, readers and flushers) keep the
loop's priority: a small request waits for them.
"""

from __future__ import annotations

import gc
import os
import sys
from concurrent.futures import ThreadPoolExecutor

__all__ = ["BULK_NICE", "bulk_executor", "freeze_startup_objects", "lower_thread_priority"]

#: The nice value of bulk threads: well below the loop, never starved (module notes).
BULK_NICE = 10


def lower_thread_priority(nice: int = BULK_NICE) -> bool:
    """Give the calling thread the nice value ``nice``; True if done.

    On Linux the nice value belongs to each thread, and ``setpriority`` with
    ``PRIO_PROCESS`` and id 0 changes the calling thread's alone. Elsewhere
    (where it would change the whole process) it does nothing. Raising a nice
    value needs no privilege; a thread already nicer keeps its value.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        if os.getpriority(os.PRIO_PROCESS, 0) >= nice:
            return True
        os.setpriority(os.PRIO_PROCESS, 0, nice)
    except OSError:
        return False
    return True


def bulk_executor(max_workers: int | None = None) -> ThreadPoolExecutor:
    """Return a thread pool for bulk work whose threads run at ``BULK_NICE``.

    Meant as the event loop's default executor (``asyncio.to_thread``), which
    the blob and upload stores use for hashing, writing and reading pieces.
    ``max_workers`` defaults to asyncio's own default for that executor.
    """
    if max_workers is None:
        max_workers = min(32, (os.cpu_count() or 1) + 4)
    return ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="bulk",
                              initializer=lower_thread_priority)


def freeze_startup_objects() -> int:
    """Collect once, then exclude every object alive now from later collections.

    Returns how many objects were frozen. Call it once the server is ready to
    serve: what is alive then (modules, the application, the store) lives as
    long as the process, so the collector gains nothing by visiting it again.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
