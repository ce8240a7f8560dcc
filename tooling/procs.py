"""Real processes for tests and benchmarks: free loopback ports, readiness polling, process
trees, and a redis-server."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

import redis

_EPHEMERAL_LOW = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
_ports = random.Random()


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range: a port taken from that range
    can be taken meanwhile by any outgoing connection (as the local end) before the test's
    server binds it."""
    return free_port_run(1)


def wait_until(check: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition") -> None:
    """Poll `check` until it holds; fail loudly (never hang) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_run(n: int) -> int:
    """The first of `n` consecutive free loopback ports (replicas use API_PORT, API_PORT+1...)."""
    for _ in range(500):
        base = _ports.randrange(10_000, _EPHEMERAL_LOW - n)
        if all(port_is_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no run of {n} free ports")


def http_status(url: str, method: str = "GET", timeout_s: float = 2, json_body: object = None) -> int:
    """The status of one request (0 when nothing answered), with a JSON body if given."""
    data = None if json_body is None else json.dumps(json_body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            status: int = r.status
            return status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def need_binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if path is None:
        raise RuntimeError(f"{name} is not installed; `make test` installs it (apt-get install {name})")
    return path


class RedisServer:
    """A redis-server on a free loopback port, with its data under `workdir`."""

    def __init__(
        self, workdir: Path, *, appendonly: bool = False, port: int | None = None, extra_args: tuple[str, ...] = ()
    ) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            need_binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(self.workdir), "--save", "", "--daemonize", "no",
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
            "--enable-debug-command", "local", *self.extra_args,
        ]
        with open(self.workdir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.answers, what=f"redis-server on port {self.port}")
        return self

    def answers(self) -> bool:
        try:
            with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and data directory (after kill or stop)."""
        self.kill()
        self.start()

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


def stop_groups(procs: Iterable[subprocess.Popen[bytes] | None], timeout_s: float = 25.0) -> None:
    """SIGTERM each process's group (SIGCONT first: a paused process cannot act on it), wait,
    and SIGKILL what is still there after `timeout_s`."""
    running = [p for p in procs if p is not None]
    for proc in running:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in running:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
