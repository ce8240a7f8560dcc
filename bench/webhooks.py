"""Webhook deliveries of a local stack (its real processor) to a receiver on 127.0.0.1.

    make bench-webhooks        (make bench runs it after bench.run, unless BENCH_WEBHOOKS=0)

Two figures. Deliveries per second: BENCH_WEBHOOK_TICKETS tickets (default 20,000) issued in
batches of 1,000 as fast as the API takes them, each a `ticket.issued` delivery; the rate is
the deliveries over the time from the first change to the last arrival. The delay from a
change to its delivery: BENCH_WEBHOOK_SCANS scans (default 400) at 40 a second, each a
`checkin.scanned` delivery, timed from the change's own time (Redis's clock, in the body) to
the receiver's arrival (p50, p99). The receiver answers 204 and verifies nothing: the
figures are the service's, not a verifier's.

Results go to bench/results/webhooks-<date>-<commit>.json and .md."""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.commit import write_result
from tooling.stack import LocalStack

ADMIN_KEY = "bench-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
BATCH = 1000


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.arrivals.append((time.time(), body))
        self.arrived.set()
        return web.Response(status=204)

    async def until(self, n: int, timeout_s: float) -> None:
        async def enough() -> None:
            while len(self.arrivals) < n:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout_s)


async def _post(http: aiohttp.ClientSession, url: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=AUTH) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status in (200, 201), answer
        return answer


async def _throughput(http: aiohttp.ClientSession, base: str, receiver: Receiver, tickets: int) -> dict[str, Any]:
    started = time.time()
    for _ in range(tickets // BATCH):
        await _post(http, base + "/ticket/batch", {"tickets": [{}] * BATCH})
    issued_s = time.time() - started
    await receiver.until(tickets, timeout_s=600)
    first_change = min(b["data"]["timestamp"] for _, b in receiver.arrivals)
    last_arrival = max(t for t, _ in receiver.arrivals)
    return {"deliveries": tickets, "issue_s": round(issued_s, 2),
            "deliveries_per_s": round(tickets / (last_arrival - first_change)),
            "ids_unique": len({b["data"]["event_id"] + b["data"]["ticket_id"] for _, b in receiver.arrivals})}


async def _delay(http: aiohttp.ClientSession, base: str, receiver: Receiver, scans: int) -> dict[str, Any]:
    event = await _post(http, base + "/event", {"name": "Bench doors"})
    door = await _post(http, base + f"/event/{event['id']}/list", {"name": "Door"})
    issued = len(receiver.arrivals)
    tickets = [t["id"] for t in (await _post(http, base + "/ticket/batch",
                                             {"tickets": [{"event": event["id"]}] * scans}))["tickets"]]
    # Their ticket.issued deliveries first: the scans' deliveries must not queue behind them.
    await receiver.until(issued + scans, timeout_s=120)
    before = len(receiver.arrivals)
    pace_s = 1 / 40
    next_at = time.monotonic()
    for ticket in tickets:
        await _post(http, base + "/checkin", {"ticket": ticket, "list": door["id"]})
        next_at += pace_s
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    await receiver.until(before + scans, timeout_s=120)  # each scan is one delivery: nothing else is made
    delays_ms = sorted((t - b["data"]["timestamp"]) * 1000 for t, b in receiver.arrivals[before:]
                       if b["type"] == "checkin.scanned")
    return {"scans": len(delays_ms), "per_s": 40, "p50_ms": round(statistics.median(delays_ms), 1),
            "p99_ms": round(delays_ms[int(len(delays_ms) * 0.99) - 1], 1), "max_ms": round(delays_ms[-1], 1)}


async def measure(tickets: int, scans: int) -> dict[str, Any]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    var = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    stack = LocalStack(var, replicas=1, env={"API_KEYS": f"bench:admin:{ADMIN_KEY}",
                                             "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"})
    await asyncio.to_thread(stack.start)
    try:
        async with aiohttp.ClientSession() as http:
            base = stack.url
            hook = await _post(http, base + "/webhook", {"url": f"http://127.0.0.1:{port}/hook",
                                                         "types": ["ticket.issued", "checkin.scanned"]})
            out = {"throughput": await _throughput(http, base, receiver, tickets)}
            out["delay"] = await _delay(http, base, receiver, scans)
            async with http.get(base + f"/webhook/{hook['id']}", headers=AUTH) as r:
                out["pending_after"] = (await r.json())["pending"]
            return out
    finally:
        await asyncio.to_thread(stack.stop)
        await runner.cleanup()


def table(result: dict[str, Any]) -> str:
    t, d = result["throughput"], result["delay"]
    return (f"# Webhook deliveries, {result['date']} at {result['commit']}\n\n"
            "A local stack (one replica, its processor) delivering to a receiver on 127.0.0.1 that answers 204 "
            "(bench/webhooks.py).\n\n"
            "| figure | value |\n| --- | ---: |\n"
            f"| deliveries per second ({t['deliveries']} tickets issued, batches of {BATCH}) "
            f"| {t['deliveries_per_s']} |\n"
            f"| change to delivery, p50 ms ({d['scans']} scans at {d['per_s']}/s) | {d['p50_ms']} |\n"
            f"| change to delivery, p99 ms | {d['p99_ms']} |\n"
            f"| change to delivery, max ms | {d['max_ms']} |\n")


def main() -> None:
    tickets = int(os.environ.get("BENCH_WEBHOOK_TICKETS", "20000"))
    scans = int(os.environ.get("BENCH_WEBHOOK_SCANS", "400"))
    write_result("webhooks", asyncio.run(measure(tickets, scans)), table)


if __name__ == "__main__":
    main()
