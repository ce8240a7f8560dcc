"""The stack spread over the hosts of a network lab (tooling/netlab.py), as a small production
runs it: every Redis host a data node and a sentinel (Sentinel), or a master and the replica of
another master (Cluster); each API replica, the processor and nginx on a host of its own. The
same commands and configs as `make up` (tooling/up.py) and the same Redis nodes
(tooling/redis_nodes.py), only bound to the hosts' addresses. The machine itself is the
outside: the workload reaches nginx, and the checker reads Redis, from there.

    hosts  r1 r2 r3 (Redis)  api1 api2 (gunicorn)  proc (processor)  lb (nginx)
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from .netlab import Host, NetLab
from .procs import http_status, stop_groups, wait_until
from .redis_nodes import Node
from .topologies import RedisNodes
from .up import StackConfig, binary, prepare, processor_argv, render_nginx, replica_argv, replica_env

REDIS_HOSTS = ("r1", "r2", "r3")
API_HOSTS = ("api1", "api2")
HOSTS = (*REDIS_HOSTS, *API_HOSTS, "proc", "lb")
API_PORT = 8000
LB_PORT = 8080
REDIS_BASE_PORT = 7000


class SpreadStack:
    def __init__(self, var_dir: Path, topology: str, delay_ms: float = 5.0, env: dict[str, str] | None = None) -> None:
        self.var_dir = var_dir
        self.lab = NetLab(HOSTS, var_dir, delay_ms=delay_ms)
        self.topology = topology
        self.env = env or {}
        ips = tuple(self.lab.hosts[h].ip for h in REDIS_HOSTS)
        self.nodes = RedisNodes(var_dir / "redis-nodes", topology, hosts=ips, spawn=self._spawn_node,
                                base_port=REDIS_BASE_PORT)
        self.cfg = StackConfig(port=LB_PORT, api_port_set=API_PORT, replicas=1, var_dir=var_dir,
                               rate_limit_rps=100_000, rate_limit_burst=100_000, redis_topology=topology,
                               monitoring=False, redis_url="redis://the-lab")  # the lab's nodes, not up.py's
        self.apis: dict[str, subprocess.Popen[bytes] | None] = dict.fromkeys(API_HOSTS)
        self.processor: subprocess.Popen[bytes] | None = None
        self.nginx: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.lab.hosts['lb'].ip}:{LB_PORT}"

    def host_of(self, name: str) -> Host:
        """The host of a process: redis2 and sentinel2 are on r2; a Cluster's redis4 to redis6
        on r1 to r3 again (each host a master and another master's replica)."""
        if name in self.lab.hosts:
            return self.lab.hosts[name]
        port = self.nodes.nodes[name].port
        return next(h for h in self.lab.hosts.values() if h.ip == self.nodes.layout.host(port))

    def _spawn_node(self, node: Node, log_path: Path) -> subprocess.Popen[bytes]:
        del log_path  # the lab keeps every process's log under var/log
        return self.lab.spawn(self.host_of(node.name), node.name, node.argv)

    # --- the stack's life ---------------------------------------------------------------------

    def start(self) -> SpreadStack:
        self.lab.start()
        try:
            prepare(self.cfg)  # the folders, the proxy secret and the signing key
            self.nodes.start()
            self._check_placement()
            for name in API_HOSTS:
                self.start_api(name)
            self.start_processor()
            self.start_nginx()
        except BaseException:
            self.stop()
            raise
        return self

    def _check_placement(self) -> None:
        """Each master's replicas on other hosts than the master's (redis-cli's anti-affinity
        for a Cluster; one node a host for Sentinel): else a host lost is a shard lost."""
        for name in self.nodes.masters():
            with self.nodes.connect(name) as c:
                info = c.info("replication")
            here = self.host_of(name).ip
            replicas = [v["ip"] for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
            if not replicas or here in replicas:
                raise RuntimeError(f"{name} on {here} has its replicas on {replicas}")

    def _env(self) -> dict[str, str]:
        env = replica_env(self.cfg)
        for name in ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_CLUSTER_NODES"):
            env.pop(name, None)
        return {**env, **self.nodes.layout.client_env(), **self.env}

    def start_api(self, name: str) -> None:
        host = self.lab.hosts[name]
        self.apis[name] = self.lab.spawn(host, "api", replica_argv(self.cfg, API_PORT, host=host.ip), self._env())
        wait_until(lambda: http_status(f"http://{host.ip}:{API_PORT}/readyz") == 200, timeout_s=60,
                   what=f"the API on {name}")

    def start_processor(self) -> None:
        self.processor = self.lab.spawn(self.lab.hosts["proc"], "processor", processor_argv(self.cfg), self._env())

    def start_nginx(self) -> None:
        upstreams = [f"{self.lab.hosts[h].ip}:{API_PORT}" for h in API_HOSTS]
        conf = self.var_dir / "nginx-lab.conf"
        conf.write_text(render_nginx(self.cfg, upstreams, listen=f"{self.lab.hosts['lb'].ip}:{LB_PORT}"))
        conf.chmod(0o600)
        argv = [binary("nginx"), "-c", str(conf), "-p", str(self.var_dir / "nginx")]
        self.nginx = self.lab.spawn(self.lab.hosts["lb"], "nginx", argv)
        wait_until(lambda: http_status(self.url + "/readyz") == 200, timeout_s=30, what="the stack through nginx")

    def processes(self) -> dict[str, subprocess.Popen[bytes] | None]:
        return {**self.nodes.procs, **self.apis, "processor": self.processor, "nginx": self.nginx}

    def signal(self, name: str, sig: int) -> None:
        proc = self.processes()[name]
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, sig)

    def stop(self) -> None:
        stop_groups(self.processes().values(), timeout_s=20)
        self.lab.stop()
