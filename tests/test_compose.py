"""docker-compose.yml run for real, on podman (tooling/containers.py): the api image built from
deploy/Dockerfile, `--scale api=3`, the seed's curl examples through the published port,
every replica reached, scaling to 5 and to 2 while requests flow (nginx follows through DNS,
no reload, no failed request), a crashed api container brought back by its restart policy,
the healthchecks, and a stop within the grace period. Skipped, with the reason, where
containers cannot run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from service.signing import TicketSigner
from tooling.containers import (
    ROOT,
    STANDINS,
    build_standin,
    build_wheelhouse,
    podman,
    podman_env,
    why_containers_cannot_run,
)
from tooling.procs import http_status, port_is_free, wait_until

from .test_e2e import check_seed_examples

pytestmark = pytest.mark.e2e
URL = "http://127.0.0.1:8080"  # docker-compose.yml publishes 8080, as a user runs it
PROJECT = f"tickets-compose-test-{os.getpid()}"
GRACE_S = 30  # docker-compose.yml's stop_grace_period for the api
REDIS_PASSWORD = "compose0test0redis0password0123"


def _skip_reason() -> str | None:
    reason = why_containers_cannot_run()
    if reason is None and not port_is_free(8080):
        reason = "port 8080, which docker-compose.yml publishes, is taken on this machine"
    return reason


REASON = _skip_reason()
if REASON is not None:
    print(f"\ntests/test_compose.py skipped: {REASON}", file=sys.stderr)
    pytest.skip(f"containers cannot run here: {REASON}", allow_module_level=True)


def compose(*args: str, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    env = {**podman_env(), "PROXY_SECRET": "compose0test0proxy0secret0123456789",
           "REDIS_PASSWORD": REDIS_PASSWORD}
    done = subprocess.run([sys.executable, "-m", "podman_compose", "-p", PROJECT, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def containers(service: str) -> list[str]:
    out = podman("ps", "--filter", f"label=io.podman.compose.project={PROJECT}",
                 "--filter", f"label=io.podman.compose.service={service}", "--format", "{{.Names}}").stdout
    return sorted(out.split())


def status(method: str, path: str, body: dict[str, str] | None = None) -> int:
    return http_status(URL + path, method, 15, body)


def access_log(*which: str) -> list[dict[str, str]]:
    """nginx's JSON access log lines (`--since T` or `--tail N`)."""
    logs = podman("logs", *which, f"{PROJECT}_nginx_1").stdout.splitlines()
    return [json.loads(line) for line in logs if line.startswith("{")]


def upstreams(*which: str) -> Counter[str]:
    """The replica that answered each request: the last of its upstream addresses (those
    before it were tried and failed; " : " parts are nginx's own second attempt). A request
    nginx answered itself, with no replica, names the upstream group instead."""
    last = (re.split(r", | : ", ln["upstream"])[-1] for ln in access_log(*which))
    return Counter(addr for addr in last if re.fullmatch(r"[0-9.]+:[0-9]+", addr))


def retried(since: str) -> int:
    """Requests nginx re-sent to another replica since a moment."""
    return sum(", " in ln["upstream"] for ln in access_log("--since", since))


class Load:
    """Requests in a loop from another thread, every answer kept."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            # A write with no body, a read, and a write with one (which a re-send must carry).
            if i % 3 == 0:
                code = status("POST", "/ticket")
            elif i % 3 == 1:
                code = status("GET", "/ticket?limit=5")
            else:
                code = status("POST", "/event", {"name": f"Night {i}"})
            self.statuses[code] += 1
            i += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def more(self, n: int) -> None:
        target = sum(self.statuses.values()) + n
        wait_until(lambda: sum(self.statuses.values()) >= target, 60, f"{n} more requests")

    def failed(self) -> dict[int, int]:
        return {code: n for code, n in self.statuses.items() if code not in (200, 201)}


def since_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))


@pytest.fixture(scope="module")
def stack() -> Iterator[None]:
    for image in STANDINS:
        built = build_standin(image)
        print(f"COMPOSE stand-in {image.tag}: {'built' if built else 'kept'}")
    build_wheelhouse()
    key = ROOT / "ticket-signing.pem"  # docker-compose.yml's secret file, made as docs/deploy.md#docker-compose says
    made_key = not key.exists()
    if made_key:
        key.write_text(TicketSigner.generate_pem())
        key.chmod(0o644)  # the api's user (uid 10001) reads the bind-mounted secret
    try:
        started = time.monotonic()
        compose("up", "-d", "--build", "--scale", "api=3")
        wait_until(lambda: status("POST", "/ticket") == 201, 90, "the compose stack through nginx")
        print(f"COMPOSE up --build --scale api=3: ready in {time.monotonic() - started:.1f} s")
        yield
    finally:
        # podman-compose's down knows only the file's scale: every container of the
        # project goes, then its network.
        leftover = podman("ps", "-aq", "--filter", f"label=io.podman.compose.project={PROJECT}").stdout.split()
        if leftover:
            podman("rm", "-f", "--depend", "-t", "5", *leftover)
        podman("network", "rm", "-f", f"{PROJECT}_default", check=False)
        print(f"COMPOSE down: {len(leftover)} containers removed")
        if made_key:
            key.unlink(missing_ok=True)


def test_the_seed_examples_through_the_published_port(stack: None) -> None:
    check_seed_examples(URL)


def test_requests_reach_all_three_replicas(stack: None) -> None:
    since = since_now()
    for _ in range(60):
        assert status("GET", "/ticket?limit=1") == 200
    assert len(containers("api")) == 3
    reached = upstreams("--since", since)
    print(f"COMPOSE 3 replicas: {dict(reached)}")
    assert len(reached) == 3 and min(reached.values()) >= 10


def test_scaling_while_requests_flow_fails_no_request(stack: None) -> None:
    with Load() as load:
        load.more(100)
        since = since_now()
        compose("up", "-d", "--no-recreate", "--scale", "api=5")
        assert len(containers("api")) == 5
        # nginx re-resolves the name every 5 s: no reload, the new replicas get requests.
        wait_until(lambda: len(upstreams("--since", since)) == 5, 30, "nginx to send to five replicas")
        load.more(200)
        print(f"COMPOSE scaled to 5: {dict(upstreams('--since', since))}, answers so far {dict(load.statuses)}")
        # podman-compose 1.6 leaves replicas running when the scale goes down (and nginx,
        # made with --requires on them, keeps them from being removed): the surplus is
        # stopped as docker compose stops it, SIGTERM and the grace period.
        compose("up", "-d", "--no-recreate", "--scale", "api=2")
        surplus = containers("api")[2:]
        podman("stop", "-t", str(GRACE_S), *surplus)
        assert len(containers("api")) == 2
        stopped = since_now()
        load.more(300)
        # DNS drops the stopped ones: the last 200 requests were all answered by the two left.
        wait_until(lambda: len(upstreams("--tail", "200")) == 2, 30, "nginx to send to two replicas")
        load.more(100)
    print(f"COMPOSE scaled to 2 (stopped {surplus}): {sum(load.statuses.values())} requests, {dict(load.statuses)}; "
          f"re-sent by nginx to another replica since the stop: {retried(stopped)}")
    assert not load.failed(), load.failed()


def test_a_crashed_api_container_is_restarted_and_no_request_fails(stack: None) -> None:
    victim = containers("api")[0]
    before = podman("inspect", "--format", "{{.State.Pid}} {{.RestartCount}}", victim).stdout.split()
    with Load() as load:
        load.more(100)
        os.kill(int(before[0]), 9)  # its gunicorn master, from outside: a crash, not a stop

        def restarted() -> bool:
            pid, count, state = podman("inspect", "--format", "{{.State.Pid}} {{.RestartCount}} {{.State.Status}}",
                                       victim).stdout.split()
            return state == "running" and int(count) > int(before[1]) and pid != before[0]

        wait_until(restarted, 60, f"{victim} to be restarted")
        since = since_now()
        load.more(300)
        wait_until(lambda: len(upstreams("--since", since)) == 2, 30, "nginx to send to the restarted replica too")
    print(f"COMPOSE killed {victim}: restarted; {sum(load.statuses.values())} requests, {dict(load.statuses)}")
    assert not load.failed(), load.failed()


def test_the_healthchecks_report_healthy(stack: None) -> None:
    """podman runs healthchecks from systemd timers, which this machine has not: each is run
    here as the timer would."""
    for name in (*containers("api"), *containers("redis")):
        done = podman("healthcheck", "run", name, check=False)
        assert done.returncode == 0 and "unhealthy" not in done.stdout, (name, done.stdout, done.stderr)


def test_stop_finishes_within_the_grace_period(stack: None) -> None:
    started = time.monotonic()
    compose("stop")
    # podman-compose 1.6 stops the replicas the file's own scale names (api_1 only); docker
    # compose stops every container of the project: so are the rest, the same way.
    left = podman("ps", "-q", "--filter", f"label=io.podman.compose.project={PROJECT}").stdout.split()
    if left:
        podman("stop", "-t", str(GRACE_S), *left)
    took = time.monotonic() - started
    print(f"COMPOSE stop: {took:.1f} s")
    assert took < GRACE_S
    states = podman("ps", "-a", "--filter", f"label=io.podman.compose.project={PROJECT}", "--format",
                    "{{.Names}}|{{.State}}|{{.ExitCode}}").stdout.split("\n")
    rows = [s.split("|") for s in states if s]
    print(f"COMPOSE stopped: {rows}")
    assert rows and all(state.startswith("Exited") for _, state, _ in rows), rows
    # The replicas stopped on SIGTERM, gracefully: exit 0, not killed at the end of the grace.
    assert all(code == "0" for name, _, code in rows if "_api_" in name), rows

