"""Prometheus metrics. With several gunicorn workers per replica, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) adds up every worker's counts in one scrape.

The per-request metrics are tallied: an increment or an observation adds to plain Python
numbers, which reach prometheus_client at `flush()`, before every render and every
FLUSH_INTERVAL_S (the app runs it). In multiprocess mode each value prometheus_client keeps
is a write to a shared memory map after a check of the process id; a request made five of
them (measured in bench/results/profile-*). A scrape of one worker therefore shows the other
workers' last second a second late, never wrongly."""

from __future__ import annotations

import bisect
import os
from typing import Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter("tickets_http_requests_total", "HTTP requests answered", ["route", "method", "status"])
LATENCY = Histogram("tickets_http_request_duration_seconds", "HTTP request latency", ["route"],
                    buckets=_BUCKETS_S)
REDIS_LATENCY = Histogram("tickets_redis_call_duration_seconds", "Redis round-trip latency", ["op"],
                          buckets=_BUCKETS_S)
REDIS_ERRORS = Counter("tickets_redis_errors_total", "Redis calls that failed, by operation and kind",
                       ["op", "kind"])
WORKER_BUSY = Counter("tickets_worker_busy_total",
                      "Redis calls that timed out waiting for a connection of their worker (busy, not Redis)", ["op"])
TOKENS_REFUSED = Counter("tickets_token_refused_total",
                         "Ticket tokens (QR codes) that did not verify, by reason: copies altered, forgeries",
                         ["reason"])
SCANS = Counter("tickets_scans_total", "Gate scans (POST /checkin) by outcome and refusal reason",
                ["direction", "outcome", "reason"])
DEFECTS = Counter("tickets_defects_total", "Requests that met an unexpected error (500)")
PROCESSED = Counter("tickets_processor_entries_total",
                    "Changes the processor handled (one per stream entry, or per ticket of a batch entry)",
                    ["result"])
PROCESSOR_LAG = Gauge("tickets_processor_lag_entries", "Stream entries not yet processed",
                      multiprocess_mode="max")

FLUSH_INTERVAL_S = 1.0


class TalliedCounter:
    """A counter child's increments, added up here until flush()."""

    __slots__ = ("_child", "_n")

    def __init__(self, child: Any) -> None:
        self._child, self._n = child, 0.0
        _TALLIES.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self._n += amount

    def flush(self) -> None:
        if self._n:
            n, self._n = self._n, 0.0
            self._child.inc(n)


class TalliedHistogram:
    """A histogram child's observations, added up here by bucket until flush(). Its buckets
    are prometheus_client's own (the child's _buckets and _sum: one value per bucket, not
    cumulative; pinned with prometheus-client and checked by tests/test_monitoring.py)."""

    __slots__ = ("_child", "_bounds", "_counts", "_sum")

    def __init__(self, child: Any) -> None:
        self._child = child
        self._bounds: list[float] = list(child._upper_bounds)
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _TALLIES.append(self)

    def observe(self, amount: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, amount)] += 1
        self._sum += amount

    def flush(self) -> None:
        if not any(self._counts):
            return
        counts, total = self._counts, self._sum
        self._counts, self._sum = [0] * len(self._bounds), 0.0
        self._child._sum.inc(total)
        for bucket, n in zip(self._child._buckets, counts, strict=True):
            if n:
                bucket.inc(n)


_TALLIES: list[TalliedCounter | TalliedHistogram] = []


def flush() -> None:
    """Hand every tally to prometheus_client."""
    for tally in _TALLIES:
        tally.flush()


_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"})
_request_children: dict[tuple[str, str, int], tuple[TalliedCounter, TalliedHistogram]] = {}
_latency_children: dict[str, TalliedHistogram] = {}
_redis_children: dict[str, TalliedHistogram] = {}


def request_metrics(route: str, method: str, status: int) -> tuple[TalliedCounter, TalliedHistogram]:
    """The request counter and latency histogram for these labels, looked up once: labels()
    costs more than the increment itself on the hot path. Unknown methods share one label,
    so a client cannot grow the label set."""
    key = (route, method, status)
    found = _request_children.get(key)
    if found is None:
        label = method if method in _KNOWN_METHODS else "OTHER"
        latency = _latency_children.get(route)
        if latency is None:
            latency = _latency_children[route] = TalliedHistogram(LATENCY.labels(route))
        found = _request_children[key] = (TalliedCounter(REQUESTS.labels(route, label, str(status))), latency)
    return found


_scan_children: dict[tuple[str, str, str], TalliedCounter] = {}


def scan_counter(direction: str, outcome: str, reason: str) -> TalliedCounter:
    """The scan counter for an outcome: admitted, refused or conflict (an offline admission
    refused on upload); the labels are bounded (two directions, the Refusal codes)."""
    key = (direction, outcome, reason)
    found = _scan_children.get(key)
    if found is None:
        found = _scan_children[key] = TalliedCounter(SCANS.labels(direction, outcome, reason))
    return found


def redis_latency(op: str) -> TalliedHistogram:
    found = _redis_children.get(op)
    if found is None:
        found = _redis_children[op] = TalliedHistogram(REDIS_LATENCY.labels(op))
    return found


def render() -> bytes:
    """This process's metrics, or every worker's when in multiprocess mode."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
