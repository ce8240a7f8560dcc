"""`make bench-redis`: where Redis's CPU per request goes, for the writes (create, invalidate,
checkin), on the bench's stack (standalone Redis, every production feature on).

Each scenario runs through nginx (wrk, 32 connections, BENCH_REDIS_DURATION_S seconds,
default 5) three ways, BENCH_REDIS_ROUNDS times (default 2) in turn, the median kept:
- `all`: as `make bench` runs it (appendfsync always, the processor recording as it goes);
- `path`: the processor stopped (SIGSTOP) for the run, so that Redis's CPU is the request
  path's alone; INFO commandstats gives the scripts' own share (EVALSHA, the commands inside
  it included) and each inner command's; then the processor is let go, and what it and Redis
  spend recording the run's stream entries is the `recording` share;
- `everysec`: the same with `appendfsync everysec`: the difference is the fsync of `always`.
Redis times a command (commandstats) by the clock, not by its CPU: on a busy machine a script
that the OS preempts is billed the wait too, so the script's share is an upper bound and the
rest (CPU less the script) a lower bound.
Results go to bench/results/redis-costs-<date>.json and .md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import shutil
import signal
import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

from redis.asyncio import Redis

from bench.commit import measured_commit
from service.models import EventSpec, ListSpec, TicketSpec
from service.store import Store, StoreConfig
from tooling.stack import LocalStack
from tooling.up import ROOT

from .run import BENCH, CLK_TCK, TOKEN, Target, cpu_ticks, machine, measure, preload, settle

SCENARIOS = ("create", "invalidate", "checkin")
WAYS = ("all", "path", "everysec")


@contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process group stopped for the block, and let go after it (even on failure)."""
    os.killpg(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(pid, signal.SIGCONT)


async def _drain(store: Store, stack: LocalStack, requests: int) -> dict[str, float]:
    """CPU per request that the processor and Redis spend recording what the run left."""
    assert stack.processor and stack.redis
    groups = {"redis": [stack.redis.pid], "processor": [stack.processor.pid]}
    before = {g: cpu_ticks(p) for g, p in groups.items()}
    async with asyncio.timeout(300):
        while await store.consumer.lag():
            await asyncio.sleep(0.05)
    return {g: round((cpu_ticks(p) - before[g]) / CLK_TCK * 1e6 / max(requests, 1), 1) for g, p in groups.items()}


async def _rewrite_aof(redis: Redis) -> None:
    await redis.bgrewriteaof()
    async with asyncio.timeout(300):
        while (await redis.info("persistence"))["aof_rewrite_in_progress"]:
            await asyncio.sleep(0.1)


async def one_run(store: Store, redis: Redis, stack: LocalStack, target: Target, scenario: str, way: str,
                  duration_s: int, fresh: Any) -> dict[str, Any]:
    assert stack.processor
    await settle(store, target, 32)
    await redis.config_set("appendfsync", "everysec" if way == "everysec" else "always")
    await redis.config_resetstat()
    if way == "all":
        run = await asyncio.to_thread(measure, target, scenario, duration_s, 32, fresh)
    else:
        with stopped(stack.processor.pid):
            run = await asyncio.to_thread(measure, target, scenario, duration_s, 32, fresh)
            stats = await redis.info("commandstats")
    out: dict[str, Any] = {"rps": run["rps"], "redis_us": run["cpu_us_per_request"]["redis"],
                           "steal_pct": run["steal_pct"]}
    if way != "all":
        n = max(run["requests"], 1)
        out["commands_us"] = {k.removeprefix("cmdstat_"): round(v["usec"] / n, 1) for k, v in stats.items()
                              if v["usec"] / n >= 0.1}
        out["recording_us"] = await _drain(store, stack, run["requests"])
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The medians of a scenario's runs of each way, and the shares they make."""
    def med(way: str, value: Callable[[dict[str, Any]], float]) -> float:
        return round(statistics.median(value(r) for r in runs if r["way"] == way), 1)

    stopped_runs = [r for r in runs if r["way"] != "all"]
    inner = {name: round(statistics.median(r["commands_us"].get(name, 0.0) for r in stopped_runs), 1)
             for name in {k for r in stopped_runs for k in r["commands_us"]} - {"evalsha", "config|resetstat"}}
    return {
        "all_us": med("all", lambda r: r["redis_us"]),
        "request_path_us": med("path", lambda r: r["redis_us"]),
        # The script's share from the runs with the processor stopped, both fsync modes: it
        # does not depend on the fsync.
        "script_us": round(statistics.median(r["commands_us"].get("evalsha", 0.0) for r in stopped_runs), 1),
        "fsync_always_us": round(med("path", lambda r: r["redis_us"]) - med("everysec", lambda r: r["redis_us"]), 1),
        "rest_us": med("everysec", lambda r: r["redis_us"] - r["commands_us"].get("evalsha", 0.0)),
        "recording_us": med("path", lambda r: r["recording_us"]["redis"]),
        "processor_recording_us": med("path", lambda r: r["recording_us"]["processor"]),
        "inner_commands_us": dict(sorted(inner.items(), key=lambda kv: -kv[1])),
    }


def markdown(results: dict[str, Any]) -> str:
    rows = [f"# Redis CPU per request, {results['date'][:10]}", "",
            "Medians of each way's runs (see bench/redis_costs.py). `request path` = the processor "
            "stopped; `script` = EVALSHA with the commands inside it (INFO commandstats, which times "
            "by the clock: an upper bound on a busy machine); `fsync` = "
            "request path with `appendfsync always` less the same with `everysec`; `rest` = the request "
            "path with everysec less the script (reading and parsing commands, the AOF's writes, "
            "replies, the event loop); `recording` = Redis's CPU while the processor records the "
            "run's entries afterwards.", "",
            "| scenario | all (as make bench) µs | request path | script | of it, inner commands | fsync (always) "
            "| rest | recording | processor's own, recording | inner commands (µs) |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, s in results["scenarios"].items():
        inner = ", ".join(f"{k} {v}" for k, v in s["inner_commands_us"].items())
        rows.append(f"| {name} | {s['all_us']} | {s['request_path_us']} | {s['script_us']} "
                    f"| {round(sum(s['inner_commands_us'].values()), 1)} | {s['fsync_always_us']} "
                    f"| {s['rest_us']} | {s['recording_us']} | {s['processor_recording_us']} | {inner} |")
    return "\n".join(rows) + "\n"


async def run() -> dict[str, Any]:
    duration_s = int(os.environ.get("BENCH_REDIS_DURATION_S", "5"))
    rounds = int(os.environ.get("BENCH_REDIS_ROUNDS", "2"))
    var_dir = (ROOT / "var" / "bench-redis").resolve()
    shutil.rmtree(var_dir, ignore_errors=True)
    stack = LocalStack(var_dir / "service", env={"API_KEYS": f"bench:admin:{TOKEN}"}, rate_limit_rps=10_000_000)
    stack.cfg = replace(stack.cfg, redis_appendfsync="always")
    stack.cfg.var_dir.mkdir(parents=True)
    stack.start()
    redis = Redis(port=stack.cfg.redis_port, decode_responses=True)
    try:
        await redis.config_set("auto-aof-rewrite-percentage", 0)  # no forked rewrite inside a run
        store = Store(redis, StoreConfig(replay_ttl_s=60))
        event = await store.tickets.create_event(EventSpec("Costs"))
        gate = await store.checkin.create_list(event.id, ListSpec("Gate"))
        assert stack.redis
        target = Target("service", stack.url, {"redis": [stack.redis.pid]}, token=TOKEN,
                        read_ids=await preload(store, 1000, var_dir / "read"), list_id=gate.id)
        results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                                   "machine": machine(), "duration_s": duration_s, "rounds": rounds,
                                   "scenarios": {}, "runs": {}}
        for scenario in SCENARIOS:
            spec = TicketSpec(event=event.id, type="general") if scenario == "checkin" else TicketSpec()
            runs = []
            for _ in range(rounds):
                for way in WAYS:
                    fresh = (await preload(store, 20_000 * duration_s, var_dir / "fresh", spec)
                             if scenario != "create" else None)
                    r = {"way": way, **await one_run(store, redis, stack, target, scenario, way, duration_s, fresh)}
                    print(f"{scenario:>10} {way:>8}: {json.dumps(r)}", flush=True)
                    runs.append(r)
                await _rewrite_aof(redis)  # between rounds, as make bench compacts between runs
            results["runs"][scenario] = runs
            results["scenarios"][scenario] = summary(runs)
        return results
    finally:
        await redis.aclose()
        stack.stop()


def main() -> None:
    results = asyncio.run(run())
    results["commit"] = measured_commit()
    out = BENCH / "results" / f"redis-costs-{results['date'][:10]}-{results['commit']}"
    out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    out.with_suffix(".md").write_text(table)
    print("\n" + table)


if __name__ == "__main__":
    main()
