"""The server's bulk threads yield the core to its event loop; start-up objects are frozen.

Checked on the real thing: the priority each thread reports to the kernel
(``getpriority`` on Linux is per thread), inside a job of the executor and, for
a running ``exchange serve``, in ``/proc``; the collector's frozen count.
"""

from __future__ import annotations

import gc
import os
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from exchange.crypto.keys import ParticipantIdentity
from exchange.transport.responsive import (
    BULK_NICE,
    bulk_executor,
    freeze_startup_objects,
    lower_thread_priority,
)
from tests.server_harness import ServerProcess, init_server

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="thread priorities are per thread only on Linux")


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


@linux_only
def test_bulk_threads_run_at_the_lowest_priority_and_the_caller_keeps_its_own() -> None:
    before = _nice_of_this_thread()
    with bulk_executor(max_workers=2) as pool:
        nices = {pool.submit(_nice_of_this_thread).result() for _ in range(4)}
        names = {pool.submit(lambda: threading.current_thread().name).result()
                 for _ in range(4)}
    assert nices == {BULK_NICE}
    assert all(name.startswith("bulk") for name in names), names
    assert _nice_of_this_thread() == before


@linux_only
def test_a_thread_already_nicer_is_left_alone() -> None:
    seen: list[tuple[bool, int]] = []

    def job() -> None:
        os.setpriority(os.PRIO_PROCESS, 0, 5)
        first = lower_thread_priority(19)
        seen.append((first, _nice_of_this_thread()))
        seen.append((lower_thread_priority(10), _nice_of_this_thread()))

    thread = threading.Thread(target=job)
    thread.start()
    thread.join()
    assert seen == [(True, 19), (True, 19)]


def test_freezing_moves_live_objects_out_of_the_collectors_generations() -> None:
    kept = [object() for _ in range(10)]  # noqa: F841 (alive while frozen)
    try:
        frozen = freeze_startup_objects()
        assert frozen == gc.get_freeze_count() > 1000
        assert sum(gc.get_count()) < 100  # the generations start empty again
    finally:
        gc.unfreeze()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "data"
    init_server(data, ParticipantIdentity.generate("admin"))
    proc = ServerProcess(data)
    try:
        yield proc
    finally:
        proc.stop()


@linux_only
def test_a_running_server_keeps_its_loop_at_normal_priority_and_its_bulk_work_below(
        server: ServerProcess) -> None:
    # The readiness check writes and removes a file on the default executor.
    with urllib.request.urlopen(server.url + "/v1/ready", timeout=10) as answer:
        assert answer.status == 200
    pid = server.proc.pid
    nices = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        nices[int(task.name)] = int(fields[16])  # stat field 19: nice
    assert nices[pid] == _nice_of_this_thread(), "the event loop's thread keeps its priority"
    assert BULK_NICE in nices.values(), nices
