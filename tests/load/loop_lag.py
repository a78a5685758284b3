"""The servers' event-loop lag over the load window, from their own metrics.

A small request that waits long may wait for the disk (its audit entry's
flush) or for the event loop (a transfer holding it). Each server measures
how late its loop runs a timer (``exchange.transport.looplag``) into the
``exchange_event_loop_lag_seconds`` histogram of its metrics listener. The
load scrapes every server when the load starts and when it ends; the
difference is the window's histogram, summed over the servers. From it come
an estimate of the lag's 99th percentile (interpolated within its bucket, as
Prometheus's ``histogram_quantile`` does) and the share of wake-ups that came
more than 100 ms late (100 ms being a bucket bound, that share is exact).
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["LagWindow", "lag_window", "scrape_lag_buckets"]

_BUCKET = "exchange_event_loop_lag_seconds_bucket"
#: Wake-ups later than this count as a starved loop (a histogram bucket bound).
STARVED_S = 0.1

#: Cumulative counts by upper bound (seconds; ``math.inf`` for ``+Inf``).
Buckets = dict[float, float]


def scrape_lag_buckets(metrics_url: str, *, timeout_s: float = 10.0) -> Buckets:
    """Return the loop-lag histogram one server exposes at ``metrics_url``."""
    with urllib.request.urlopen(metrics_url, timeout=timeout_s) as answer:
        text = answer.read().decode("utf-8")
    buckets: Buckets = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == _BUCKET:
                buckets[float(sample.labels["le"])] = sample.value
    if math.inf not in buckets:
        raise ValueError(f"{metrics_url} exposes no {_BUCKET} series")
    return buckets


@dataclass(frozen=True)
class LagWindow:
    """The loop-lag histogram of the load window, all servers together."""

    samples: int
    p99_ms: float
    starved_pct: float


def _quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """Return the ``q`` quantile of a cumulative histogram, interpolated in its bucket."""
    total = cumulative[-1][1]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, count in cumulative:
        if count >= rank:
            if math.isinf(bound):
                return lower  # beyond the last finite bound: all that can be said
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def lag_window(before: Iterable[Mapping[float, float]],
               after: Iterable[Mapping[float, float]]) -> LagWindow:
    """Return the window's lag from each server's histogram at its start and end."""
    window: dict[float, float] = {}
    for start, end in zip(before, after, strict=True):
        for bound, count in end.items():
            window[bound] = window.get(bound, 0.0) + count - start.get(bound, 0.0)
    cumulative = sorted(window.items())
    total = cumulative[-1][1] if cumulative else 0.0
    if total <= 0:
        return LagWindow(samples=0, p99_ms=0.0, starved_pct=0.0)
    on_time = window.get(STARVED_S, 0.0)  # "le": wake-ups less than 100 ms late
    return LagWindow(samples=int(total), p99_ms=round(_quantile(0.99, cumulative) * 1000, 1),
                     starved_pct=round(100 * (total - on_time) / total, 2))
