"""The local stack: Redis (REDIS_TOPOLOGY: standalone, sentinel or cluster; see
tooling/redis_nodes.py), REPLICAS gunicorn replicas, the tickets processor and nginx,
under supervisord, which restarts any of them that dies (as compose's `restart:
unless-stopped` does) and logs it.

`make up` runs `python -m tooling.up`. Ctrl-C or SIGTERM stops every process, each with its
whole process group, so nothing is left behind.
"""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from service.settings import env_int
from service.signing import TicketSigner

from .monitoring import MTAIL_DIR, MTAIL_OFFSET, PROMETHEUS_OFFSET, REDIS_EXPORTER_OFFSET, RULES, Targets, render
from .redis_nodes import RedisLayout

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "deploy" / "nginx"
WEB_DIR = ROOT / "web"
API_APP = "service.api.app:create_app()"
# Every port of the stack is PORT plus an offset, unless set: two stacks on one machine
# need only two PORTs. Replicas take PORT+1 onwards (up to 39 of them).
PROCESSOR_OFFSET = 40
REDIS_OFFSET = 50


@dataclass(frozen=True)
class StackConfig:
    port: int = 8080
    replicas: int = 2
    web_concurrency: int = 1
    var_dir: Path = ROOT / "var"
    redis_url: str | None = None
    redis_topology: str = "standalone"
    rate_limit_rps: int = 1000
    rate_limit_burst: int = 2000
    # always: an acknowledged write survives a power loss of the Redis host (docs/redis.md#durability).
    redis_appendfsync: str = "always"
    # None: PORT plus the offsets above.
    api_port_set: int | None = None
    redis_port_set: int | None = None
    processor_port_set: int | None = None
    # Prometheus, redis_exporter and mtail beside the stack (MONITORING=off: none).
    monitoring: bool = True
    scrape_interval_s: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        d = cls()

        def maybe(name: str) -> int | None:
            return env_int(env, name, 0) or None

        return cls(
            port=env_int(env, "PORT", d.port),
            replicas=env_int(env, "REPLICAS", d.replicas),
            web_concurrency=env_int(env, "WEB_CONCURRENCY", d.web_concurrency),
            var_dir=Path(env.get("VAR_DIR") or d.var_dir).resolve(),
            redis_url=env.get("REDIS_URL") or None,
            redis_topology=(env.get("REDIS_TOPOLOGY") or d.redis_topology).strip().lower(),
            rate_limit_rps=env_int(env, "RATE_LIMIT_RPS", d.rate_limit_rps),
            rate_limit_burst=env_int(env, "RATE_LIMIT_BURST", d.rate_limit_burst),
            redis_appendfsync=env.get("REDIS_APPENDFSYNC") or d.redis_appendfsync,
            api_port_set=maybe("API_PORT"),
            redis_port_set=maybe("REDIS_PORT"),
            processor_port_set=maybe("PROCESSOR_PORT"),
            monitoring=(env.get("MONITORING") or "on").strip().lower() not in ("off", "0", "false", "no"),
            scrape_interval_s=env_int(env, "PROMETHEUS_SCRAPE_INTERVAL_S", d.scrape_interval_s),
        )

    @property
    def api_port(self) -> int:
        return self.api_port_set or self.port + 1

    @property
    def redis_port(self) -> int:
        return self.redis_port_set or self.port + REDIS_OFFSET

    @property
    def processor_port(self) -> int:
        return self.processor_port_set or self.port + PROCESSOR_OFFSET

    @property
    def prometheus_port(self) -> int:
        return self.port + PROMETHEUS_OFFSET

    @property
    def redis_exporter_port(self) -> int:
        return self.port + REDIS_EXPORTER_OFFSET

    @property
    def mtail_port(self) -> int:
        return self.port + MTAIL_OFFSET

    @property
    def api_ports(self) -> list[int]:
        return [self.api_port + i for i in range(self.replicas)]

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def redis_layout(self) -> RedisLayout:
        """The Redis nodes the stack runs (none when REDIS_URL names one elsewhere)."""
        return RedisLayout(self.redis_topology, self.redis_port, self.var_dir, self.redis_appendfsync)

    def redis_env(self) -> dict[str, str]:
        """How the replicas, the processor and the bench reach Redis."""
        if self.redis_url is not None:
            return {"REDIS_URL": self.redis_url}
        return self.redis_layout.client_env()

    @property
    def nginx_conf(self) -> Path:
        return self.var_dir / "nginx.conf"

    @property
    def supervisor_socket(self) -> Path:
        return self.var_dir / "supervisor.sock"


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise SystemExit(f"{name} is not installed: run `make up` as root, or apt-get install {name}")
    return found


def proxy_secret(cfg: StackConfig) -> str:
    """The secret nginx adds to every request it forwards (X-Proxy-Auth), so that the
    replicas believe its X-Request-Id and X-Real-IP. Made once per VAR_DIR, readable by the
    owner only, never logged."""
    path = cfg.var_dir / "proxy-secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_text().strip()


def signing_keys_file(cfg: StackConfig) -> Path:
    """The Ed25519 key that signs the tickets' QR codes (service/signing.py): made on the
    first start of a VAR_DIR, owner-only, never logged. Rotate by appending a new key."""
    path = cfg.var_dir / "ticket-signing.pem"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(TicketSigner.generate_pem())
    return path


def redis_argv(cfg: StackConfig) -> list[str]:
    """The standalone redis-server, with AOF fsynced before every reply (docs/redis.md#durability)."""
    return RedisLayout("standalone", cfg.redis_port, cfg.var_dir, cfg.redis_appendfsync).nodes()[0].argv


def metrics_dir(cfg: StackConfig, port: int) -> Path:
    """prometheus_client's multiprocess files of the replica on `port`."""
    return cfg.var_dir / "prometheus" / str(port)


def replica_argv(cfg: StackConfig, port: int, app: str = API_APP, host: str = "127.0.0.1") -> list[str]:
    return [
        "env", f"PROMETHEUS_MULTIPROC_DIR={metrics_dir(cfg, port)}", f"LOG_NAME=api:{port}",
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
        "--bind", f"{host}:{port}", "--workers", str(cfg.web_concurrency),
        app,
    ]


def replica_env(cfg: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    for name in ("REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_CLUSTER_NODES"):
        env.pop(name, None)
    env.update(cfg.redis_env())
    env["PYTHONPATH"] = str(ROOT)
    env["PROXY_SECRET"] = proxy_secret(cfg)
    env.pop("PROXY_SECRET_FILE", None)
    if not env.get("TICKET_SIGNING_KEYS", "").strip() and not env.get("TICKET_SIGNING_KEYS_FILE", "").strip():
        env["TICKET_SIGNING_KEYS_FILE"] = str(signing_keys_file(cfg))
    return env


def processor_argv(cfg: StackConfig) -> list[str]:
    # A fixed consumer name: a restarted processor takes up its own pending entries at once,
    # instead of waiting PROCESSOR_CLAIM_IDLE_MS for them to count as abandoned.
    return ["env", f"PROCESSOR_PORT={cfg.processor_port}", "PROCESSOR_CONSUMER=local-1",
            "LOG_NAME=processor", sys.executable, "-m", "service.processor"]


def nginx_argv(cfg: StackConfig) -> list[str]:
    return [binary("nginx"), "-c", str(cfg.nginx_conf), "-p", str(cfg.var_dir / "nginx")]


def render_nginx(cfg: StackConfig, upstream_ports: Sequence[int | str], access_log: str | None = None,
                 listen: str | None = None) -> str:
    """The local nginx.conf: the shared http.conf and server.conf, a static upstream list
    (ports on loopback, or host:port each)."""
    # max_fails=0: a dead replica refuses connections at once and nginx re-sends to the next,
    # whereas marking it down after failures could mark every replica down at the same time
    # (a worker restart on one while the other is being replaced) and turn a blip into 502s.
    servers = "\n".join(f"        server {p if isinstance(p, str) else f'127.0.0.1:{p}'} max_fails=0;"
                        for p in upstream_ports)
    template = (NGINX_DIR / "local.conf.template").read_text()
    for name, value in {
        "@VAR_DIR@": str(cfg.var_dir),
        "@NGINX_DIR@": str(NGINX_DIR),
        "@WEB_DIR@": str(WEB_DIR),
        "@UPSTREAM_SERVERS@": servers,
        "@LISTEN@": listen or f"127.0.0.1:{cfg.port}",
        "@ACCESS_LOG@": access_log or str(cfg.var_dir / "log" / "nginx-access.log"),
        "@RATE_LIMIT_RPS@": str(cfg.rate_limit_rps),
        "@RATE_LIMIT_BURST@": str(cfg.rate_limit_burst),
        "@PROXY_SECRET@": proxy_secret(cfg),
    }.items():
        template = template.replace(name, value)
    return template


def prepare(cfg: StackConfig, upstream_ports: Sequence[int] | None = None) -> None:
    """Create VAR_DIR's folders and write nginx.conf (owner-only: it holds the proxy
    secret), then check it with `nginx -t`."""
    for sub in ("redis", "log", "nginx/client_body", "nginx/proxy"):
        (cfg.var_dir / sub).mkdir(parents=True, exist_ok=True)
    if cfg.redis_url is None:
        cfg.redis_layout.prepare()
    for port in cfg.api_ports:
        metrics_dir(cfg, port).mkdir(parents=True, exist_ok=True)
    ports = cfg.api_ports if upstream_ports is None else upstream_ports
    # server.conf includes it relative to the configuration's folder (compose: /etc/nginx).
    shutil.copyfile(NGINX_DIR / "proxy.conf", cfg.var_dir / "proxy.conf")
    fd = os.open(cfg.nginx_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render_nginx(cfg, ports))
    subprocess.run([*nginx_argv(cfg), "-t", "-q"], check=True)


def monitoring_targets(cfg: StackConfig) -> Targets:
    """The local stack's scrape targets: every replica, the processor, every Redis node
    (and sentinel) of the topology, nginx's log through mtail, and Prometheus itself."""
    local = "127.0.0.1"
    if cfg.redis_url is not None:
        nodes, sentinels, topology = [cfg.redis_url], [], "external"
    else:
        layout = cfg.redis_layout
        nodes = [f"redis://{local}:{p}" for p in layout.data_ports]
        sentinels = [f"redis://{local}:{p}" for p in layout.sentinel_ports]
        topology = layout.topology
    return Targets(
        topology=topology, api=[f"{local}:{p}" for p in cfg.api_ports], api_dns=None,
        processor=f"{local}:{cfg.processor_port}", redis_exporter=f"{local}:{cfg.redis_exporter_port}",
        redis_nodes=nodes, sentinels=sentinels, mtail=f"{local}:{cfg.mtail_port}",
        prometheus=f"{local}:{cfg.prometheus_port}", scrape_interval_s=cfg.scrape_interval_s, rules=str(RULES),
    )


def prepare_monitoring(cfg: StackConfig) -> None:
    """Prometheus's config from the one source (tooling/monitoring.py), checked with
    promtool, rules included, as nginx's is with `nginx -t`."""
    (cfg.var_dir / "prometheus-data").mkdir(parents=True, exist_ok=True)
    conf = cfg.var_dir / "prometheus.yml"
    conf.write_text(render(monitoring_targets(cfg)))
    subprocess.run([binary("promtool"), "check", "config", "--lint=none", str(conf)], check=True,
                   stdout=subprocess.DEVNULL)


def monitoring_programs(cfg: StackConfig) -> list[tuple[str, list[str]]]:
    local = "127.0.0.1"
    return [
        # Multi-target mode: Prometheus names each node in /scrape?target=.
        ("redis-exporter", [binary("prometheus-redis-exporter"),
                            f"--web.listen-address={local}:{cfg.redis_exporter_port}", "--redis.addr="]),
        ("mtail", [binary("mtail"), "--progs", str(MTAIL_DIR), "--logs", str(cfg.var_dir / "log" / "nginx-access.log"),
                   "--address", local, "--port", str(cfg.mtail_port), "--logtostderr"]),
        ("prometheus", [binary("prometheus"), f"--config.file={cfg.var_dir / 'prometheus.yml'}",
                        f"--storage.tsdb.path={cfg.var_dir / 'prometheus-data'}", "--storage.tsdb.retention.time=2d",
                        f"--web.listen-address={local}:{cfg.prometheus_port}", "--log.level=warn"]),
    ]


def programs(cfg: StackConfig) -> list[tuple[str, list[str]]]:
    """Each process of the stack, by name, in start order."""
    procs: list[tuple[str, list[str]]] = []
    if cfg.redis_url is None:
        layout = cfg.redis_layout
        procs += [(node.name if layout.topology != "standalone" else "redis", node.argv) for node in layout.nodes()]
        form = layout.form_argv()
        if form is not None:
            procs.append(("redis-cluster-form", form))
    procs += [(f"api{i}", replica_argv(cfg, port)) for i, port in enumerate(cfg.api_ports, 1)]
    procs.append(("processor", processor_argv(cfg)))
    procs.append(("nginx", nginx_argv(cfg)))
    if cfg.monitoring:
        procs += monitoring_programs(cfg)
    return procs


def _ini_value(text: str) -> str:
    # supervisord expands %(name)s in its values.
    return text.replace("%", "%%")


def supervisord_conf(cfg: StackConfig) -> str:
    """supervisord's config: every program restarted whenever it exits (any exit: a replica
    that stops on its own is as gone as one that crashed), stopped with its whole process
    group, its output on supervisord's own stdout. The programs inherit supervisord's
    environment, so no secret is written here."""
    # Its control socket takes a password made for this run (the file is the owner's only),
    # which supervisorctl reads from the same file.
    password = secrets.token_hex(16)
    lines = [
        # nodaemon: supervisord's own log lines go to stdout, beside the programs' output.
        "[supervisord]", "nodaemon=true", "logfile=/dev/null", "logfile_maxbytes=0",
        f"pidfile={cfg.var_dir / 'supervisord.pid'}", f"directory={ROOT}", "loglevel=info",
        *(["user=root"] if os.geteuid() == 0 else []),
        "[unix_http_server]", f"file={cfg.supervisor_socket}", "chmod=0700",
        "username=stack", f"password={password}",
        "[supervisorctl]", f"serverurl=unix://{cfg.supervisor_socket}",
        "username=stack", f"password={password}",
        "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory=supervisor.rpcinterface:make_main_rpcinterface",
    ]
    for priority, (name, argv) in enumerate(programs(cfg), 1):
        # The Cluster's forming step runs once and exits; every other program stays up.
        once = name == "redis-cluster-form"
        lines += [
            f"[program:{name}]", f"command={_ini_value(shlex.join(argv))}", f"priority={priority * 10}",
            "autostart=true", f"autorestart={'unexpected' if once else 'true'}",
            f"startsecs={0 if once else 1}", "startretries=20",
            # gunicorn's graceful_timeout is 20 s: give it that, and a little more.
            "stopsignal=TERM", "stopwaitsecs=25", "stopasgroup=true", "killasgroup=true",
            "redirect_stderr=true", "stdout_logfile=/dev/stdout", "stdout_logfile_maxbytes=0",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    cfg = StackConfig.from_env()
    prepare(cfg)
    if cfg.monitoring:
        prepare_monitoring(cfg)
    env = replica_env(cfg)
    conf = cfg.var_dir / "supervisord.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(supervisord_conf(cfg))
    print(
        f"tickets stack: nginx on http://127.0.0.1:{cfg.port} -> replicas {cfg.api_ports}, "
        f"Redis ({cfg.redis_topology if cfg.redis_url is None else 'given'}) {cfg.redis_env()}, "
        f"processor metrics on 127.0.0.1:{cfg.processor_port}; "
        + (f"Prometheus on http://127.0.0.1:{cfg.prometheus_port}; " if cfg.monitoring else "")
        + "ready when /readyz answers 200. A process that dies is restarted; Ctrl-C stops all.\n"
        f"  status: {sys.executable} -m supervisor.supervisorctl -c {conf} status",
        flush=True,
    )
    os.execve(sys.executable, [sys.executable, "-m", "supervisor.supervisord", "-c", str(conf)], env)


if __name__ == "__main__":
    main()
