"""The whole stack on Redis Sentinel (a master, 2 replicas, 3 sentinels) and on a Redis
Cluster (3 masters with a replica each), through nginx: the seed's examples and the
concurrency guarantees first, then a master SIGKILLed under a scan-and-create load, promoted
by Redis itself. Each topology is started once for the module; the failover test comes last.
Each failover prints a line `FAILOVER <topology>: ...` with its figures."""

from __future__ import annotations

import asyncio
import binascii
import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
import redis

from service.store import keys
from tooling.procs import wait_until
from tooling.stack import LocalStack

from .conftest import MakeStack
from .load import make_tickets
from .test_e2e import check_seed_examples
from .test_webhooks_e2e import WEBHOOK_ENV, Receiver, register, serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["sentinel", "cluster"])
def ha(request: pytest.FixtureRequest, make_stack: MakeStack) -> Iterator[LocalStack]:
    stack = make_stack(request.param, topology=request.param, env=WEBHOOK_ENV)
    yield stack
    stack.stop()  # before the other topology's: one at a time


def test_seed_curl_examples_as_written(ha: LocalStack) -> None:
    check_seed_examples(ha.url)


async def test_a_hundred_concurrent_scans_of_one_ticket_admit_one(ha: LocalStack, http: aiohttp.ClientSession) -> None:
    [tid] = await make_tickets(http, ha.url, 1)

    async def scan() -> int:
        async with http.post(f"{ha.url}/ticket/{tid}/invalidate") as r:
            return r.status

    statuses = await asyncio.gather(*(scan() for _ in range(100)))
    assert sorted(set(statuses)) == [200, 409] and statuses.count(200) == 1


async def test_listing_feed_and_stats_are_exact_across_nodes(ha: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{ha.url}/stats") as r:
        before = await r.json()
    made = await make_tickets(http, ha.url, 300)
    shards = {keys.shard_of(t) for t in made}
    assert len(shards) > 50  # all but a few of the 64 (300 draws)
    if ha.nodes is not None and ha.nodes.layout.topology == "cluster":  # so every master
        assert len({ha.nodes.owner_of_slot(_slot(tag)) for tag in shards}) == 3
    for tid in made[:40]:
        async with http.post(f"{ha.url}/ticket/{tid}/invalidate") as r:
            assert r.status == 200
    listed: list[str] = []
    url: str | None = f"{ha.url}/ticket?limit=37"
    while url:
        async with http.get(url) as r:
            assert r.status == 200
            listed += [t["id"] for t in await r.json()]
            link = r.headers.get("Link", "")
            url = ha.url + link[link.index("</") + 1: link.index(">")] if link else None
    assert set(made) <= set(listed) and len(listed) == len(set(listed))
    async with http.get(f"{ha.url}/stats") as r:
        stats = await r.json()
    assert stats["total"] - before["total"] == 300 and stats["invalid"] - before["invalid"] == 40
    feed = await _feed(http, ha.url)
    mine = [e for e in feed if e["ticket_id"] in set(made)]
    assert len(mine) == 340
    order = [(*map(int, e["event_id"].split("-")), keys.SHARD_INDEX[keys.shard_of(e["ticket_id"])]) for e in feed]
    assert order == sorted(order) and len(order) == len(set(order))


async def _feed(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    url = f"{base}/changes?limit=100"
    while True:
        async with http.get(url) as r:
            assert r.status == 200
            page = await r.json()
            out += page
            if not page:
                return out
            link = r.headers["Link"]
            url = base + link[link.index("</") + 1: link.index(">")]


@dataclass
class Shot:
    op: str
    status: int
    ticket: str | None
    started: float
    ended: float
    retry_after: str | None
    problem: str = ""


@dataclass
class RushLoad:
    """Box offices creating tickets and gates scanning them: each scanned ticket is scanned
    once more later (a copied ticket at another gate), which must never be a second 200."""

    http: aiohttp.ClientSession
    base: str
    fresh: list[str]
    shots: list[Shot] = field(default_factory=list)
    used: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, clients: int = 12) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        ops = ("create", "scan", "rescan")
        n = i
        while not self._stop.is_set():
            op = ops[n % 3]
            n += 1
            if op == "scan" and self.fresh:
                await self._shot("scan", f"/ticket/{self.fresh.pop()}/invalidate")
            elif op == "rescan" and len(self.used) > 10:
                await self._shot("rescan", f"/ticket/{random.choice(self.used)}/invalidate")
            else:
                await self._shot("create", "/ticket")

    async def _shot(self, op: str, path: str) -> None:
        started = time.monotonic()
        tid = path.split("/")[2] if op != "create" else None
        try:
            async with self.http.post(self.base + path, timeout=aiohttp.ClientTimeout(total=10)) as r:
                body = await r.json(content_type=None)
                status, retry_after = r.status, r.headers.get("Retry-After")
        except (aiohttp.ClientError, TimeoutError, ValueError):
            status, retry_after, body = 0, None, {}
        problem = str(body.get("type", "")).rsplit(":", 1)[-1] if isinstance(body, dict) and status >= 500 else ""
        if op == "create" and status == 201:
            tid = body["id"]
        if op == "scan" and status == 200 and tid:
            self.used.append(tid)
        self.shots.append(Shot(op, status, tid, started, time.monotonic(), retry_after, problem))

    async def until(self, predicate: Any, timeout_s: float) -> None:
        async with asyncio.timeout(timeout_s):
            while not predicate():
                await asyncio.sleep(0.01)

    async def stop(self) -> list[Shot]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.shots


def _slot(tag: str) -> int:
    return binascii.crc_hqx(tag.encode(), 0) % 16384


def _busiest_master(ha: LocalStack) -> tuple[str, set[str]]:
    """The master that owns the most shards, and those shards."""
    assert ha.nodes is not None
    if ha.nodes.layout.topology == "sentinel":
        [master] = ha.nodes.masters()
        return master, set(keys.SHARDS)
    owners: dict[str, set[str]] = {}
    for tag in keys.SHARDS:
        owners.setdefault(ha.nodes.owner_of_slot(_slot(tag)), set()).add(tag)
    master = max(owners, key=lambda m: len(owners[m]))
    return master, owners[master]


def _script_loads(port: int) -> int:
    with redis.Redis(port=port, socket_timeout=2, decode_responses=True) as c:
        stats = c.info("commandstats")
    return int(stats.get("cmdstat_script|load", {}).get("calls", 0))


async def test_a_master_killed_under_load_is_replaced_by_redis_and_nothing_is_lost(
    ha: LocalStack, http: aiohttp.ClientSession
) -> None:
    nodes = ha.nodes
    assert nodes is not None
    topology = nodes.layout.topology
    victim, shards = _busiest_master(ha)
    replicas_before = {n.name for n in nodes.data_nodes()} - set(nodes.masters())
    receiver = Receiver()
    receiver.open = True
    server = await serve(receiver)
    await register(http, ha.url, receiver, server)
    load = RushLoad(http, ha.url, await make_tickets(http, ha.url, 3000))
    load.start()
    await load.until(lambda: len(load.shots) >= 600, 60)

    killed_at = time.monotonic()
    await asyncio.to_thread(nodes.kill, victim)
    # Promotion is Redis's own (Sentinel's vote, or the Cluster's replica election): the test
    # only watches for a former replica that now serves as master.
    def promoted() -> bool:
        return bool(set(nodes.masters()) & replicas_before) and (topology == "sentinel" or nodes.cluster_ok())

    await asyncio.to_thread(wait_until, promoted, 60, "a replica promoted by Redis")
    promoted_at = time.monotonic()
    [new_master] = sorted(set(nodes.masters()) & replicas_before)[:1]
    # What supervisord does in `make up`: the dead node comes back, now as a replica.
    restart = asyncio.create_task(asyncio.to_thread(nodes.start_node, victim))
    await load.until(lambda: any(s.started > promoted_at and s.status in (200, 201) for s in load.shots
                                 if s.ticket is None or keys.shard_of(s.ticket) in shards), 60)
    recovered_at = time.monotonic()
    await load.until(lambda: sum(1 for s in load.shots if s.started > recovered_at) >= 600, 60)
    shots = await load.stop()
    await restart

    failures = [s for s in shots if s.status not in (200, 201, 409)]
    assert all(s.status == 503 and s.retry_after for s in failures), {(s.status, s.retry_after) for s in failures}
    double = [s for s in shots if s.op == "rescan" and s.status == 200]
    assert not double, f"{len(double)} tickets admitted twice"
    # Every acknowledged create and scan is there after the failover.
    created = [s.ticket for s in shots if s.op == "create" and s.status == 201]
    used = [s.ticket for s in shots if s.op == "scan" and s.status == 200]
    used_set = set(used)
    lost: list[tuple[str, float]] = []
    for shot in (s for s in shots if s.status in (200, 201) and s.op in ("create", "scan")):
        async with http.get(f"{ha.url}/ticket/{shot.ticket}") as r:
            body = await r.json()
            if r.status != 200 or (shot.ticket in used_set and body["valid"]):
                lost.append((shot.op, round(shot.ended - killed_at, 3)))
    assert not lost, f"{len(lost)} acknowledged writes lost (op, s after the kill): {lost[:20]}"
    # Every acknowledged create reaches the webhook, one id per ticket however often sent.
    await receiver.until(lambda: receiver.delivered >= set(created), 120)
    await server.close()
    assert receiver.unverified == 0 and all(len(set(ids)) == 1 for ids in receiver.attempts.values())
    # The promoted node started with an empty script cache: the store loaded its scripts.
    assert _script_loads(nodes.nodes[new_master].port) > 0
    first_failure = min((s.started for s in failures), default=killed_at)
    last_failure = max((s.ended for s in failures), default=killed_at)
    print(f"\nFAILOVER {topology}: " + json.dumps({
        "killed": victim, "promoted": new_master, "shards_on_victim": len(shards), "requests": len(shots),
        "created": len(created), "scanned": len(used), "rescans_refused": sum(1 for s in shots if s.op == "rescan"),
        "503": len(failures), "503_by_kind": dict(Counter(s.problem for s in failures)),
        "unavailable_window_s": round(last_failure - first_failure, 2),
        "promotion_after_kill_s": round(promoted_at - killed_at, 2),
        "first_success_after_promotion_s": round(recovered_at - promoted_at, 2),
        "webhook_deliveries": len(receiver.delivered),
        "webhook_retried": sum(1 for ids in receiver.attempts.values() if len(ids) > 1),
    }))
    assert len(shots) > 1200
