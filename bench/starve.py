"""make bench-starve: what one key's flood of expensive reads does to another key's plain
reads. 200 concurrent `GET /changes?event=E&limit=1000` from one scanner key for 20 s, over
an event of 20,000 tickets, while another scanner key reads one ticket at a time: the plain
reads' latency and statuses, the flood's statuses, and how often a replica logged Redis as
unavailable. Through nginx (its per-client rate limit off: every client here is 127.0.0.1)
on a local stack of 2 replicas of 1 worker each; then the same plain reads with no flood.

Results go to bench/results/starve-<date>-<commit>.json and .md."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench.commit import measured_commit
from tooling.stack import LocalStack
from tooling.up import ROOT

KEYS = {"ops": "admin", "flood": "scanner", "gate": "scanner"}
SECRETS = {name: f"{name}-0123456789abcdef" for name in KEYS}
FLOODERS, SECONDS, TICKETS = 200, 20, 20_000


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRETS[name]}"}


async def _event_of(http: aiohttp.ClientSession) -> tuple[str, str]:
    async with http.post("/event", json={"name": "Flood"}, headers=_auth("ops")) as r:
        event: str = (await r.json())["id"]
    for _ in range(TICKETS // 1000):
        async with http.post("/ticket/batch", json={"tickets": [{"event": event}] * 1000}, headers=_auth("ops")) as r:
            assert r.status == 201, await r.text()
    async with http.post("/ticket", json={"event": event}, headers=_auth("ops")) as r:
        ticket: str = (await r.json())["id"]
    return event, ticket


async def _run(http: aiohttp.ClientSession, event: str, ticket: str, flooders: int) -> dict[str, Any]:
    stop = time.monotonic() + SECONDS
    flood: Counter[int] = Counter()
    reads: Counter[int] = Counter()
    latency_ms: list[float] = []

    async def flooder() -> None:
        while time.monotonic() < stop:
            async with http.get(f"/changes?event={event}&limit=1000", headers=_auth("flood")) as r:
                await r.read()
                flood[r.status] += 1

    async def reader() -> None:
        while time.monotonic() < stop:
            started = time.perf_counter()
            async with http.get(f"/ticket/{ticket}", headers=_auth("gate")) as r:
                await r.read()
                reads[r.status] += 1
            latency_ms.append((time.perf_counter() - started) * 1000)

    await asyncio.gather(*(flooder() for _ in range(flooders)), reader())
    q = statistics.quantiles(latency_ms, n=100)
    return {"flooders": flooders, "plain_reads": len(latency_ms), "plain_read_p50_ms": round(q[49], 1),
            "plain_read_p99_ms": round(q[98], 1), "plain_read_statuses": dict(reads), "flood_statuses": dict(flood)}


async def measure() -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix="bench-starve-"))
    env = {"API_KEYS": ",".join(f"{name}:{role}:{SECRETS[name]}" for name, role in KEYS.items())}
    stack = LocalStack(var, env=env, rate_limit_rps=100_000).start()
    try:
        async with aiohttp.ClientSession(stack.url, connector=aiohttp.TCPConnector(limit=FLOODERS + 10)) as http:
            event, ticket = await _event_of(http)
            flooded = await _run(http, event, ticket, FLOODERS)
            quiet = await _run(http, event, ticket, 0)
        logs = "".join(p.read_text(errors="replace") for p in (var / "log").glob("api*.log"))
        flooded["replica_log_redis_unavailable"] = logs.count("redis unavailable")
        return {"flooded": flooded, "quiet": quiet}
    finally:
        stack.stop()


def main() -> None:
    commit = measured_commit()
    date = dt.date.today().isoformat()
    result = {"date": date, "commit": commit, **asyncio.run(measure())}
    out = ROOT / "bench" / "results" / f"starve-{date}-{commit}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    rows = [f"| {name} | {r['plain_reads']} | {r['plain_read_p50_ms']} | {r['plain_read_p99_ms']} | "
            f"{r['plain_read_statuses']} | {r['flood_statuses']} |" for name, r in
            (("200 pages of 1,000 in flight", result["flooded"]), ("no flood", result["quiet"]))]
    table = (f"# One key's flood of pages against another key's plain reads, {date} at {commit}\n\n"
             f"{FLOODERS} clients of one scanner key read `/changes?event=E&limit=1000` for {SECONDS} s; another "
             "reads one ticket at a time (bench/starve.py).\n\n"
             "| run | plain reads | p50 ms | p99 ms | plain read statuses | flood statuses |\n"
             "| --- | ---: | ---: | ---: | --- | --- |\n" + "\n".join(rows) +
             f"\n\nReplica log lines 'redis unavailable' during the flood: "
             f"{result['flooded']['replica_log_redis_unavailable']}.\n")
    out.with_suffix(".md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
