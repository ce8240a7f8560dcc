"""`make bench-floor`: what each write costs Redis with nothing else on Redis's core, the floor
under `make bench`'s Redis CPU per request.

A redis-server of its own, pinned to one core (taskset), this process on the other; the
store's own calls (create, invalidate, a check-in), BENCH_FLOOR_CONCURRENCY at a time (default
32, as many as wrk keeps in flight) through the auto-pipeline, BENCH_FLOOR_CALLS of each
(default 20,000). No HTTP, no processor, no other process on the core. Two ways, each on a
fresh redis-server:
- `none`: no persistence: the script and Redis's handling of the batch, alone;
- `always`: `appendonly yes`, `appendfsync always`, as the service runs: the AOF's writes
  and one fsync per event-loop turn added.
For each: Redis's CPU per call (INFO's used_cpu_user and used_cpu_sys), the EVALSHA's own time
(commandstats, by the clock, its inner commands included) and its inner commands'. Beside them,
the fixed cost of a script call: as many EVALSHAs of a script that only returns, with create's
4 KEYS and 23 ARGV, pipelined as many at a time.
Results go to bench/results/script-floor-<date>.json and .md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from bench.commit import measured_commit
from service.models import Direction, EventSpec, ListSpec, Origin, TicketSpec, Transition
from service.store import Store, StoreConfig
from tooling.procs import free_port, wait_until
from tooling.up import binary

from .run import BENCH, machine

WAYS = {"none": ["--appendonly", "no"], "always": ["--appendonly", "yes", "--appendfsync", "always"]}
# The cores: Redis on the last, this process (the client) on the others.
REDIS_CORE = (os.cpu_count() or 1) - 1
RETURN_ONLY = "return 1"
T = TypeVar("T")


async def redis_cpu_s(redis: Redis) -> float:
    info = await redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def timed(redis: Redis, calls: int, work: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    """Redis's CPU and commandstats per call while `work` makes `calls` calls."""
    await redis.config_resetstat()
    cpu0 = await redis_cpu_s(redis)
    await work()
    cpu = await redis_cpu_s(redis) - cpu0
    stats = await redis.info("commandstats")
    inner = {k.removeprefix("cmdstat_"): round(v["usec"] / calls, 2) for k, v in stats.items()
             if k not in ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config|resetstat")}
    return {
        "redis_cpu_us_per_call": round(cpu * 1e6 / calls, 1),
        "evalsha_us_per_call": round(stats.get("cmdstat_evalsha", {}).get("usec", 0) / calls, 1),
        "inner_commands_us_per_call": round(sum(inner.values()), 1),
        "inner_commands": dict(sorted(inner.items(), key=lambda kv: -kv[1])),
    }


async def in_flight(concurrency: int, call: Callable[[T], Awaitable[object]], items: Sequence[T]) -> None:
    """`call` of each item, `concurrency` at a time: each wave's commands go out in one batch."""
    for start in range(0, len(items), concurrency):
        await asyncio.gather(*(call(item) for item in items[start:start + concurrency]))


async def scenarios(redis: Redis, calls: int, concurrency: int) -> dict[str, Any]:
    store = Store(redis, StoreConfig(replay_ttl_s=60))
    out: dict[str, Any] = {}

    def origin(n: int) -> Origin:  # as nginx's request ids make them, one a request
        return Origin(actor="bench", request_id=f"floor-{n:08d}", client_ip="127.0.0.1")

    async def create(n: int) -> None:
        await store.tickets.create(origin=origin(n))

    async def invalidate(job: tuple[int, str]) -> None:
        await store.tickets.transition(job[1], Transition.INVALIDATE, origin=origin(job[0]))

    out["create"] = await timed(redis, calls, lambda: in_flight(concurrency, create, range(calls)))
    fresh = list(enumerate(t.id for t in await store.tickets.create_batch(calls)))
    out["invalidate"] = await timed(redis, calls, lambda: in_flight(concurrency, invalidate, fresh))
    event = await store.tickets.create_event(EventSpec("Floor"))
    gate = await store.checkin.create_list(event.id, ListSpec("Gate"))
    tickets = await store.tickets.create_batch(calls, spec=TicketSpec(event=event.id, type="general"))
    scans = list(enumerate(t.id for t in tickets))

    async def scan(job: tuple[int, str]) -> None:
        await store.checkin.checkin(job[1], gate.id, Direction.ENTRY, origin=origin(job[0]))

    out["checkin"] = await timed(redis, calls, lambda: in_flight(concurrency, scan, scans))
    sha = await redis.script_load(RETURN_ONLY)
    script_keys = ["t:{mm}:x", "tickets:{mm}", "stats:{mm}", "events:{mm}"]

    async def bare() -> None:
        for start in range(0, calls, concurrency):
            async with redis.pipeline(transaction=False) as pipe:
                for _ in range(min(concurrency, calls - start)):
                    pipe.evalsha(sha, len(script_keys), *script_keys, *["x"] * 23)
                await pipe.execute()

    out["return_only_script"] = await timed(redis, calls, bare)
    return out


async def one_way(port: int, calls: int, concurrency: int) -> dict[str, Any]:
    redis = Redis(port=port, decode_responses=True)
    try:
        return await scenarios(redis, calls, concurrency)
    finally:
        await redis.aclose()


def run_way(way: str, calls: int, concurrency: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            ["taskset", "-c", str(REDIS_CORE), binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
             "--save", "", "--dir", tmp, *WAYS[way]],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
                       .stdout.startswith(b"PONG"), what="redis-server")
            return asyncio.run(one_way(port, calls, concurrency))
        finally:
            proc.terminate()
            proc.wait()


def markdown(result: dict[str, Any]) -> str:
    rows = [f"# Redis's floor per write, {result['date'][:10]}", "",
            f"{result['calls']:,} calls of each, {result['concurrency']} at a time, Redis alone on core "
            f"{result['redis_core']} (see bench/script_floor.py). µs per call.", "",
            "| way | call | Redis CPU | EVALSHA (clock) | its inner commands |",
            "| --- | --- | ---: | ---: | ---: |"]
    for way, calls in result["ways"].items():
        for name, r in calls.items():
            rows.append(f"| {way} | {name} | {r['redis_cpu_us_per_call']} | {r['evalsha_us_per_call']} "
                        f"| {r['inner_commands_us_per_call']} |")
    return "\n".join(rows) + "\n"


def main() -> None:
    calls = int(os.environ.get("BENCH_FLOOR_CALLS", "20000"))
    concurrency = int(os.environ.get("BENCH_FLOOR_CONCURRENCY", "32"))
    if REDIS_CORE > 0:  # the client off Redis's core
        os.sched_setaffinity(0, set(range(REDIS_CORE)))
    result: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "machine": machine(),
                              "commit": measured_commit(), "calls": calls, "concurrency": concurrency,
                              "redis_core": REDIS_CORE,
                              "ways": {way: run_way(way, calls, concurrency) for way in WAYS}}
    out: Path = BENCH / "results"
    stamp = f"script-floor-{result['date'][:10]}-{result['commit']}"
    (out / f"{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    (out / f"{stamp}.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
