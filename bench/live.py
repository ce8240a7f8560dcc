"""The live view under many viewers, on a local stack (two replicas, its processor, nginx).

    make bench-live

Scans run at BENCH_LIVE_RATE a second (default 20) for BENCH_LIVE_SECONDS (default 15), first
with one viewer of the event's live view, then with BENCH_LIVE_VIEWERS (default 500), all
through nginx. Two figures each time: Redis's commands per second (INFO's
total_commands_processed over the scanning, every node), and the delay from a scan's request
to each viewer's message that counts it (its list's `admitted`), p50 and p99 over every
viewer and scan. tests/test_live_e2e.py runs the same with fewer viewers and scans.

Results go to bench/results/live-<date>-<commit>.json and .md."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.commit import write_result
from tooling.stack import LocalStack

ADMIN_KEY = "bench-admin-0123456789abcdef"
WATCH_KEY = "bench-watch-0123456789abcdef"
KEYS = f"bench:admin:{ADMIN_KEY},wall:supervisor:{WATCH_KEY}"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@dataclass
class Watcher:
    """One viewer: the admitted count of the door it last saw, and when it saw each more."""

    door: str
    seen: int = 0
    delays_ms: list[float] = field(default_factory=list)
    snapshot: asyncio.Event = field(default_factory=asyncio.Event)


async def _post(http: aiohttp.ClientSession, url: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=ADMIN) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status in (200, 201), answer
        return answer


async def watch(http: aiohttp.ClientSession, url: str, w: Watcher, sent: list[float]) -> None:
    """Read a viewer's stream until cancelled: for each message, the scans its door's
    admitted count takes in that this viewer had not seen, each with its delay."""
    headers = {"Authorization": f"Bearer {WATCH_KEY}"}
    async with http.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None, sock_read=60)) as r:
        assert r.status == 200, r.status
        data = ""
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("data: "):
                data = line[6:]
            elif line == "" and data:
                message, data = json.loads(data), ""
                at = time.time()
                admitted = message.get("lists", {}).get(w.door, {}).get("admitted")
                if message["type"] == "snapshot":
                    w.seen = admitted or 0
                    w.snapshot.set()
                elif admitted is not None and admitted > w.seen:
                    w.delays_ms += [(at - sent[k]) * 1000 for k in range(w.seen, min(admitted, len(sent)))]
                    w.seen = admitted


async def _commands(nodes: list[Redis]) -> int:
    total = 0
    for node in nodes:
        total += int((await node.info("stats"))["total_commands_processed"])
    return total


async def phase(stack: LocalStack, http: aiohttp.ClientSession, viewers: int, seconds: float, rate: float,
                nodes: list[Redis]) -> dict[str, Any]:
    """Scans at `rate` for `seconds` with `viewers` watching; the figures."""
    base = stack.url
    event = await _post(http, base + "/event", {"name": f"Doors for {viewers}"})
    door = (await _post(http, base + f"/event/{event['id']}/list", {"name": "Door"}))["id"]
    n = int(seconds * rate)
    tickets = [t["id"] for t in (await _post(http, base + "/ticket/batch",
                                             {"tickets": [{"event": event["id"]}] * n}))["tickets"]]
    sent: list[float] = []
    watchers = [Watcher(door) for _ in range(viewers)]
    url = base + f"/event/{event['id']}/live"
    tasks = [asyncio.create_task(watch(http, url, w, sent)) for w in watchers]
    try:
        await asyncio.wait_for(asyncio.gather(*(w.snapshot.wait() for w in watchers)), 60)
        before, started = await _commands(nodes), time.monotonic()
        for i, ticket in enumerate(tickets):
            sent.append(time.time())
            async with http.post(base + "/checkin", json={"ticket": ticket, "list": door}, headers=ADMIN) as r:
                assert r.status == 200 and (await r.json())["admitted"]
            await asyncio.sleep(max(0.0, started + (i + 1) / rate - time.monotonic()))
        elapsed = time.monotonic() - started
        commands = await _commands(nodes)

        async def all_seen() -> None:
            while any(w.seen < n for w in watchers):
                await asyncio.sleep(0.05)
        await asyncio.wait_for(all_seen(), 30)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    delays = sorted(d for w in watchers for d in w.delays_ms)
    return {"viewers": viewers, "scans": n, "scans_per_s": rate, "seconds": round(elapsed, 1),
            "redis_commands_per_s": round((commands - before) / elapsed),
            "every_viewer_saw_every_scan": all(w.seen == n for w in watchers),
            "delay_p50_ms": round(statistics.median(delays), 1), "delay_p99_ms": round(delays[int(len(delays) * 0.99)
                                                                                               - 1], 1),
            "delay_max_ms": round(delays[-1], 1), "delays": len(delays)}


async def measure(stack: LocalStack, viewers: int, seconds: float, rate: float) -> dict[str, Any]:
    nodes = [Redis(port=stack.cfg.redis_port)]
    connector = aiohttp.TCPConnector(limit=0)
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            one = await phase(stack, http, 1, seconds, rate, nodes)
            many = await phase(stack, http, viewers, seconds, rate, nodes)
    finally:
        for node in nodes:
            await node.aclose()
    return {"one": one, "many": many,
            "commands_ratio": round(many["redis_commands_per_s"] / one["redis_commands_per_s"], 3)}


def live_stack(var: Path) -> LocalStack:
    return LocalStack(var, env={"API_KEYS": KEYS})


def table(result: dict[str, Any]) -> str:
    rows = [f"# The live view under many viewers, {result['date']} at {result['commit']}\n",
            "A local stack (2 replicas, 1 worker each, the processor, nginx), scans through nginx at a steady rate, "
            "viewers through nginx (bench/live.py).\n",
            "| viewers | scans (per s) | Redis commands per s | scan to screen p50 ms | p99 ms | max ms |"
            " every viewer saw every scan |", "| ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for run in (result["one"], result["many"]):
        rows.append(f"| {run['viewers']} | {run['scans']} ({run['scans_per_s']}) | {run['redis_commands_per_s']:,} "
                    f"| {run['delay_p50_ms']} | {run['delay_p99_ms']} | {run['delay_max_ms']} "
                    f"| {'yes' if run['every_viewer_saw_every_scan'] else 'NO'} |")
    rows.append(f"\nRedis commands per second, {result['many']['viewers']} viewers against 1: "
                f"**{result['commands_ratio']}**.\n")
    return "\n".join(rows)


def main() -> None:
    viewers = int(os.environ.get("BENCH_LIVE_VIEWERS", "500"))
    seconds = float(os.environ.get("BENCH_LIVE_SECONDS", "15"))
    rate = float(os.environ.get("BENCH_LIVE_RATE", "20"))
    stack = live_stack(Path(tempfile.mkdtemp(prefix="bench-live-")))
    stack.start()
    try:
        measured = asyncio.run(measure(stack, viewers, seconds, rate))
    finally:
        stack.stop()
    write_result("live", measured, table)


if __name__ == "__main__":
    main()
