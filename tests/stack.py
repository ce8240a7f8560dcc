"""The local stack for end-to-end tests (deploy/local.py), and a second nginx in front of
other upstreams."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from deploy.local import LocalStack, children, free_port, free_port_run, http_status, port_is_free, wait_until
from deploy.stack import nginx_argv, prepare

__all__ = ["ExtraNginx", "LocalStack", "children", "free_port_run", "http_status"]


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
