"""The local stack: Redis, REPLICAS gunicorn replicas and nginx, under honcho.

`make up` runs `python -m deploy.stack`. The end-to-end tests use the same functions to start
the same processes with the same configs, one by one, so that they can kill one.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "nginx"


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    return int(raw) if raw else default


@dataclass(frozen=True)
class StackConfig:
    port: int = 8080
    api_port: int = 8081
    redis_port: int = 6380
    replicas: int = 2
    web_concurrency: int = 1
    var_dir: Path = ROOT / "var"
    redis_url: str | None = None
    rate_limit_rps: int = 1000
    rate_limit_burst: int = 2000
    processor_port: int = 9100
    # always: an acknowledged write survives a power loss of the Redis host (README, Durability).
    redis_appendfsync: str = "always"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            port=_int(env, "PORT", d.port),
            api_port=_int(env, "API_PORT", d.api_port),
            redis_port=_int(env, "REDIS_PORT", d.redis_port),
            replicas=_int(env, "REPLICAS", d.replicas),
            web_concurrency=_int(env, "WEB_CONCURRENCY", d.web_concurrency),
            var_dir=Path(env.get("VAR_DIR") or d.var_dir).resolve(),
            redis_url=env.get("REDIS_URL") or None,
            rate_limit_rps=_int(env, "RATE_LIMIT_RPS", d.rate_limit_rps),
            rate_limit_burst=_int(env, "RATE_LIMIT_BURST", d.rate_limit_burst),
            redis_appendfsync=env.get("REDIS_APPENDFSYNC") or d.redis_appendfsync,
            processor_port=_int(env, "PROCESSOR_PORT", d.processor_port),
        )

    @property
    def api_ports(self) -> list[int]:
        return [self.api_port + i for i in range(self.replicas)]

    @property
    def effective_redis_url(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def nginx_conf(self) -> Path:
        return self.var_dir / "nginx.conf"


def binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise SystemExit(f"{name} is not installed: run `make up` as root, or apt-get install {name}")
    return found


def redis_argv(cfg: StackConfig) -> list[str]:
    """redis-server with AOF fsynced before every reply; see README, Durability."""
    return [
        binary("redis-server"), "--port", str(cfg.redis_port), "--bind", "127.0.0.1",
        "--dir", str(cfg.var_dir / "redis"), "--appendonly", "yes", "--appendfsync", cfg.redis_appendfsync,
        "--save", "", "--daemonize", "no",
    ]


def metrics_dir(cfg: StackConfig, port: int) -> Path:
    """prometheus_client's multiprocess files of the replica on `port`."""
    return cfg.var_dir / "prometheus" / str(port)


API_APP = "service.app:create_app()"


def replica_argv(cfg: StackConfig, port: int, app: str = API_APP) -> list[str]:
    return [
        "env", f"PROMETHEUS_MULTIPROC_DIR={metrics_dir(cfg, port)}",
        sys.executable, "-m", "gunicorn", "-c", str(ROOT / "deploy" / "gunicorn.conf.py"),
        "--bind", f"127.0.0.1:{port}", "--workers", str(cfg.web_concurrency),
        app,
    ]


def replica_env(cfg: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["REDIS_URL"] = cfg.effective_redis_url
    env["PYTHONPATH"] = str(ROOT)
    return env


def processor_argv(cfg: StackConfig) -> list[str]:
    return ["env", f"PROCESSOR_PORT={cfg.processor_port}", sys.executable, "-m", "service.processor"]


def nginx_argv(cfg: StackConfig) -> list[str]:
    return [binary("nginx"), "-c", str(cfg.nginx_conf), "-p", str(cfg.var_dir / "nginx")]


def render_nginx(cfg: StackConfig, upstream_ports: Sequence[int], access_log: str | None = None) -> str:
    """The local nginx.conf: the shared http.conf and server.conf, a static upstream list."""
    # max_fails=0: a dead replica refuses connections at once and nginx re-sends to the next,
    # whereas marking it down after failures could mark every replica down at the same time
    # (a worker restart on one while the other is being replaced) and turn a blip into 502s.
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstream_ports)
    template = (NGINX_DIR / "local.conf.template").read_text()
    for name, value in {
        "@VAR_DIR@": str(cfg.var_dir),
        "@NGINX_DIR@": str(NGINX_DIR),
        "@UPSTREAM_SERVERS@": servers,
        "@LISTEN@": f"127.0.0.1:{cfg.port}",
        "@ACCESS_LOG@": access_log or str(cfg.var_dir / "log" / "nginx-access.log"),
        "@RATE_LIMIT_RPS@": str(cfg.rate_limit_rps),
        "@RATE_LIMIT_BURST@": str(cfg.rate_limit_burst),
    }.items():
        template = template.replace(name, value)
    return template


def prepare(cfg: StackConfig, upstream_ports: Sequence[int] | None = None) -> None:
    """Create VAR_DIR's folders and write nginx.conf, then check it with `nginx -t`."""
    for sub in ("redis", "log", "nginx/client_body", "nginx/proxy"):
        (cfg.var_dir / sub).mkdir(parents=True, exist_ok=True)
    for port in cfg.api_ports:
        metrics_dir(cfg, port).mkdir(parents=True, exist_ok=True)
    ports = cfg.api_ports if upstream_ports is None else upstream_ports
    cfg.nginx_conf.write_text(render_nginx(cfg, ports))
    subprocess.run([*nginx_argv(cfg), "-t", "-q"], check=True)


def procfile(cfg: StackConfig) -> str:
    """One line per process; honcho prefixes each one's logs with its name. `exec` makes each
    program honcho's own child, so a death is seen at once and a stop reaches the program."""
    procs: list[tuple[str, list[str]]] = []
    if cfg.redis_url is None:
        procs.append(("redis", redis_argv(cfg)))
    procs += [(f"api{i}", replica_argv(cfg, port)) for i, port in enumerate(cfg.api_ports, 1)]
    procs.append(("processor", processor_argv(cfg)))
    procs.append(("nginx", nginx_argv(cfg)))
    return "".join(f"{name}: exec {shlex.join(argv)}\n" for name, argv in procs)


def main() -> None:
    cfg = StackConfig.from_env()
    prepare(cfg)
    path = cfg.var_dir / "Procfile"
    path.write_text(procfile(cfg))
    env = replica_env(cfg)
    print(
        f"tickets stack: nginx on http://127.0.0.1:{cfg.port} -> replicas {cfg.api_ports}, "
        f"Redis {cfg.effective_redis_url}, processor metrics on :{cfg.processor_port}; "
        "ready when /readyz answers 200. Ctrl-C stops all.",
        flush=True,
    )
    # honcho stops every process when one exits, and all of them on Ctrl-C or SIGTERM.
    os.execve(sys.executable, [sys.executable, "-m", "honcho", "-f", str(path), "-d", str(ROOT), "start"], env)


if __name__ == "__main__":
    main()
