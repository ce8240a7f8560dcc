"""The local stack's processes, owned one by one: the same commands and configs as
`make up` (tooling/up.py), for the end-to-end tests (which kill and restart them one at a
time, on their own schedule) and the benchmarks; and a second nginx in front of other
upstreams. `tests/test_make_up.py` runs `make up` itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .procs import children, free_port, free_port_run, http_status, port_is_free, stop_groups, wait_until
from .topologies import RedisNodes
from .up import (
    StackConfig,
    nginx_argv,
    prepare,
    processor_argv,
    redis_argv,
    replica_argv,
    replica_env,
)

__all__ = ["ExtraNginx", "LocalStack", "children", "free_port_run", "http_status"]


class LocalStack:
    def __init__(
        self,
        var_dir: Path,
        replicas: int = 2,
        web_concurrency: int = 1,
        rate_limit_rps: int = 100_000,
        env: dict[str, str] | None = None,
        topology: str = "standalone",
    ) -> None:
        self.env = env or {}
        # Sentinel or Cluster: their nodes, owned one by one like the rest.
        self.nodes = None if topology == "standalone" else RedisNodes(var_dir / "redis-nodes", topology)
        # The load and fault tests send thousands of requests a second from one address: far
        # over the default per-client limit, which has a test of its own.
        self.cfg = StackConfig(
            port=free_port(), api_port_set=free_port_run(replicas), redis_port_set=free_port(),
            replicas=replicas, web_concurrency=web_concurrency, var_dir=var_dir,
            rate_limit_rps=rate_limit_rps, rate_limit_burst=rate_limit_rps,
            processor_port_set=free_port(),
            redis_topology=topology,
        )
        if self.nodes is not None:
            self.cfg = replace(self.cfg, redis_port_set=self.nodes.layout.base_port)
        self.processor: subprocess.Popen[bytes] | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.replicas: list[subprocess.Popen[bytes] | None] = [None] * replicas
        self.nginx: subprocess.Popen[bytes] | None = None
        self.stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    def replica_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.cfg.api_ports[i]}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        with open(self.cfg.var_dir / "log" / f"{name}.log", "ab") as log:
            # Own process group, so that a replica's master and workers die together.
            return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start(self) -> LocalStack:
        self.stopped = False
        prepare(self.cfg)
        self.start_redis()
        for i in range(self.cfg.replicas):
            self.start_replica(i)
        self.start_processor()
        self.nginx = self._spawn("nginx", nginx_argv(self.cfg))
        wait_until(lambda: http_status(self.url + "/readyz") == 200, what="the stack through nginx")
        return self

    def start_redis(self) -> None:
        if self.nodes is not None:
            self.nodes.start()
            return
        self.redis = self._spawn("redis", redis_argv(self.cfg))
        wait_until(self.redis_answers, what="redis")

    def redis_answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.cfg.redis_port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def start_replica(self, i: int, env: dict[str, str] | None = None) -> None:
        """Start replica i; `env` over the stack's (a REDIS_URL through a tooling.relay.Relay,
        to cut this replica alone off from Redis)."""
        port = self.cfg.api_ports[i]
        env = {**replica_env(self.cfg), **self.env, **(env or {})}
        self.replicas[i] = self._spawn(f"api{i + 1}", replica_argv(self.cfg, port), env)
        wait_until(lambda: http_status(self.replica_url(i) + "/readyz") == 200, what=f"replica {i}")

    def start_processor(self, env: dict[str, str] | None = None) -> None:
        full_env = {**replica_env(self.cfg), **self.env, **(env or {})}
        self.processor = self._spawn("processor", processor_argv(self.cfg), full_env)
        url = f"http://127.0.0.1:{self.cfg.processor_port}/metrics"
        wait_until(lambda: http_status(url) == 200, what="the processor")

    def kill_processor(self, sig: int = signal.SIGKILL) -> None:
        assert self.processor is not None
        os.killpg(self.processor.pid, sig)
        self.processor.wait(timeout=30)

    def worker_pids(self, i: int) -> list[int]:
        proc = self.replicas[i]
        assert proc is not None
        return children(proc.pid)

    def kill_worker(self, i: int) -> int:
        """SIGKILL one worker of replica i; its master starts a new one."""
        [pid, *_] = self.worker_pids(i)
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_replica(self, i: int, sig: int = signal.SIGKILL) -> None:
        proc = self.replicas[i]
        assert proc is not None
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
        proc.wait(timeout=30)

    def kill_redis(self, sig: int = signal.SIGKILL) -> None:
        assert self.redis is not None
        os.killpg(self.redis.pid, sig)
        self.redis.wait(timeout=10)

    def log_entry(self, request_id: str, timeout_s: float = 5.0) -> dict[str, Any]:
        """nginx's access-log line for one request; nginx writes it once the answer is sent,
        so it may come a moment after the client has the answer."""
        found: list[dict[str, Any]] = []

        def written() -> bool:
            found[:] = [e for e in self.access_log() if e["request_id"] == request_id]
            return bool(found)

        wait_until(written, timeout_s, f"the access-log line of {request_id}")
        [entry] = found
        return entry

    def access_log(self) -> list[dict[str, Any]]:
        path = self.cfg.var_dir / "log" / "nginx-access.log"
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        """Every process, each with its group; again is a no-op."""
        if self.stopped:
            return
        self.stopped = True
        stop_groups([self.nginx, *self.replicas, self.processor, self.redis])
        if self.nodes is not None:
            self.nodes.stop()


@dataclass
class ExtraNginx:
    """A second nginx from the same template, in front of other upstreams."""

    proc: subprocess.Popen[bytes]
    url: str

    @classmethod
    def start(
        cls, stack: LocalStack, var_dir: Path, upstream_ports: list[int], rate_limit_rps: int | None = None
    ) -> ExtraNginx:
        cfg = replace(stack.cfg, port=free_port(), var_dir=var_dir)
        if rate_limit_rps is not None:
            cfg = replace(cfg, rate_limit_rps=rate_limit_rps, rate_limit_burst=rate_limit_rps)
        # The replicas behind it believe the stack's proxy secret only.
        var_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(stack.cfg.var_dir / "proxy-secret", var_dir / "proxy-secret")
        prepare(cfg, upstream_ports)
        with open(var_dir / "log" / "nginx.log", "ab") as log:
            proc = subprocess.Popen(
                nginx_argv(cfg), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_until(lambda: not port_is_free(cfg.port), what="the extra nginx")
        return cls(proc, f"http://127.0.0.1:{cfg.port}")

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=10)
