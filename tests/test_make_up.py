"""`make up` itself (`python -m tooling.up`, under supervisord) on free ports: it serves,
a replica or the processor that dies under load comes back by itself with no failed
request, and a stop leaves no process behind."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tooling.procs import children, free_port_run, http_status, port_is_free, wait_until
from tooling.up import ROOT, StackConfig

from .load import MixedLoad, make_tickets, tally
from .test_monitoring import dashboard_queries

pytestmark = pytest.mark.e2e


def free_port_block() -> int:
    """A PORT whose derived ports (PORT+1, +2, +40, +50 to +57, +60 to +62, and the Cluster bus ports
    +10050 to +10055) are all free, all below the ephemeral range."""
    for _ in range(500):
        port = free_port_run(3)
        derived = [port + 40, *range(port + 50, port + 58), *range(port + 60, port + 63),
                   *range(port + 10_050, port + 10_056)]
        if port + 10_056 < 30_000 and all(port_is_free(p) for p in derived):
            return port
    raise RuntimeError("no free block of ports")


class MakeUp:
    """`make up`'s own command, its output in a file, its programs controlled through
    supervisorctl as an operator would."""

    def __init__(self, var_dir: Path, topology: str = "standalone") -> None:
        # PORT alone: every other port derives from it, as for a user.
        self.port = free_port_block()
        self.var_dir = var_dir
        self.cfg = StackConfig(port=self.port, var_dir=var_dir)
        self.log_path = var_dir.parent / "make-up.log"
        env = {**os.environ, "PORT": str(self.port), "VAR_DIR": str(var_dir),
               # The load below comes from one address, far over the per-client default.
               "RATE_LIMIT_RPS": "100000", "RATE_LIMIT_BURST": "100000", "REDIS_TOPOLOGY": topology,
               # Every second, so that a short workload gives rates to query.
               "PROMETHEUS_SCRAPE_INTERVAL_S": "1"}
        env.pop("MONITORING", None)
        env.pop("REDIS_URL", None)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "tooling.up"], cwd=ROOT, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_until(lambda: http_status(self.url + "/readyz") == 200, 60, "make up's stack")
        # RUNNING is supervisord's word once the processor has lived 1 s (startsecs); on a
        # busy machine its imports and its metrics listener can take longer than that.
        metrics = f"http://127.0.0.1:{self.cfg.processor_port}/metrics"
        wait_until(lambda: self.state("processor") == "RUNNING" and http_status(metrics) == 200, 30,
                   "the processor and its metrics")
        if topology == "cluster":  # the nodes answer before they are a Cluster
            wait_until(lambda: self.state("redis-cluster-form") == "EXITED", 60, "the Cluster to be formed")
        if topology != "standalone":
            # Until a master's replicas are in sync it refuses writes (NOREPLICAS), and just
            # after a Cluster forms its nodes settle their roles and drop clients: writes are
            # 503 for a moment after /readyz. Wait for 20 creates in a row.
            wait_until(lambda: all(http_status(self.url + "/ticket", "POST", 5) == 201 for _ in range(20)), 30,
                       "20 creates in a row")

    def ctl(self, *args: str) -> str:
        conf = self.var_dir / "supervisord.conf"
        return subprocess.run([sys.executable, "-m", "supervisor.supervisorctl", "-c", str(conf), *args],
                              capture_output=True, text=True, timeout=30).stdout.strip()

    def state(self, program: str) -> str:
        words = self.ctl("status", program).split()
        return words[1] if len(words) > 1 else ""

    def pid(self, program: str) -> int:
        return int(self.ctl("pid", program))

    def kill(self, program: str) -> int:
        """SIGKILL the program with its whole process group (a gunicorn master and its
        workers die together, as a container would)."""
        pid = self.pid(program)
        os.killpg(pid, signal.SIGKILL)
        return pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeUp]:
    stack = MakeUp(tmp_path_factory.mktemp("make-up") / "var")
    yield stack
    stack.stop()


def listening_on(port: int) -> set[str]:
    """The addresses something listens on at `port` (IPv4, from /proc/net/tcp)."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, port_hex = local.split(":")
        if state == "0A" and int(port_hex, 16) == port:
            out.add(".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0)))
    return out


def test_every_port_derives_from_port_and_only_loopback_listens(up: MakeUp) -> None:
    ports = [up.port, up.port + 1, up.port + 2, up.port + 40, up.port + 50]
    assert [up.port, *up.cfg.api_ports, up.cfg.processor_port, up.cfg.redis_port] == ports
    assert http_status(f"http://127.0.0.1:{up.port + 2}/healthz") == 200
    assert http_status(f"http://127.0.0.1:{up.cfg.processor_port}/metrics") == 200
    for port in ports:
        assert listening_on(port) == {"127.0.0.1"}, port


def prometheus(up: MakeUp, path: str, **params: str) -> Any:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"http://127.0.0.1:{up.cfg.prometheus_port}{path}?{query}", timeout=10) as r:
        body = json.loads(r.read())
    assert body["status"] == "success", body
    return body["data"]


def assert_every_target_up(up: MakeUp, topology: str) -> None:
    """Prometheus's targets page, as its API gives it: every job of the topology, each
    target scraped and up. Printed for the record."""
    jobs = {"tickets-api", "tickets-processor", "nginx", "redis", "redis-exporter", "prometheus"}
    if topology == "sentinel":
        jobs.add("redis-sentinel")

    def targets() -> list[dict[str, Any]]:
        active: list[dict[str, Any]] = prometheus(up, "/api/v1/targets", state="active")["activeTargets"]
        return active

    def all_up() -> bool:
        found = targets()
        return {t["labels"]["job"] for t in found} == jobs and all(t["health"] == "up" for t in found)

    wait_until(all_up, 30, f"every {topology} target up")
    found = targets()
    nodes = {"standalone": 1, "sentinel": 3 + 3, "cluster": 6}[topology]  # sentinels are nodes too
    assert len(found) == len(up.cfg.api_ports) + nodes + 4
    for t in sorted(found, key=lambda t: (t["labels"]["job"], t["labels"]["instance"])):
        print(f"TARGET {topology} {t['labels']['job']} {t['labels']['instance']} {t['health']}")


async def venue_workload(http: aiohttp.ClientSession, url: str) -> None:
    """An event, a list, tickets admitted and scanned again (refused): the scans' metrics."""
    async with http.post(f"{url}/event", json={"name": "Metrics night"}) as r:
        event = (await r.json())["id"]
    async with http.post(f"{url}/event/{event}/list", json={"name": "Main gate"}) as r:
        gate = (await r.json())["id"]
    for _ in range(10):
        async with http.post(f"{url}/ticket", json={"event": event}) as r:
            ticket = (await r.json())["id"]
        for _ in range(2):
            async with http.post(f"{url}/checkin", json={"ticket": ticket, "list": gate}) as r:
                assert r.status == 200, await r.text()


def assert_every_panel_answers(up: MakeUp) -> None:
    """Each dashboard query parses and returns data from the stack's own Prometheus."""
    for title, expr in dashboard_queries():
        def answers(expr: str = expr) -> bool:
            return bool(prometheus(up, "/api/v1/query", query=expr)["result"])

        wait_until(answers, 30, f"data for {title}")


def test_prometheus_scrapes_every_standalone_target(up: MakeUp) -> None:
    assert_every_target_up(up, "standalone")
    rules = prometheus(up, "/api/v1/rules")["groups"]
    assert sum(len(g["rules"]) for g in rules) == 14  # deploy/prometheus/alerts.yml, loaded


def test_make_up_signs_tickets_and_serves_the_pages(up: MakeUp) -> None:
    """A key made on the first start, owner-only, used by every replica alike."""
    key_file = up.var_dir / "ticket-signing.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600 and "PRIVATE KEY" in key_file.read_text()
    with urllib.request.urlopen(f"{up.url}/keys", timeout=5) as r:
        [key] = json.loads(r.read())["keys"]
    req = urllib.request.Request(f"{up.url}/ticket", method="POST")
    with urllib.request.urlopen(req, timeout=5) as r:
        ticket = json.loads(r.read())["id"]
    for port in up.cfg.api_ports:  # each replica signs with the same key
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/ticket/{ticket}/token", timeout=5) as r:
            assert json.loads(r.read())["kid"] == key["kid"]
    for page in ("/gate/", "/office/", "/vendor/zxing-wasm/zxing_reader.wasm"):
        assert http_status(up.url + page) == 200, page


async def test_a_replica_then_the_processor_die_under_load_and_come_back(
    up: MakeUp, http: aiohttp.ClientSession
) -> None:
    read_ids = await make_tickets(http, up.url, 50)
    load = MixedLoad(http, up.url, read_ids, await make_tickets(http, up.url, 3000))
    load.start()
    await load.more(300)
    replica = up.kill("api2")
    await asyncio.to_thread(wait_until, lambda: up.state("api2") == "RUNNING" and up.pid("api2") != replica,
                            30, "api2 to be restarted")
    await asyncio.to_thread(wait_until, lambda: http_status(f"http://127.0.0.1:{up.port + 2}/readyz") == 200,
                            30, "api2 to be ready")
    await load.more(300)
    processor = up.kill("processor")
    await asyncio.to_thread(wait_until, lambda: up.state("processor") == "RUNNING" and up.pid("processor") != processor,
                            30, "the processor to be restarted")
    await load.more(300)
    outcomes = await load.stop()
    print(f"\nMAKE-UP kill: {len(outcomes)} requests, by op {tally(outcomes)}")
    assert {o.status for o in outcomes} <= {200, 201}, tally(outcomes)
    log = up.log()
    assert "exited: api2 (terminated by SIGKILL; not expected)" in log
    assert "exited: processor (terminated by SIGKILL; not expected)" in log
    assert log.count("spawned: 'api2'") == 2 and log.count("spawned: 'processor'") == 2
    # The restarted processor, under the same consumer name, catches up with everything.
    async with asyncio.timeout(30):
        while True:
            async with http.get(up.url + "/stats") as r:
                stats = await r.json()
            if stats["processor_lag"] == 0 and sum(stats["processed"].values()) >= stats["total"]:
                break
            await asyncio.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _descendants(pid: int) -> set[int]:
    out: set[int] = set()
    todo = [pid]
    while todo:
        for child in children(todo.pop()):
            out.add(child)
            todo.append(child)
    return out


def test_stop_leaves_no_process_behind(up: MakeUp) -> None:
    family = _descendants(up.proc.pid)
    assert len(family) >= 7  # redis, two gunicorn masters and their workers, the processor, nginx
    started = time.monotonic()
    up.proc.send_signal(signal.SIGINT)  # Ctrl-C
    assert up.proc.wait(timeout=40) == 0
    assert time.monotonic() - started < 30
    assert not [p for p in family if _alive(p)]
    assert "stopped: redis (exit status 0)" in up.log()


@pytest.mark.parametrize("topology", ["sentinel", "cluster"])
async def test_a_redis_master_killed_under_make_up_does_not_stop_the_stack(
    topology: str, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    up = MakeUp(tmp_path / "var", topology)
    try:
        read_ids = await make_tickets(http, up.url, 50)
        load = MixedLoad(http, up.url, read_ids, await make_tickets(http, up.url, 3000))
        load.start()
        await load.more(300)
        # Monitoring sees every node of the topology, and every dashboard panel has data.
        await venue_workload(http, up.url)
        await asyncio.to_thread(assert_every_target_up, up, topology)
        await asyncio.to_thread(assert_every_panel_answers, up)
        killed_at = time.monotonic()
        up.kill("redis1")  # the first master of either topology
        await asyncio.to_thread(wait_until, lambda: up.state("redis1") == "RUNNING", 60, "redis1 to be restarted")
        # The rest keeps serving: answers after the failover are successes again.
        await load.until_ok_after(killed_at + 1, 200, 90)
        outcomes = await load.stop()
        print(f"\nMAKE-UP {topology} kill redis1: {len(outcomes)} requests, by op {tally(outcomes)}")
        bad = [o for o in outcomes if o.status not in (200, 201) and not (o.status == 503 and o.retry_after)]
        assert not bad, tally(bad)
        log = up.log()
        assert "exited: redis1 (terminated by SIGKILL; not expected)" in log
        assert log.count("spawned: 'redis1'") == 2, log.count("spawned: 'redis1'")
        family = _descendants(up.proc.pid)
        up.proc.send_signal(signal.SIGINT)
        code = up.proc.wait(timeout=60)
        assert code == 0, code
        left = [p for p in family if _alive(p)]
        assert not left, left
    finally:
        up.stop()
