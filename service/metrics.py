"""Prometheus metrics. With several gunicorn workers per replica, prometheus_client's
multiprocess mode (PROMETHEUS_MULTIPROC_DIR) adds up every worker's counts in one scrape."""

from __future__ import annotations

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
TOKENS_REFUSED = Counter("tickets_token_refused_total",
                         "Ticket tokens (QR codes) that did not verify, by reason: copies altered, forgeries",
                         ["reason"])
SCANS = Counter("tickets_scans_total", "Gate scans (POST /checkin) by outcome and refusal reason",
                ["direction", "outcome", "reason"])
DEFECTS = Counter("tickets_defects_total", "Requests that met an unexpected error (500)")
PROCESSED = Counter("tickets_processor_entries_total", "Stream entries the processor handled",
                    ["result"])
PROCESSOR_LAG = Gauge("tickets_processor_lag_entries", "Stream entries not yet processed",
                      multiprocess_mode="max")

_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS"})
_request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_redis_children: dict[str, Any] = {}


def request_metrics(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram for these labels, looked up once: labels()
    costs more than the increment itself on the hot path. Unknown methods share one label,
    so a client cannot grow the label set."""
    key = (route, method, status)
    found = _request_children.get(key)
    if found is None:
        label = method if method in _KNOWN_METHODS else "OTHER"
        found = _request_children[key] = (REQUESTS.labels(route, label, str(status)), LATENCY.labels(route))
    return found


_scan_children: dict[tuple[str, str, str], Any] = {}


def scan_counter(direction: str, outcome: str, reason: str) -> Any:
    """The scan counter for an outcome: admitted, refused or conflict (an offline admission
    refused on upload); the labels are bounded (two directions, the Refusal codes)."""
    key = (direction, outcome, reason)
    found = _scan_children.get(key)
    if found is None:
        found = _scan_children[key] = SCANS.labels(direction, outcome, reason)
    return found


def redis_latency(op: str) -> Any:
    found = _redis_children.get(op)
    if found is None:
        found = _redis_children[op] = REDIS_LATENCY.labels(op)
    return found


def render() -> bytes:
    """This process's metrics, or every worker's when in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
