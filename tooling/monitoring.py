"""Prometheus for every deployment from one source, as nginx's configs are: the scrape jobs
and their relabelling are written here once, and filled with the targets of the local stack
(`make up`, its ports from PORT) or of compose (Docker's DNS names). The alert rules
(deploy/prometheus/alerts.yml) and the nginx log program (deploy/mtail/) are shared files.

    python -m tooling.monitoring compose > deploy/prometheus/prometheus.yml

writes compose's config; a test checks that the committed file is what this renders."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "alerts.yml"
MTAIL_DIR = ROOT / "deploy" / "mtail"
# Offsets from PORT of the local stack's monitoring (docs/operations.md#monitoring).
PROMETHEUS_OFFSET = 60
REDIS_EXPORTER_OFFSET = 61
MTAIL_OFFSET = 62


@dataclass(frozen=True)
class Targets:
    """Where each job's targets are, for one deployment."""

    topology: str
    # `host:port` of every api replica, or the DNS name that lists them (compose's --scale).
    api: Sequence[str]
    api_dns: tuple[str, int] | None
    processor: str
    # redis_exporter's multi-target mode: one exporter, each node a `redis://` target.
    redis_exporter: str
    redis_nodes: Sequence[str]
    sentinels: Sequence[str]
    mtail: str
    prometheus: str
    scrape_interval_s: int
    rules: str


def _redis_job(name: str, targets: Targets, nodes: Sequence[str], role: str) -> dict[str, Any]:
    """Every node scraped through the one exporter: the node's address is the `target`
    parameter and the `instance` label, the exporter is the address actually dialled."""
    return {
        "job_name": name,
        "metrics_path": "/scrape",
        "static_configs": [{"targets": list(nodes), "labels": {"topology": targets.topology, "node_role": role}}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": targets.redis_exporter},
        ],
    }


def prometheus_config(targets: Targets) -> dict[str, Any]:
    api: dict[str, Any] = {"job_name": "tickets-api"}
    if targets.api_dns is not None:
        name, port = targets.api_dns
        # Every replica that Docker's DNS lists, so `--scale api=N` is followed.
        api["dns_sd_configs"] = [{"names": [name], "type": "A", "port": port, "refresh_interval": "5s"}]
    else:
        api["static_configs"] = [{"targets": list(targets.api)}]
    jobs = [
        api,
        {"job_name": "tickets-processor", "static_configs": [{"targets": [targets.processor]}]},
        # nginx's JSON access log, counted by mtail: every answer nginx gave, its own 429s
        # and 502s included, which the replicas never see.
        {"job_name": "nginx", "static_configs": [{"targets": [targets.mtail]}]},
        _redis_job("redis", targets, targets.redis_nodes, "data"),
        {"job_name": "redis-exporter", "static_configs": [{"targets": [targets.redis_exporter]}]},
        {"job_name": "prometheus", "static_configs": [{"targets": [targets.prometheus]}]},
    ]
    if targets.sentinels:
        jobs.insert(4, _redis_job("redis-sentinel", targets, targets.sentinels, "sentinel"))
    interval = f"{targets.scrape_interval_s}s"
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "external_labels": {"service": "tickets"}},
        "rule_files": [targets.rules],
        "scrape_configs": jobs,
    }


def render(targets: Targets) -> str:
    head = "# Rendered by tooling/monitoring.py: edit that, not this.\n"
    body: str = yaml.safe_dump(prometheus_config(targets), sort_keys=False, width=120)
    return head + body


def compose_targets() -> Targets:
    return Targets(
        topology="standalone", api=(), api_dns=("api", 8000), processor="processor:9100",
        redis_exporter="redis-exporter:9121", redis_nodes=["redis://redis:6379"], sentinels=[],
        mtail="mtail:3903", prometheus="localhost:9090", scrape_interval_s=15,
        rules="/etc/prometheus/alerts.yml",
    )


def main(argv: list[str]) -> None:
    if argv != ["compose"]:
        raise SystemExit("usage: python -m tooling.monitoring compose > deploy/prometheus/prometheus.yml")
    sys.stdout.write(render(compose_targets()))


if __name__ == "__main__":
    main(sys.argv[1:])
