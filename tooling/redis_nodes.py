"""The Redis processes of each topology, for `make up` and the tests alike: real
redis-server and redis-sentinel from Debian's packages, on loopback, with AOF on.

- standalone: one redis-server on the base port.
- sentinel: a master and 2 replicas (base, +1, +2) and 3 sentinels (+5, +6, +7), quorum 2.
- cluster: 6 nodes (base .. +5) made into 3 masters with a replica each by
  `redis-cli --cluster create ... --cluster-replicas 1` (`python -m tooling.redis_nodes form`).

A node's role lives in its own config file, written once and then kept up to date by Redis
(Sentinel rewrites it on failover, a Cluster node keeps nodes.conf): a restarted stack resumes
the roles the last failover left, never the first ones, which could make a stale node master.
Everything else is on the command line, so a change here applies at the next start.

With replicas, a master stops taking writes when no replica has been in touch for
min-replicas-max-lag seconds (min-replicas-to-write 1): a master cut off from its replicas
cannot go on acknowledging writes that the promoted side will never see.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import redis
from redis.crc import key_slot

TOPOLOGIES = ("standalone", "sentinel", "cluster")
SENTINEL_MASTER = "tickets"
SENTINEL_OFFSET = 5
HOST = "127.0.0.1"
# Failure detection, kept short for a local stack on loopback (a real one on a LAN may want
# longer): a Sentinel or Cluster calls a node down after this many ms without an answer.
DOWN_AFTER_MS = 2000


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin:/usr/local/bin")
    if found is None:
        raise SystemExit(f"{name} is not installed: run `make up` as root, "
                         "or apt-get install redis-server redis-sentinel")
    return found


@dataclass(frozen=True)
class Node:
    name: str
    port: int
    argv: list[str]
    sentinel: bool = False


@dataclass(frozen=True)
class RedisLayout:
    topology: str
    base_port: int
    var_dir: Path
    appendfsync: str = "always"
    extra_args: tuple[str, ...] = ()
    # The address of each data node's host, in turn (the network lab's hosts: see
    # tooling/spread.py); sentinel i is on data node i's host. None: all on loopback.
    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise SystemExit(f"REDIS_TOPOLOGY must be one of {', '.join(TOPOLOGIES)}, not {self.topology!r}")

    @property
    def data_ports(self) -> list[int]:
        count = {"standalone": 1, "sentinel": 3, "cluster": 6}[self.topology]
        return [self.base_port + i for i in range(count)]

    @property
    def sentinel_ports(self) -> list[int]:
        if self.topology != "sentinel":
            return []
        return [self.base_port + SENTINEL_OFFSET + i for i in range(3)]

    def host(self, port: int) -> str:
        """The address the node on `port` binds and is known by."""
        if not self.hosts:
            return HOST
        data = self.data_ports
        index = data.index(port) if port in data else self.sentinel_ports.index(port)
        return self.hosts[index % len(self.hosts)]

    def addr(self, port: int) -> Addr:
        return self.host(port), port

    def node_dir(self, port: int) -> Path:
        # Standalone keeps the folder it always had, so that existing data stays where it was.
        if self.topology == "standalone":
            return self.var_dir / "redis"
        return self.var_dir / "redis" / str(port)

    def client_env(self) -> dict[str, str]:
        """What the API, the processor and the bench need to reach this topology."""
        if self.topology == "cluster":
            return {"REDIS_CLUSTER_NODES": ",".join(f"{self.host(p)}:{p}" for p in self.data_ports)}
        if self.topology == "sentinel":
            # Every replica confirms each write: with fewer, a replica that missed acknowledged
            # writes can be the one Sentinel promotes (docs/chaos.md: the stale-promotion run).
            return {"REDIS_SENTINELS": ",".join(f"{self.host(p)}:{p}" for p in self.sentinel_ports),
                    "REDIS_SENTINEL_MASTER": SENTINEL_MASTER,
                    "REDIS_MIN_REPLICAS_ACK": str(len(self.data_ports) - 1)}
        return {"REDIS_URL": f"redis://{HOST}:{self.base_port}/0"}

    def _server_argv(self, port: int) -> list[str]:
        argv = [binary("redis-server"), str(self.node_dir(port) / "redis.conf"),
                "--port", str(port), "--bind", self.host(port), "--dir", str(self.node_dir(port)),
                "--appendonly", "yes", "--appendfsync", self.appendfsync, "--save", "", "--daemonize", "no"]
        if self.topology != "standalone":
            argv += ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "10",
                     # A replica answers nothing while it is out of sync: stale tickets are no answer.
                     "--replica-serve-stale-data", "no",
                     # A master with no live replica refuses writes (above), so a replica that
                     # needs a full sync should get it at once, not after the default 5 s wait
                     # for other replicas to share the transfer.
                     "--repl-diskless-sync-delay", "0"]
        argv += self._reachable()
        if self.topology == "cluster":
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                     "--cluster-node-timeout", str(DOWN_AFTER_MS),
                     # Keep serving the slots that are covered while another master fails over.
                     "--cluster-require-full-coverage", "no"]
        return argv + list(self.extra_args)

    def _data_argv(self, port: int) -> list[str]:
        if self.topology != "sentinel":
            return self._server_argv(port)
        # Under Sentinel a data node starts as the replica of whatever master the sentinels
        # name now (see `serve`): a crashed master that comes back must not be a master
        # again, or the replicas not yet re-pointed follow it and the writes it then takes
        # are thrown away when Sentinel demotes it (a split brain the failover test found).
        sentinels = ",".join(f"{self.host(p)}:{p}" for p in self.sentinel_ports)
        return [sys.executable, "-m", "tooling.redis_nodes", "serve", f"{self.host(port)}:{port}", sentinels, "--",
                *self._server_argv(port)]

    def _sentinel_argv(self, port: int) -> list[str]:
        return [binary("redis-sentinel"), str(self.node_dir(port) / "sentinel.conf"),
                "--port", str(port), "--bind", self.host(port), "--dir", str(self.node_dir(port)),
                "--daemonize", "no", *self._reachable()]

    def _reachable(self) -> list[str]:
        """Off loopback, the lab's hosts reach each other over its own private bridge, with no
        password: protected mode (loopback only when there is none) would refuse them."""
        return ["--protected-mode", "no"] if self.hosts else []

    def nodes(self) -> list[Node]:
        nodes = [Node(f"redis{i}", port, self._data_argv(port)) for i, port in enumerate(self.data_ports, 1)]
        nodes += [Node(f"sentinel{i}", port, self._sentinel_argv(port), sentinel=True)
                  for i, port in enumerate(self.sentinel_ports, 1)]
        return nodes

    def prepare(self) -> None:
        """Each node's folder, and its config file unless Redis already keeps one there."""
        master_host, master = self.addr(self.data_ports[0])
        for i, port in enumerate(self.data_ports):
            conf = self.node_dir(port) / "redis.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            if not conf.exists():
                role = f"replicaof {master_host} {master}\n" if self.topology == "sentinel" and i else ""
                conf.write_text("# Written once by tooling/redis_nodes.py; Redis rewrites it.\n" + role)
        for port in self.sentinel_ports:
            conf = self.node_dir(port) / "sentinel.conf"
            conf.parent.mkdir(parents=True, exist_ok=True)
            if not conf.exists():
                conf.write_text(
                    "# Written once by tooling/redis_nodes.py; Sentinel rewrites it.\n"
                    f"sentinel monitor {SENTINEL_MASTER} {master_host} {master} 2\n"
                    f"sentinel down-after-milliseconds {SENTINEL_MASTER} {DOWN_AFTER_MS}\n"
                    f"sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
                    f"sentinel parallel-syncs {SENTINEL_MASTER} 1\n"
                )

    def form_argv(self) -> list[str] | None:
        """The one-shot step that makes the Cluster (none for the other topologies)."""
        if self.topology != "cluster":
            return None
        nodes = (f"{host}:{port}" for host, port in map(self.addr, self.data_ports))
        return [sys.executable, "-m", "tooling.redis_nodes", "form", *nodes]


Addr = tuple[str, int]


def _addr(node: Addr | int) -> Addr:
    """A node by (host, port), or by port alone on loopback."""
    return (HOST, node) if isinstance(node, int) else node


def parse_addr(text: str) -> Addr:
    host, _, port = text.rpartition(":")
    return host or HOST, int(port)


def _cli(node: Addr | int, *args: str) -> str:
    host, port = _addr(node)
    done = subprocess.run([binary("redis-cli"), "-h", host, "-p", str(port), *args],
                          capture_output=True, text=True, timeout=10)
    return done.stdout


def cluster_state(node: Addr | int) -> dict[str, str]:
    lines = _cli(node, "cluster", "info").splitlines()
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def form_cluster(nodes: list[Addr] | list[int], timeout_s: float = 60.0) -> None:
    """Make the Cluster once: wait for every node, then `redis-cli --cluster create` unless
    the nodes already know each other (a restart), then wait until every node says ok.
    redis-cli puts a master's replica on another host where it can (the network lab)."""
    addrs = [_addr(n) for n in nodes]
    deadline = time.monotonic() + timeout_s
    while not all(_safe_ping(a) for a in addrs):
        if time.monotonic() > deadline:
            raise SystemExit("cluster nodes did not start")
        time.sleep(0.2)
    if int(cluster_state(addrs[0]).get("cluster_known_nodes", "1")) < len(addrs):
        subprocess.run([binary("redis-cli"), "--cluster", "create", *(f"{h}:{p}" for h, p in addrs),
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, timeout=60)
    # Ok, every master with a replica in sync (until then it refuses writes: NOREPLICAS), and
    # a write on each confirmed by its replica, as the API's writes are.
    while (not all(cluster_state(a).get("cluster_state") == "ok" for a in addrs) or not _replicas_online(addrs)
           or not _masters_confirm_writes(addrs[0])):
        if time.monotonic() > deadline:
            raise SystemExit("the cluster did not reach state ok with every master's writes confirmed by a replica")
        time.sleep(0.2)
    print(f"redis cluster ok on {', '.join(f'{h}:{p}' for h, p in addrs)}", flush=True)


def replication(node: Addr | int) -> dict[str, str]:
    lines = _cli(node, "info", "replication").splitlines()
    return dict(line.strip().split(":", 1) for line in lines if ":" in line)


def _replicas_online(addrs: list[Addr]) -> bool:
    infos = [replication(a) for a in addrs]
    masters = [i for i in infos if i.get("role") == "master"]
    # Online, and acknowledging: a replica's first ACK comes after it has loaded the sync,
    # and a WAIT sent before it gets no answer in time.
    return bool(masters) and all("state=online" in i.get("slave0", "")
                                 and f"offset={i.get('master_repl_offset')}," in i.get("slave0", "") for i in masters)


def confirms_writes(node: Addr | int, key: str, timeout_ms: int = 1000) -> bool:
    """Whether a write of `key` on the master at `node` is confirmed by a replica (WAIT 1).
    A replica that has just loaded a diskless sync gets no commands until its first
    REPLCONF ACK, which it sends once a second: a WAIT in that second times out though the
    replica is online and at the master's offset."""
    host, port = _addr(node)
    try:
        with redis.Redis(host=host, port=port, socket_timeout=timeout_ms / 1000 + 5) as client:
            client.set(key, "1", px=60_000)
            confirmed = int(client.execute_command("WAIT", 1, timeout_ms))
            client.delete(key)
            return confirmed >= 1
    except redis.RedisError:
        return False


def master_probes(node: Addr | int) -> list[tuple[Addr, str]]:
    """(address, a key of its own slots) for each master of the Cluster, as `node` sees it."""
    host, port = _addr(node)
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        ranges = client.execute_command("CLUSTER", "SLOTS")
    keys = (f"redis-nodes:probe:{n}" for n in itertools.count())
    return [((_text(master[0]) or host, int(master[1])),
             next(k for k in keys if start <= key_slot(k.encode()) <= end))
            for start, end, master, *_ in ranges]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _masters_confirm_writes(node: Addr) -> bool:
    try:
        probes = master_probes(node)
    except redis.RedisError:
        return False
    return all(confirms_writes(master, key) for master, key in probes)


def _safe_ping(node: Addr) -> bool:
    try:
        return _cli(node, "ping").strip() == "PONG"
    except (OSError, subprocess.SubprocessError):
        return False


def _sentinel_view(sentinels: list[Addr]) -> tuple[Addr, bool] | None:
    """(the master's address, whether it is down or failing over) by the first sentinel
    that answers; None when none does (the stack's first start: the config files decide)."""
    for sentinel in sentinels:
        try:
            lines = _cli(sentinel, "sentinel", "master", SENTINEL_MASTER).splitlines()
        except (OSError, subprocess.SubprocessError):
            continue
        if len(lines) < 2:
            continue
        fields = dict(zip(lines[::2], lines[1::2], strict=False))
        flags = fields.get("flags", "")
        unsettled = "s_down" in flags or "o_down" in flags or fields.get("failover-state", "") not in ("", "none")
        return (fields.get("ip", HOST), int(fields.get("port", "0"))), unsettled
    return None


def serve(me: Addr, sentinels: list[Addr], argv: list[str], settle_s: float = 60.0) -> None:
    """Start a data node under Sentinel: as a replica of the master the sentinels name, or
    as master if they name this node and it is not being failed over."""
    deadline = time.monotonic() + settle_s
    view = _sentinel_view(sentinels)
    while view is not None and view[0] == me and view[1] and time.monotonic() < deadline:
        time.sleep(0.25)  # they are deciding whether to replace this very node: wait
        view = _sentinel_view(sentinels)
    extra = [] if view is None or view[0] == me else ["--replicaof", view[0][0], str(view[0][1])]
    if view is not None and extra:
        print(f"redis {me[0]}:{me[1]}: starting as a replica of {view[0][0]}:{view[0][1]}, the sentinels' master",
              flush=True)
    os.execv(argv[0], [*argv, *extra])


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tooling.redis_nodes")
    sub = parser.add_subparsers(dest="command", required=True)
    form = sub.add_parser("form", help="make the Cluster of these nodes, host:port or port (once)")
    form.add_argument("nodes", nargs="+", type=parse_addr)
    run = sub.add_parser("serve", help="start a data node under Sentinel in the role the sentinels give it")
    run.add_argument("node", type=parse_addr, help="host:port of this node")
    run.add_argument("sentinels", help="sentinels' host:port, comma-separated")
    run.add_argument("argv", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.command == "form":
        form_cluster(args.nodes)
    else:
        argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
        serve(args.node, [parse_addr(a) for a in args.sentinels.split(",")], argv)


if __name__ == "__main__":
    main()
