"""The export of every scan of an event (GET /event/{id}/scans) at a million scans.

    make bench-export          (BENCH_EXPORT_SCANS, default 1,000,000)

A local stack with one replica of one worker. The event's scan log is filled as the tickets
processor fills it (the same fields, in the same order, process.lua's), by pipelined XADDs
from here: a million scans through the API would take the bench an hour and measure the
scans, not the export. Then the whole log is exported through nginx, as NDJSON and as CSV:
the time, the bytes, the rows, and the worker's resident memory before and at its peak
(VmHWM), which stays flat if the export streams.

Results go to bench/results/export-<date>-<commit>.json and .md."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from redis.asyncio import Redis

from bench.commit import write_result
from service.store import keys
from tooling.stack import LocalStack

ADMIN_KEY = "bench-admin-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
PIPELINE = 5000


def _memory_kib(pid: int) -> dict[str, int]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"rss_kib": int(fields["VmRSS"].split()[0]), "peak_kib": int(fields["VmHWM"].split()[0])}


async def _fill(redis: Redis, event_id: str, list_id: str, scans: int) -> float:
    key, started = keys.scan_log(event_id), time.monotonic()
    now_us = int(time.time() * 1e6)
    for start in range(0, scans, PIPELINE):
        pipe = redis.pipeline(transaction=False)
        for n in range(start, min(scans, start + PIPELINE)):
            ticket = f"{event_id}-{n >> 16:04x}-4{n & 0xfff:03x}-8000-{n:012x}"
            refused = n % 10 == 9
            fields = {"c": f"{now_us // 1000}-{n}", "a": f"Gate {n % 40}#{n % 40:016x}",
                      "d": "entry", "e": "checkin_refused" if refused else "checkin", "ip": "10.0.0.7",
                      "l": list_id, "r": f"{n:032x}", "t": ticket, "ts": str(now_us + n)}
            if refused:
                fields["why"] = "already_used"
            pipe.xadd(key, fields)  # type: ignore[arg-type]
        await pipe.execute()
    return time.monotonic() - started


async def _export(http: aiohttp.ClientSession, url: str, accept: str, pid: int) -> dict[str, Any]:
    before = _memory_kib(pid)
    started, size, lines = time.monotonic(), 0, 0
    async with http.get(url, headers={**AUTH, "Accept": accept}, timeout=aiohttp.ClientTimeout(total=1800)) as r:
        assert r.status == 200, await r.text()
        async for chunk in r.content.iter_chunked(1 << 16):
            size += len(chunk)
            lines += chunk.count(b"\n")
    took = time.monotonic() - started
    after = _memory_kib(pid)
    return {"format": accept, "seconds": round(took, 1), "rows_per_s": round(lines / took), "lines": lines,
            "mb": round(size / 1e6, 1), "worker_rss_before_mib": round(before["rss_kib"] / 1024, 1),
            "worker_peak_before_mib": round(before["peak_kib"] / 1024, 1),
            "worker_peak_after_mib": round(after["peak_kib"] / 1024, 1)}


async def measure(scans: int) -> dict[str, Any]:
    var = Path(tempfile.mkdtemp(prefix="bench-export-"))
    stack = LocalStack(var, replicas=1, env={"API_KEYS": f"bench:admin:{ADMIN_KEY}"})
    await asyncio.to_thread(stack.start)
    redis = Redis(port=stack.cfg.redis_port, decode_responses=True)
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(stack.url + "/event", json={"name": "Bench"}, headers=AUTH) as r:
                event = (await r.json())["id"]
            async with http.post(stack.url + f"/event/{event}/list", json={"name": "Door"}, headers=AUTH) as r:
                door = (await r.json())["id"]
            fill_s = await _fill(redis, event, door, scans)
            redis_mib = int((await redis.info("memory"))["used_memory"]) / 2**20
            [worker] = stack.worker_pids(0)
            url = stack.url + f"/event/{event}/scans"
            runs = [await _export(http, url, accept, worker) for accept in ("application/x-ndjson", "text/csv")]
        return {"scans": scans, "fill_s": round(fill_s, 1), "redis_used_mib": round(redis_mib), "runs": runs}
    finally:
        await redis.aclose()
        await asyncio.to_thread(stack.stop)


def table(result: dict[str, Any]) -> str:
    rows = "\n".join(
        f"| {r['format']} | {r['lines']:,} | {r['seconds']} | {r['rows_per_s']:,} | {r['mb']} | "
        f"{r['worker_rss_before_mib']} | {r['worker_peak_after_mib']} |" for r in result["runs"])
    return (f"# Scan export, {result['date']} at {result['commit']}\n\n"
            f"{result['scans']:,} scans of one event exported through nginx from one worker (bench/export.py); "
            f"the scan log took {result['redis_used_mib']} MiB of Redis in all.\n\n"
            "| format | lines | seconds | rows/s | MB | worker RSS before, MiB | worker peak after, MiB |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n" + rows + "\n")


def main() -> None:
    scans = int(os.environ.get("BENCH_EXPORT_SCANS", "1000000"))
    write_result("export", asyncio.run(measure(scans)), table)


if __name__ == "__main__":
    main()
