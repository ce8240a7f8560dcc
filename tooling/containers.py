"""Containers for the compose test, on Debian's podman, with the project's own settings
(tooling/containers/*.conf, never the machine's /etc). No image registry is reachable here, so
the base images docker-compose.yml and deploy/Dockerfile name are stand-ins built from Debian
packages (mmdebstrap) and imported under those very names: the compose file and the
Dockerfile are used unchanged. The api image's pip installs from a wheelhouse made on the
host (`pip download`), since TLS to PyPI does not verify inside a container here."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "tooling" / "containers"
WHEELS = ROOT / "deploy" / "wheels"
MIRROR = "http://deb.debian.org/debian"
ENV = {"CONTAINERS_CONF": str(HERE / "containers.conf"), "CONTAINERS_REGISTRIES_CONF": str(HERE / "registries.conf")}
LABEL = "tickets.standin"


@dataclass(frozen=True)
class StandIn:
    tag: str
    suite: str
    packages: tuple[str, ...]
    hooks: tuple[str, ...]
    changes: tuple[str, ...]
    files: tuple[Path, ...] = ()

    @property
    def recipe(self) -> str:
        """Changes whenever what goes into the image does: an image of the same recipe is
        kept between runs."""
        digest = hashlib.sha256(json.dumps([self.tag, self.suite, self.packages, self.hooks, self.changes]).encode())
        for path in self.files:
            digest.update(path.read_bytes())
        return digest.hexdigest()[:16]


STANDINS = (
    # deploy/Dockerfile's FROM: Debian's Python 3.11 with pip, as the official image has it
    # (python and pip on PATH, pip allowed to install system-wide).
    StandIn("docker.io/library/python:3.11.14-slim-bookworm", "bookworm",
            ("python3", "python3-pip", "python3-venv", "passwd", "ca-certificates"),
            ('ln -sf python3 "$1/usr/bin/python"', 'rm -f "$1"/usr/lib/python3.11/EXTERNALLY-MANAGED'),
            ("ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin", 'CMD ["python3"]')),
    StandIn("docker.io/library/redis:7.4.2-alpine", "bookworm", ("redis-server", "redis-tools"),
            ('mkdir -p "$1/data"', f'copy-in {HERE / "redis-server"} /usr/local/bin'),
            ("ENV PATH=/usr/local/bin:/usr/bin:/bin", "WORKDIR /data", 'CMD ["redis-server"]'),
            (HERE / "redis-server",)),
    # nginx 1.27.3+ for `server ... resolve`: Debian sid's.
    StandIn("docker.io/library/nginx:1.28.0-alpine", "sid", ("nginx", "gettext-base"),
            (f'copy-in {HERE / "nginx" / "nginx.conf"} /etc/nginx',
             f'copy-in {HERE / "nginx" / "docker-entrypoint.sh"} /',
             'rm -f "$1"/etc/nginx/sites-enabled/* "$1"/etc/nginx/conf.d/*',
             'mkdir -p "$1/etc/nginx/templates"'),
            ('ENTRYPOINT ["/docker-entrypoint.sh"]', 'CMD ["nginx", "-g", "daemon off;"]', "STOPSIGNAL SIGQUIT"),
            (HERE / "nginx" / "nginx.conf", HERE / "nginx" / "docker-entrypoint.sh")),
)


def podman_env() -> dict[str, str]:
    return {**os.environ, **ENV}


def podman(*args: str, timeout_s: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, env=podman_env(), timeout=timeout_s)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)}: {done.stderr.strip()[-2000:]}")
    return done


def why_containers_cannot_run() -> str | None:
    """None when podman runs a container here; else the reason, said in full."""
    for tool in ("podman", "mmdebstrap", "runc", "iptables"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (tooling/ensure-system.sh installs it as root)"
    if os.geteuid() != 0:
        return "the compose test runs rootful podman: run it as root"
    info = podman("info", "--format", "{{.Host.OCIRuntime.Name}}", check=False, timeout_s=60)
    if info.returncode != 0:
        return f"podman does not start here: {info.stderr.strip()[-500:]}"
    return None


def _recipe_of(tag: str) -> str | None:
    done = podman("image", "inspect", "--format", f'{{{{ index .Labels "{LABEL}" }}}}', tag, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def build_standin(image: StandIn) -> bool:
    """Build and import the stand-in unless an image of its recipe is there; whether it was
    built now."""
    if _recipe_of(image.tag) == image.recipe:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        # The mirror reachable here serves a snapshot of sid whose Release is past its date.
        argv = ["mmdebstrap", "--variant=minbase", "--quiet", f"--include={','.join(image.packages)}",
                "--aptopt=Acquire::Check-Valid-Until \"false\"",
                *(f"--customize-hook={hook}" for hook in image.hooks),
                "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*",
                image.suite, str(rootfs), MIRROR]
        subprocess.run(argv, check=True, capture_output=True, timeout=900)
        changes = [*image.changes, f"LABEL {LABEL}={image.recipe}"]
        podman("import", *(f"--change={c}" for c in changes), str(rootfs), image.tag, timeout_s=300)
    return True


def build_wheelhouse() -> None:
    """What requirements.txt pins, as wheels for the image's Python (its markers decide:
    3.11.2 needs async-timeout, which a newer 3.11 does not)."""
    python = podman("run", "--rm", STANDINS[0].tag, "python3", "-c",
                    "import platform; print(platform.python_version())").stdout.strip()
    WHEELS.mkdir(exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
           f"--python-version={python}", "-d", str(WHEELS)]
    subprocess.run([*pip, "-r", str(ROOT / "requirements.txt")], check=True, capture_output=True, timeout=600)
    # pip judges markers by the Python running it, not the image's: the pins behind a marker
    # are fetched as well, whatever it says.
    guarded = [line.split(";")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
               if ";" in line and not line.lstrip().startswith("#")]
    if guarded:
        subprocess.run([*pip, "--no-deps", *guarded], check=True, capture_output=True, timeout=600)
