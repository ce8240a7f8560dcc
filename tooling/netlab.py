"""Several hosts on one machine, for what crosses a network: each host a network namespace
with an address of its own, all joined by veth links to one bridge (in a namespace of its
own, so the machine's firewall never sees the lab's traffic), and the machine itself (the
tests, the workload) one more address on that bridge, outside every partition.

- Delay: every host's connections to the other hosts go through a delaying relay of its own
  (tooling/delay.py: what it models and what not is said there); `delay_ms` each way.
- Partitions: iptables in each host's INPUT chain drops what comes from the hosts it is cut
  from, silently (no RST, no ICMP), both ways, established connections included, until
  `heal()`. Any grouping can be made: a host alone, a minority of two, or a bridge where one
  host sees both sides that cannot see each other.

Needs root (CI runs as root). Every name carries a tag of the lab's own, and `stop()` removes
every namespace and link it made, so a run leaves nothing behind.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .procs import wait_until

# The mark of the relay's own connections, which the redirect rule lets through.
_RELAY_MARK = 119
_RELAY_PORT = 7999
_CHAIN = "LAB-CUT"


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


@dataclass(frozen=True)
class Host:
    name: str
    netns: str
    ip: str


class NetLab:
    def __init__(self, names: Sequence[str], var_dir: Path, delay_ms: float = 0.0) -> None:
        self.tag = f"{os.getpid() % 10_000:04d}{random.randrange(100):02d}"
        self.subnet = f"10.{random.randrange(100, 250)}.{random.randrange(0, 250)}"
        self.var_dir = var_dir
        self.delay_ms = delay_ms
        self.switch = f"lab{self.tag}-sw"
        self.bridge = "br0"
        self.me = Host("outside", "", f"{self.subnet}.1")
        self.hosts = {name: Host(name, f"lab{self.tag}-{name}", f"{self.subnet}.{10 + i}")
                      for i, name in enumerate(names)}
        self._relays: list[subprocess.Popen[bytes]] = []
        self.cut_from: dict[str, set[str]] = {}

    # --- the lab's life ---------------------------------------------------------------------

    def start(self) -> NetLab:
        (self.var_dir / "log").mkdir(parents=True, exist_ok=True)
        try:
            self._make_switch()
            self._link("", f"lab{self.tag}o", self.me.ip)
            for i, host in enumerate(self.hosts.values()):
                _run("ip", "netns", "add", host.netns)
                self._in(host, "ip", "link", "set", "lo", "up")
                self._link(host.netns, f"lab{self.tag}h{i}", host.ip)
                self._in(host, "iptables", "-N", _CHAIN)
                self._in(host, "iptables", "-A", "INPUT", "-j", _CHAIN)
                if self.delay_ms > 0:
                    self._start_relay(host)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for relay in self._relays:
            _kill_group(relay)
        self._relays.clear()
        for host in self.hosts.values():
            _run("ip", "netns", "del", host.netns, check=False)
        _run("ip", "link", "del", f"lab{self.tag}o", check=False)
        _run("ip", "netns", "del", self.switch, check=False)

    def _make_switch(self) -> None:
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "add", self.bridge, "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", self.bridge, "up")

    def _link(self, netns: str, name: str, ip: str) -> None:
        """A veth from `netns` ("" for the machine itself) to the bridge, the address on its end."""
        peer = f"{name}p"
        _run("ip", "link", "add", name, "type", "veth", "peer", "name", peer)
        _run("ip", "link", "set", peer, "netns", self.switch)
        _run("ip", "-n", self.switch, "link", "set", peer, "master", self.bridge)
        _run("ip", "-n", self.switch, "link", "set", peer, "up")
        inside: list[str] = []
        if netns:
            _run("ip", "link", "set", name, "netns", netns)
            inside = ["-n", netns]
        _run("ip", *inside, "addr", "add", f"{ip}/24", "dev", name)
        _run("ip", *inside, "link", "set", name, "up")

    def _start_relay(self, host: Host) -> None:
        """Every new connection from `host` to another host of the lab goes by its relay."""
        self._in(host, "iptables", "-t", "nat", "-A", "OUTPUT", "-d", host.ip, "-j", "RETURN")  # its own
        self._in(host, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", f"{self.subnet}.0/24",
                 "-m", "mark", "!", "--mark", str(_RELAY_MARK), "-j", "REDIRECT", "--to-ports", str(_RELAY_PORT))
        relay = self.spawn(host, "delay", [sys.executable, "-m", "tooling.delay", "--port", str(_RELAY_PORT),
                                            "--delay-ms", str(self.delay_ms), "--mark", str(_RELAY_MARK)])
        self._relays.append(relay)
        wait_until(lambda: "delay relay on" in self.log(host, "delay"), what=f"the delay relay of {host.name}")

    # --- processes ----------------------------------------------------------------------------

    def spawn(self, host: Host, name: str, argv: Sequence[str], env: Mapping[str, str] | None = None,
              cwd: Path | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` on `host`, in a process group of its own, its output in var/log."""
        with open(self.var_dir / "log" / f"{host.name}-{name}.log", "ab") as log:
            return subprocess.Popen(["ip", "netns", "exec", host.netns, *argv], stdout=log,
                                    stderr=subprocess.STDOUT, env=dict(env) if env is not None else None,
                                    cwd=cwd, start_new_session=True)

    def log(self, host: Host, name: str) -> str:
        path = self.var_dir / "log" / f"{host.name}-{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _in(self, host: Host, *argv: str) -> None:
        _run("ip", "netns", "exec", host.netns, *argv)

    # --- faults -------------------------------------------------------------------------------

    def partition(self, sides: Iterable[Iterable[str]]) -> None:
        """Each host hears only the hosts it shares a side with (and the outside): a host on
        two sides is a bridge between them. Hosts on no side hear everyone."""
        groups = [set(side) for side in sides]
        placed = set().union(*groups) if groups else set()
        for name, host in self.hosts.items():
            if name not in placed:
                heard = set(self.hosts)
            else:
                heard = set().union(*(g for g in groups if name in g))
            cut = set(self.hosts) - heard
            self._cut(host, cut)

    def heal(self) -> None:
        for host in self.hosts.values():
            self._cut(host, set())

    def _cut(self, host: Host, cut: set[str]) -> None:
        if self.cut_from.get(host.name, set()) == cut:
            return
        self._in(host, "iptables", "-F", _CHAIN)
        for other in sorted(cut):
            self._in(host, "iptables", "-A", _CHAIN, "-s", self.hosts[other].ip, "-j", "DROP")
        self.cut_from[host.name] = cut

    def describe(self) -> str:
        cuts = {h: sorted(c) for h, c in self.cut_from.items() if c}
        return "healed" if not cuts else "; ".join(f"{h} cut from {', '.join(c)}" for h, c in sorted(cuts.items()))


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def shell(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)
