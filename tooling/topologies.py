"""Redis Sentinel and Redis Cluster for tests: the same nodes `make up` runs
(tooling/redis_nodes.py), each process owned here so that a test can SIGKILL one and start it
again, and a client built by the service's own factory."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from service.settings import Settings
from service.store.client import redis_from_settings
from service.store.link import Client

from .procs import _ports, port_is_free, wait_until
from .redis_nodes import Node, RedisLayout, cluster_state, form_cluster


def free_cluster_ports(n: int) -> int:
    """`n` consecutive free ports whose Cluster bus ports (+10000) are free too, all below
    the ephemeral range."""
    for _ in range(500):
        base = _ports.randrange(10_000, 20_000)
        if all(port_is_free(base + i) and port_is_free(base + 10_000 + i) for i in range(n)):
            return base
    raise RuntimeError(f"no run of {n} free ports")


Spawn = Callable[[Node, Path], "subprocess.Popen[bytes]"]


def _spawn_here(node: Node, log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        return subprocess.Popen(node.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


class RedisNodes:
    """Every node of a layout, as processes of their own: on this machine, or each on a host
    of the network lab (`hosts` and `spawn`, from tooling/spread.py)."""

    def __init__(self, workdir: Path, topology: str, hosts: tuple[str, ...] = (), spawn: Spawn = _spawn_here,
                 base_port: int | None = None) -> None:
        shutil.rmtree(workdir, ignore_errors=True)
        self.layout = RedisLayout(topology, base_port or free_cluster_ports(8), workdir, appendfsync="everysec",
                                  extra_args=("--enable-debug-command", "local"), hosts=hosts)
        self._spawn = spawn
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nodes = {node.name: node for node in self.layout.nodes()}

    def start(self) -> RedisNodes:
        self.layout.prepare()
        for node in self.nodes.values():
            self.start_node(node.name)
        if self.layout.topology == "cluster":
            form_cluster([self.layout.addr(p) for p in self.layout.data_ports])
        else:
            wait_until(self.sentinels_agree, timeout_s=30, what="the sentinels to see 2 replicas")
        return self

    def start_node(self, name: str, timeout_s: float = 15.0) -> None:
        node = self.nodes[name]
        self.procs[name] = self._spawn(node, self.layout.var_dir / f"{name}.log")
        wait_until(lambda: self.answers(name), timeout_s=timeout_s, what=f"{name} on {node.port}")

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)

    def settings(self, **overrides: object) -> Settings:
        return Settings.from_env({**self.layout.client_env(), **{k: str(v) for k, v in overrides.items()}})

    def client(self, client_name: str = "tests", **overrides: object) -> Client:
        return redis_from_settings(self.settings(**overrides), client_name=client_name)

    def data_nodes(self) -> list[Node]:
        return [n for n in self.nodes.values() if not n.sentinel]

    def connect(self, name: str, timeout_s: float = 2) -> redis.Redis:
        port = self.nodes[name].port
        return redis.Redis(host=self.layout.host(port), port=port, socket_timeout=timeout_s,
                           socket_connect_timeout=timeout_s, decode_responses=True)

    def answers(self, name: str) -> bool:
        try:
            with self.connect(name, timeout_s=1) as c:
                return bool(c.ping())
        except redis.RedisError:
            return False

    def role(self, name: str) -> str:
        with self.connect(name) as c:
            return str(c.execute_command("ROLE")[0])

    def masters(self) -> list[str]:
        alive = [n.name for n in self.data_nodes() if self.procs[n.name].poll() is None]
        return [name for name in alive if self.answers(name) and self.role(name) == "master"]

    def sentinels_agree(self) -> bool:
        first = next(n.name for n in self.nodes.values() if n.sentinel)
        try:
            with self.connect(first) as c:
                info = c.execute_command("SENTINEL", "MASTER", "tickets")
        except redis.RedisError:
            return False
        fields = dict(zip(info[::2], info[1::2], strict=True)) if isinstance(info, list) else dict(info)
        return int(fields.get("num-slaves", 0)) == 2 and int(fields.get("num-other-sentinels", 0)) == 2

    def cluster_ok(self) -> bool:
        return all(cluster_state(self.layout.addr(n.port)).get("cluster_state") == "ok" for n in self.data_nodes()
                   if self.procs[n.name].poll() is None)

    def owner_of_slot(self, slot: int) -> str:
        """The node that serves `slot` as master now."""
        for node in self.data_nodes():
            if self.procs[node.name].poll() is not None or not self.answers(node.name):
                continue
            with self.connect(node.name) as c:
                for start, end, master, *_ in c.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        return next(n.name for n in self.data_nodes() if n.port == int(master[1]))
        raise LookupError(slot)


def wait_for(check: object, timeout_s: float, what: str) -> float:
    """wait_until, returning how long it took."""
    started = time.monotonic()
    wait_until(check, timeout_s=timeout_s, what=what)  # type: ignore[arg-type]
    return time.monotonic() - started
