"""The load window's loop-lag figures, computed from two scrapes of each server's histogram."""

from __future__ import annotations

import math

from tests.load.loop_lag import lag_window

INF = math.inf


def _cumulative(counts: dict[float, float]) -> dict[float, float]:
    """Return the cumulative buckets of per-bucket ``counts`` (what Prometheus exposes)."""
    out, running = {}, 0.0
    for bound in sorted(counts):
        running += counts[bound]
        out[bound] = running
    return out


BOUNDS = (0.001, 0.01, 0.1, 1.0, INF)


def test_the_window_is_the_difference_summed_over_servers() -> None:
    start = [_cumulative({b: 5 for b in BOUNDS}), _cumulative({b: 7 for b in BOUNDS})]
    # In the window: 990 wake-ups under 1 ms across both servers, 10 between 100 ms and 1 s.
    grown = [_cumulative({0.001: 5 + 500, 0.01: 5, 0.1: 5, 1.0: 5 + 4, INF: 5}),
             _cumulative({0.001: 7 + 490, 0.01: 7, 0.1: 7, 1.0: 7 + 6, INF: 7})]
    window = lag_window(start, grown)
    assert window.samples == 1000
    assert window.starved_pct == 1.0
    # The 990th of 1000 wake-ups is the last one under 1 ms: the p99 is that bucket's bound.
    assert window.p99_ms == 1.0


def test_the_p99_is_interpolated_within_its_bucket() -> None:
    zero = _cumulative(dict.fromkeys(BOUNDS, 0.0))
    # 100 wake-ups: 90 under 1 ms, 10 between 100 ms and 1 s; rank 99 is the 9th of those 10.
    after = _cumulative({0.001: 90, 0.01: 0, 0.1: 0, 1.0: 10, INF: 0})
    window = lag_window([zero], [after])
    assert window.samples == 100
    assert math.isclose(window.p99_ms, 100 + 900 * 9 / 10)
    assert window.starved_pct == 10.0


def test_beyond_the_last_bound_the_last_bound_is_all_that_is_known() -> None:
    zero = _cumulative(dict.fromkeys(BOUNDS, 0.0))
    after = _cumulative({0.001: 1, 0.01: 0, 0.1: 0, 1.0: 0, INF: 99})
    window = lag_window([zero], [after])
    assert window.p99_ms == 1000.0
    assert window.starved_pct == 99.0


def test_an_empty_window_reports_no_samples() -> None:
    same = [_cumulative({b: 3 for b in BOUNDS})]
    window = lag_window(same, same)
    assert (window.samples, window.p99_ms, window.starved_pct) == (0, 0.0, 0.0)
