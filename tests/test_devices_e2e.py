"""A revoked or rolled device key, refused by every replica of a real stack within a second,
measured per replica; a replica stopped while the device was revoked refuses it from its very
first answer after it runs again; and a replica cut off from Redis (a partition: a relay that
holds every byte) while the device was revoked never admits it, and refuses it within a second
of the network's return."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tooling.relay import Relay
from tooling.stack import LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e
ADMIN = "adm-0123456789abcdef"


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("devices", env={"API_KEYS": f"ops:admin:{ADMIN}"})


def call(base: str, method: str, path: str, key: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def enrolled(stack: LocalStack, event: str) -> tuple[str, str]:
    _, made = call(stack.url, "POST", "/device", ADMIN, {"name": "North 1", "role": "scanner", "event": event})
    assert made["enrolment"]["url"].startswith(stack.url + "/gate/#enrol=")  # the port too, through nginx
    status, answer = call(stack.url, "POST", "/device/enrol", "", {"token": made["enrolment"]["token"]})
    assert status == 201
    return made["id"], answer["key"]


def until_refused(base: str, path: str, key: str, started: float, allowed: tuple[int, ...] = (200,)) -> float:
    """Ask until the key is refused as device-revoked, with no answer but `allowed` before;
    how long after `started`, in ms."""
    while True:
        status, body = call(base, "GET", path, key)
        if status == 401:
            assert body["type"].endswith("device-revoked")
            return (time.monotonic() - started) * 1000
        assert status in allowed and time.monotonic() - started < 5, (status, body)


def test_every_replica_refuses_a_revoked_or_rolled_key_within_a_second(stack: LocalStack) -> None:
    _, event = call(stack.url, "POST", "/event", ADMIN, {"name": "Doors"})
    path = f"/event/{event['id']}"
    times: dict[str, list[float]] = {}
    for action in ("revoke", "roll"):
        device, key = enrolled(stack, event["id"])
        replicas = [stack.replica_url(i) for i in range(2)]
        for base in replicas:  # each replica has the device cached
            assert call(base, "GET", path, key)[0] == 200
        started = time.monotonic()
        assert call(replicas[0], "POST", f"/device/{device}/{action}", ADMIN)[0] == 200
        times[action] = [until_refused(base, path, key, started) for base in replicas]
    print(f"\nDEVICES refused after, per replica (ms): {times}")
    assert all(ms < 1000 for per_replica in times.values() for ms in per_replica), times


def test_a_replica_stopped_while_a_device_was_revoked_refuses_it_at_once(stack: LocalStack) -> None:
    _, event = call(stack.url, "POST", "/event", ADMIN, {"name": "Cut off"})
    path = f"/event/{event['id']}"
    device, key = enrolled(stack, event["id"])
    cut_off = stack.replica_url(1)
    assert call(cut_off, "GET", path, key)[0] == 200  # cached there
    proc = stack.replicas[1]
    assert proc is not None
    os.killpg(proc.pid, signal.SIGSTOP)  # frozen: no check, no Redis, while the device goes
    try:
        assert call(stack.replica_url(0), "POST", f"/device/{device}/revoke", ADMIN)[0] == 200
        until_refused(stack.replica_url(0), path, key, time.monotonic())
        # Longer than two of its checks: its cache is stale by then, whatever it holds.
        frozen_until = time.monotonic() + 0.6
        while time.monotonic() < frozen_until:
            assert call(stack.replica_url(0), "GET", path, key)[0] == 401
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    resumed = time.monotonic()
    status, body = call(cut_off, "GET", path, key)
    print(f"\nDEVICES the stopped replica's first answer after resuming: {status} "
          f"in {(time.monotonic() - resumed) * 1000:.1f} ms")
    assert status == 401 and body["type"].endswith("device-revoked")


def test_a_replica_cut_off_from_redis_while_a_device_was_revoked_never_serves_it(stack: LocalStack) -> None:
    relay = Relay(stack.cfg.redis_port).start()
    stack.kill_replica(1)
    stack.start_replica(1, env={"REDIS_URL": f"redis://127.0.0.1:{relay.port}/0"})
    try:
        _, event = call(stack.url, "POST", "/event", ADMIN, {"name": "Partition"})
        path = f"/event/{event['id']}"
        device, key = enrolled(stack, event["id"])
        cut_off = stack.replica_url(1)
        assert call(cut_off, "GET", path, key)[0] == 200  # cached there
        relay.cut()
        assert call(stack.replica_url(0), "POST", f"/device/{device}/revoke", ADMIN)[0] == 200
        # While cut off, it answers: never 200, whatever it had cached.
        during = [call(cut_off, "GET", path, key) for _ in range(3)]
        assert all(status == 503 and body["type"].endswith("unavailable") for status, body in during), during
        relay.heal()
        healed = time.monotonic()
        ms = until_refused(cut_off, path, key, healed, allowed=(503,))
        print(f"\nDEVICES the cut-off replica's answers while cut: {[s for s, _ in during]}; "
              f"refused {ms:.1f} ms after the network came back")
        assert ms < 1000
    finally:
        stack.kill_replica(1)
        relay.stop()
        stack.start_replica(1)
