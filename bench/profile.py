"""`make bench-profile`: where a worker's CPU goes, sampled by py-spy while wrk drives one
bench scenario through nginx, with every production feature on (the same stack as `make
bench`).

For each scenario (BENCH_PROFILE_SCENARIOS, default get,create) it writes, beside the bench's
results, `profile-<date>-<commit>-<label>-<scenario>.md`, a summary: the share of the worker's busy samples by layer
(aiohttp, redis-py, the service, ...) and the functions with the most samples of their own; the
raw collapsed stacks (py-spy's, for flamegraph.pl or speedscope) stay in the run's var/ folder.
PROFILE_LABEL names the run (e.g. before, after); BENCH_PROFILE_DURATION_S its length.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import replace
from pathlib import Path

from redis.asyncio import Redis

from bench.commit import measured_commit
from service.models import EventSpec, ListSpec, TicketSpec
from service.store import Store, StoreConfig
from tooling.procs import children
from tooling.stack import LocalStack
from tooling.up import ROOT

from .run import BENCH, TOKEN, Target, preload, settle, wrk

# Layers by the file a frame is in (py-spy names it from its package), first match wins.
_LAYERS = (
    ("service (this project)", re.compile(r"^service/")),
    ("redis-py", re.compile(r"^redis/")),
    ("aiohttp", re.compile(r"^aiohttp/")),
    ("prometheus_client", re.compile(r"^prometheus_client/")),
    ("asyncio and uvloop", re.compile(r"^(asyncio|uvloop)/")),
    ("json / msgspec", re.compile(r"^(json|msgspec)/")),
    ("multidict, yarl, propcache", re.compile(r"^(multidict|yarl|propcache)/")),
)
PY_SPY = str(Path(sys.executable).parent / "py-spy")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


def _frame(raw: str) -> tuple[str, str]:
    m = _FRAME.match(raw)
    return (m["func"], m["file"]) if m else (raw, "")


def _layer(file: str) -> str:
    for name, pattern in _LAYERS:
        if pattern.search(file):
            return name
    return "other (stdlib, gunicorn)"


def summarise(collapsed: str, title: str) -> str:
    """A Markdown summary of py-spy's collapsed stacks (`frame;frame;... count` lines)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_s)
        total += count
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        func, file = frames[-1]
        short = f"{func} ({file})"
        own[short] += count
        # A leaf frame in the stdlib called from a layer counts in the stdlib; the layer
        # table names where the samples were spent, not who asked.
        layers[_layer(file)] += count
        for name in {f"{fn} ({fl})" for fn, fl in frames}:
            inclusive[name] += count
    total = max(total, 1)
    out = [f"# {title}", "", f"{total} samples of the worker's busy time (py-spy, idle excluded). Samples of "
           "`GunicornWebWorker.run` itself are uvloop's C code under it: polling, socket reads, callbacks.", "",
           "| layer (by the file of the leaf frame) | share |", "| --- | ---: |"]
    out += [f"| {name} | {100 * n / total:.1f}% |" for name, n in layers.most_common()]
    out += ["", "| function (own samples) | share |", "| --- | ---: |"]
    out += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in own.most_common(30)]
    out += ["", "| function (with what it calls) | share |", "| --- | ---: |"]
    out += [f"| `{name}` | {100 * n / total:.1f}% |" for name, n in inclusive.most_common(40)]
    return "\n".join(out) + "\n"


async def profile() -> None:
    duration_s = int(os.environ.get("BENCH_PROFILE_DURATION_S", "15"))
    scenarios = os.environ.get("BENCH_PROFILE_SCENARIOS", "get,create").split(",")
    label = os.environ.get("PROFILE_LABEL", "now")
    var_dir = (ROOT / "var" / "bench-profile").resolve()
    shutil.rmtree(var_dir, ignore_errors=True)
    stack = LocalStack(var_dir / "service", env={"API_KEYS": f"bench:admin:{TOKEN}"}, rate_limit_rps=10_000_000)
    stack.cfg = replace(stack.cfg, redis_appendfsync=os.environ.get("REDIS_APPENDFSYNC", "always"))
    stack.cfg.var_dir.mkdir(parents=True)
    stack.start()
    redis = Redis(port=stack.cfg.redis_port, decode_responses=True)
    try:
        store = Store(redis, StoreConfig(replay_ttl_s=60))
        event = await store.tickets.create_event(EventSpec("Profile"))
        gate = await store.checkin.create_list(event.id, ListSpec("Gate"))
        target = Target("service", stack.url, {}, token=TOKEN,
                        read_ids=await preload(store, 1000, var_dir / "read"), list_id=gate.id)
        assert stack.replicas[0] is not None
        worker = children(stack.replicas[0].pid)[0]
        stamp = f"{dt.date.today().isoformat()}-{measured_commit()}"
        for scenario in scenarios:
            fresh = None
            if scenario in ("invalidate", "checkin", "mix"):
                spec = TicketSpec(event=event.id, type="general") if scenario == "checkin" else TicketSpec()
                fresh = await preload(store, 20_000 * duration_s, var_dir / "fresh", spec)
            await settle(store, target, 32)
            connections = 4 if scenario == "batch" else 32  # as make bench runs each
            out = BENCH / "results" / f"profile-{stamp}-{label}-{scenario}"
            raw = var_dir / f"profile-{stamp}-{label}-{scenario}.txt"  # the raw stacks: not committed
            spy = subprocess.Popen([PY_SPY, "record", "--pid", str(worker), "--duration", str(duration_s),
                                    "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(raw)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            run = await asyncio.to_thread(wrk, target, scenario, duration_s, connections, fresh)
            spy.wait(timeout=60)
            rps = run["requests"] / (run["duration_us"] / 1e6)
            title = (f"Worker profile: {scenario}, {label} ({stamp}), {rps:,.0f} req/s through nginx at "
                     f"{connections} connections")
            Path(f"{out}.md").write_text(summarise(raw.read_text(), title))
            print(f"raw stacks (flamegraph.pl or speedscope): {raw}", flush=True)
            print(f"{out}.md: {rps:,.0f} req/s", flush=True)
    finally:
        await redis.aclose()
        stack.stop()


def main() -> None:
    asyncio.run(profile())


if __name__ == "__main__":
    main()
