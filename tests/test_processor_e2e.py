"""The event stream, the tickets processor, the change feed and the metrics, end to end:
a random workload against the real stack, then every view checked against the ground truth
the test recorded itself."""

from __future__ import annotations

import asyncio
import random
import re
import signal
import time
from collections import Counter
from typing import Any

import aiohttp
import pytest

from service.metrics import FLUSH_INTERVAL_S
from service.store import keys as store_keys
from tooling.procs import wait_until
from tooling.stack import LocalStack, http_status

from .conftest import MakeStack

pytestmark = pytest.mark.e2e
KEYS = {"box": ("issuer", "box-0123456789abcdef"), "gate": ("scanner", "gate-0123456789abcdef"),
        "ops": ("admin", "ops-0123456789abcdef")}
API_KEYS = ",".join(f"{name}:{role}:{secret}" for name, (role, secret) in KEYS.items())


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name][1]}"}


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("events", env={
        "API_KEYS": API_KEYS, "PROCESSOR_CLAIM_IDLE_MS": "300", "PROCESSOR_BATCH_SIZE": "50",
    })



async def get_json(http: aiohttp.ClientSession, url: str, who: str = "ops") -> Any:
    async with http.get(url, headers=auth(who)) as r:
        assert r.status == 200, await r.text()
        return await r.json()


async def processed_all(http: aiohttp.ClientSession, base: str, expected_events: int) -> dict[str, Any]:
    """Poll /stats until the processor has recorded `expected_events` and has no lag."""
    async with asyncio.timeout(60):
        while True:
            stats: dict[str, Any] = await get_json(http, f"{base}/stats")
            if sum(stats["processed"].values()) >= expected_events and stats["processor_lag"] == 0:
                return stats
            await asyncio.sleep(0.05)


async def feed(http: aiohttp.ClientSession, base: str, limit: int = 37) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    url = f"{base}/changes?limit={limit}"
    while True:
        async with http.get(url, headers=auth("ops")) as r:
            page = await r.json()
            link = r.headers["Link"]
        if not page:
            return out
        out.extend(page)
        url = base + link[1: link.index(">")].split(base, 1)[-1]


async def test_random_workload_history_stats_and_feed_match_ground_truth(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    rng = random.Random(20261128)
    truth: dict[str, list[str]] = {}  # ticket -> its events, in order

    async def owner(n: int) -> None:
        """Creates its own tickets and scans/re-enables them: per-ticket order is known."""
        for _ in range(12):
            async with http.post(f"{stack.url}/ticket", headers=auth("box")) as r:
                assert r.status == 201
                tid = (await r.json())["id"]
            events = truth[tid] = ["created"]
            for _ in range(rng.randint(0, 4)):
                who, verb = rng.choice([("gate", "invalidate"), ("gate", "invalidate"), ("ops", "validate")])
                async with http.post(f"{stack.url}/ticket/{tid}/{verb}", headers=auth(who)) as r:
                    assert r.status in (200, 409)
                    events.append(f"{verb}d" if r.status == 200 else f"{verb}_refused")

    before = await get_json(http, f"{stack.url}/stats")
    await asyncio.gather(*(owner(n) for n in range(8)))
    n_events = sum(len(v) for v in truth.values())
    stats = await processed_all(http, stack.url, sum(before["processed"].values()) + n_events)

    final_valid = {tid: ev.count("invalidated") == ev.count("validated") for tid, ev in truth.items()}
    by_type = Counter(e for ev in truth.values() for e in ev)
    assert stats["total"] - before["total"] == len(truth)
    assert stats["valid"] - before["valid"] == sum(final_valid.values())
    assert stats["invalid"] - before["invalid"] == len(truth) - sum(final_valid.values())
    assert stats["refused"] - before["refused"] == by_type["invalidate_refused"] + by_type["validate_refused"]
    for kind, n in by_type.items():
        assert stats["processed"][kind] - before["processed"][kind] == n

    for tid, events in truth.items():
        history = await get_json(http, f"{stack.url}/ticket/{tid}/history", who="gate")
        assert [h["type"] for h in history] == events
        assert history[0]["actor"] == "box" and all(h["request_id"] for h in history)

    everything = await feed(http, stack.url)
    # Entry ids are unique within a shard's stream; the feed is ordered by id, then shard.
    keys = [(*map(int, e["event_id"].split("-")), store_keys.SHARD_INDEX[store_keys.shard_of(e["ticket_id"])])
            for e in everything]
    assert len(keys) == len(set(keys))
    assert keys == sorted(keys)
    mine = [e for e in everything if e["ticket_id"] in truth]
    assert len(mine) == n_events
    for tid, events in truth.items():
        assert [e["type"] for e in mine if e["ticket_id"] == tid] == events


async def test_processor_killed_mid_batch_loses_and_doubles_nothing(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    before = await processed_all(http, stack.url, 0)
    stack.kill_processor(signal.SIGKILL)
    backlog = await make_tickets_as(http, stack.url, 3000)
    stack.start_processor()
    # Let it get part of the way, then kill it in the middle of its batches.
    async with asyncio.timeout(60):
        target = sum(before["processed"].values()) + 400
        while sum((await get_json(http, f"{stack.url}/stats"))["processed"].values()) < target:
            await asyncio.sleep(0.01)
    stack.kill_processor(signal.SIGKILL)
    mid = await get_json(http, f"{stack.url}/stats")
    restarted = time.monotonic()
    stack.start_processor()
    after = await processed_all(http, stack.url, sum(before["processed"].values()) + len(backlog))
    recovery_s = time.monotonic() - restarted
    assert after["processed"]["created"] - before["processed"]["created"] == len(backlog)
    for tid in random.Random(1).sample(backlog, 100):
        history = await get_json(http, f"{stack.url}/ticket/{tid}/history", who="gate")
        assert [h["type"] for h in history] == ["created"]
    done_at_kill = sum(mid["processed"].values()) - sum(before["processed"].values())
    print(f"\nPROCESSOR recovery: backlog={len(backlog)} processed_before_kill={done_at_kill} "
          f"lag_at_kill={mid['processor_lag']} caught_up_in_s={recovery_s:.2f} duplicates_counted=0")


async def make_tickets_as(http: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    sem = asyncio.Semaphore(32)

    async def one() -> str:
        async with sem, http.post(f"{base}/ticket", headers=auth("box")) as r:
            assert r.status == 201
            tid: str = (await r.json())["id"]
            return tid

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_history_and_feed_need_their_roles(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    [tid] = await make_tickets_as(http, stack.url, 1)
    async with http.get(f"{stack.url}/ticket/{tid}/history", headers=auth("box")) as r:
        assert r.status == 403
    for path in ("/stats", "/events"):
        async with http.get(stack.url + path, headers=auth("gate")) as r:
            assert r.status == 403


async def test_access_log_names_the_key_never_the_secret(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    [tid] = await make_tickets_as(http, stack.url, 1)
    async with http.post(f"{stack.url}/ticket/{tid}/invalidate", headers=auth("gate")) as r:
        assert r.status == 200 and "X-Actor" not in r.headers
        rid = r.headers["X-Request-Id"]
    entry = await asyncio.to_thread(stack.log_entry, rid)
    assert entry["actor"] == "gate"
    log_text = (stack.cfg.var_dir / "log" / "nginx-access.log").read_text()
    assert all(secret not in log_text for _, secret in KEYS.values())


def _metric(text: str, name: str, **labels: str) -> float:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if m and ",".join(sorted(m.group(1).split(","))) == want:
            return float(m.group(2))
    return 0.0


async def test_metrics_add_up_across_workers(make_stack: MakeStack, http: aiohttp.ClientSession) -> None:
    stack = make_stack("workers", replicas=1, web_concurrency=2)
    try:
        base = stack.replica_url(0)
        wait_until(lambda: len(stack.worker_pids(0)) == 2, what="two workers")
        await asyncio.gather(*(http.get(base + "/healthz") for _ in range(300)))

        async def counted() -> float:
            async with http.get(base + "/metrics") as r:
                return _metric(await r.text(), "tickets_http_requests_total", route="/healthz", method="GET",
                               status="200")

        # Any worker may answer a scrape, and each must see every count: its own at once, the
        # other's once that worker hands over its tallies (every FLUSH_INTERVAL_S).
        async with asyncio.timeout(10 * FLUSH_INTERVAL_S):
            while [await counted() for _ in range(3)] != [300] * 3:
                await asyncio.sleep(FLUSH_INTERVAL_S / 10)
        files = list((stack.cfg.var_dir / "prometheus" / str(stack.cfg.api_ports[0])).glob("counter_*.db"))
        assert len(files) == 2
        async with http.get(f"http://127.0.0.1:{stack.cfg.processor_port}/metrics") as r:
            assert "tickets_processor_lag_entries" in await r.text()
        assert http_status(stack.url + "/metrics") == 404
    finally:
        stack.stop()


def test_processor_stops_cleanly_on_sigterm(stack: LocalStack) -> None:
    assert stack.processor is not None
    stack.processor.send_signal(signal.SIGTERM)
    assert stack.processor.wait(timeout=15) == 0
    log = (stack.cfg.var_dir / "log" / "processor.log").read_text()
    assert "stopped cleanly" in log
    stack.start_processor()


async def test_logs_name_the_keys_and_the_refused_actor_never_a_secret(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{stack.url}/stats", headers=auth("gate")) as r:
        assert r.status == 403
        request_id = r.headers["X-Request-Id"]
    replica_logs = "".join((stack.cfg.var_dir / "log" / f"api{i}.log").read_text() for i in (1, 2))
    assert replica_logs.count("auth on; API keys: box (issuer), gate (scanner), ops (admin)") == 2
    entry = await asyncio.to_thread(stack.log_entry, request_id)
    assert entry["status"] == 403 and entry["actor"] == "gate"
    everything = replica_logs + (stack.cfg.var_dir / "log" / "nginx-access.log").read_text()
    assert not [secret for _, secret in KEYS.values() if secret in everything]
