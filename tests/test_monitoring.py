"""Monitoring as configuration: Prometheus's config from its one source (promtool checks it,
compose's and the local stack's), the alert rules and their unit tests (promtool), the mtail
program on nginx's log, and the Grafana dashboard's structure. The live checks, against the
Prometheus of `make up` for each topology, are in tests/test_make_up.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tooling.monitoring import MTAIL_DIR, PROMETHEUS_DIR, RULES, compose_targets, render
from tooling.procs import need_binary
from tooling.up import ROOT, StackConfig, monitoring_programs, monitoring_targets

GRAFANA = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "tickets.json"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([need_binary("promtool"), *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_the_alert_rules_pass_promtool_and_their_unit_tests() -> None:
    checked = promtool("check", "rules", str(RULES))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts.test.yml", cwd=PROMETHEUS_DIR)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def _alerts() -> list[str]:
    rules = yaml.safe_load(RULES.read_text())
    return [r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r]


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    fired: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case["alert_rule_test"]:
            (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    alerts = _alerts()
    assert len(alerts) == len(set(alerts)) >= 14
    assert set(alerts) == fired == quiet, (set(alerts) - fired, set(alerts) - quiet)
    wanted = {"RedisDown", "RedisFailover", "RedisReplicationBroken", "RedisReplicationLagging",
              "RedisMemoryNearMax", "RedisAofWriteFailing", "RedisAofFsyncStalling", "TicketsProcessorLagGrowing",
              "TicketsHigh5xxRate", "Tickets503Burst", "TicketsLatencyP99High", "TicketsRefusedScansSpike",
              "TicketsRateLimited", "TicketsTargetDown"}
    assert wanted <= set(alerts)


def test_compose_config_is_the_rendered_one_and_passes_promtool(tmp_path: Path) -> None:
    committed = (PROMETHEUS_DIR / "prometheus.yml").read_text()
    # If not: python -m tooling.monitoring compose > deploy/prometheus/prometheus.yml
    assert committed == render(compose_targets())
    # As the compose service lays it out: the rules beside the config.
    (tmp_path / "alerts.yml").write_text(RULES.read_text())
    laid_out = committed.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml"))
    (tmp_path / "prometheus.yml").write_text(laid_out)
    checked = promtool("check", "config", "--lint=none", str(tmp_path / "prometheus.yml"))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    mounts = set(compose["prometheus"]["volumes"])
    assert "./deploy/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in mounts
    assert {"prometheus", "redis-exporter", "mtail", "grafana"} <= {n for n, s in compose.items()
                                                                   if s.get("profiles") == ["monitoring"]}


@pytest.mark.parametrize("topology", ["standalone", "sentinel", "cluster"])
def test_the_local_config_scrapes_every_process_of_the_topology(topology: str, tmp_path: Path) -> None:
    cfg = StackConfig(port=18000, var_dir=tmp_path, redis_topology=topology, replicas=3)
    conf = tmp_path / "prometheus.yml"
    conf.write_text(render(monitoring_targets(cfg)))
    checked = promtool("check", "config", "--lint=none", str(conf))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    jobs = {j["job_name"]: j for j in yaml.safe_load(conf.read_text())["scrape_configs"]}
    assert jobs["tickets-api"]["static_configs"][0]["targets"] == ["127.0.0.1:18001", "127.0.0.1:18002",
                                                                    "127.0.0.1:18003"]
    nodes = jobs["redis"]["static_configs"][0]["targets"]
    assert nodes == [f"redis://127.0.0.1:{p}" for p in cfg.redis_layout.data_ports]
    assert len(nodes) == {"standalone": 1, "sentinel": 3, "cluster": 6}[topology]
    assert ("redis-sentinel" in jobs) == (topology == "sentinel")
    assert jobs["redis"]["relabel_configs"][-1]["replacement"] == "127.0.0.1:18061"
    # Every program listens on loopback, on PORT plus its offset.
    argv = " ".join(" ".join(a) for _, a in monitoring_programs(cfg))
    assert "127.0.0.1:18060" in argv and "127.0.0.1:18061" in argv and "--port 18062" in argv


def test_the_mtail_program_counts_nginx_answers_by_status(tmp_path: Path) -> None:
    line = ('{{"time":"2026-12-01T12:00:00+00:00","request_id":"r","remote_addr":"127.0.0.1","method":"GET",'
            '"uri":"{uri}","status":{status},"bytes":10,"request_time":{rt},"upstream":"","upstream_status":"",'
            '"upstream_time":"","actor":""}}')
    # A client's URI is escaped by nginx: a fake status inside it counts for nothing.
    lines = [line.format(uri="/ticket", status=200, rt="0.002"), line.format(uri="/ticket", status=429, rt="0.000"),
             line.format(uri='/x?\\"status\\":500,', status=404, rt="0.010"),
             line.format(uri="/ticket", status=200, rt="1.250")]
    log = tmp_path / "access.log"
    log.write_text("\n".join(lines) + "\n")
    done = subprocess.run([need_binary("mtail"), "--progs", str(MTAIL_DIR), "--logs", str(log), "--one_shot",
                           "--one_shot_format", "prometheus", "--logtostderr"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    counts = dict(re.findall(r'^tickets_nginx_requests_total\{prog="nginx.mtail",status="(\d+)"\} (\d+)$',
                             done.stdout, re.M))
    assert counts == {"200": "2", "404": "1", "429": "1"}
    assert re.search(r'^tickets_nginx_request_duration_seconds_count\{prog="nginx.mtail"\} 4$', done.stdout, re.M)
    assert re.search(r'^tickets_nginx_request_duration_seconds_bucket\{prog="nginx.mtail",le="0.0005"\} 1$',
                     done.stdout, re.M)


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target, Grafana's $__rate_interval as one minute."""
    return [(p["title"], t["expr"].replace("$__rate_interval", "1m")) for p in _dashboard()["panels"]
            for t in p["targets"]]


def test_the_dashboard_is_well_formed_and_uses_the_provisioned_source() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 36
    source = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    [uid] = [d["uid"] for d in source["datasources"]]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)) >= 12
    taken: set[tuple[int, int]] = set()
    for panel in dash["panels"]:
        assert panel["type"] == "timeseries" and panel["title"] and panel["datasource"]["uid"] == uid
        g = panel["gridPos"]
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert g["x"] + g["w"] <= 24 and not cells & taken, panel["title"]  # no two panels overlap
        taken |= cells
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(t["expr"] for t in panel["targets"])
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tickets.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    assert f"./deploy/grafana/dashboards:{path}:ro" in compose["volumes"]
    titles = " ".join(p["title"].lower() for p in dash["panels"])
    for wanted in ("route and status", "p50 and p99", "scans", "occupancy", "redis cpu", "redis memory",
                   "commands per second", "role", "replica", "processor lag"):
        assert wanted in titles, wanted


def _exported_names() -> set[str]:
    """Every metric this project exports: prometheus_client's in service/, mtail's."""
    names = set()
    for path in (ROOT / "service").rglob("*.py"):
        for kind, name in re.findall(r'(Counter|Gauge|Histogram)\(\s*"([a-z_]+)"', path.read_text()):
            names.add(name + ("_total" if kind == "Counter" and not name.endswith("_total") else ""))
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    for kind, name in re.findall(r"^(counter|histogram) ([a-z_]+)", (MTAIL_DIR / "nginx.mtail").read_text(), re.M):
        names |= {name} if kind == "counter" else {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def test_every_tickets_metric_the_alerts_and_panels_use_is_exported() -> None:
    used = set(re.findall(r"\b(tickets_[a-z_]+)", RULES.read_text() + DASHBOARD.read_text()))
    assert used and used <= _exported_names(), used - _exported_names()


def test_tallied_metrics_render_what_prometheus_client_would_have_counted() -> None:
    """The per-request tallies (service/metrics.py) reach prometheus_client's own values at
    render: every bucket, sum, count and counter as direct observations would have made."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    from service.metrics import TalliedCounter, TalliedHistogram, flush

    def text(registry: CollectorRegistry) -> list[str]:  # less the series' creation times
        return [line for line in generate_latest(registry).decode().splitlines() if "_created" not in line]

    def pair() -> tuple[CollectorRegistry, Counter, Histogram]:
        registry = CollectorRegistry()
        return (registry, Counter("c", "c", ["k"], registry=registry),
                Histogram("h", "h", ["k"], buckets=(0.001, 0.01, 0.1), registry=registry))

    direct_registry, direct_c, direct_h = pair()
    tallied_registry, tallied_c, tallied_h = pair()
    counter, histogram = TalliedCounter(tallied_c.labels("a")), TalliedHistogram(tallied_h.labels("a"))
    values = [0.0, 0.0005, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.5, 7.0]
    for v in values:
        direct_h.labels("a").observe(v)
        histogram.observe(v)
        direct_c.labels("a").inc()
        counter.inc()
    assert text(tallied_registry) != text(direct_registry)  # nothing handed over yet
    flush()
    assert text(tallied_registry) == text(direct_registry)
    flush()  # a second flush adds nothing
    assert text(tallied_registry) == text(direct_registry)
