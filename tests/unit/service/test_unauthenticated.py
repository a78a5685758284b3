"""Unauthenticated refusals: counted, logged at most once per source per interval, bounded."""

from __future__ import annotations

from exchange.service.unauthenticated import UnauthenticatedRefusals


def test_counted_always_logged_once_per_source_per_interval() -> None:
    now = [0.0]
    counter = UnauthenticatedRefusals(clock=lambda: now[0], interval_s=60.0)
    logged = [counter.note("192.0.2.1", "signature-missing", "case.list") for _ in range(1000)]
    assert logged[0] and not any(logged[1:])
    assert counter.note("192.0.2.2", "unknown-key", "case.list")  # another source: logged
    now[0] = 61.0
    assert counter.note("192.0.2.1", "signature-missing", "case.list")  # next interval
    assert counter.total == 1002
    assert counter.by_reason == {"signature-missing": 1001, "unknown-key": 1}


def test_memory_is_bounded_whatever_the_number_of_sources() -> None:
    counter = UnauthenticatedRefusals(clock=lambda: 0.0, max_sources=100)
    for i in range(10_000):
        counter.note(f"10.0.{i // 256}.{i % 256}", "signature-invalid", "case.list")
    assert len(counter._sources) == 100
    assert counter.total == 10_000
