"""One run: the stack spread over the lab's hosts, the workload and the nemesis together, every
fault healed, then the checker. Prints the report (and writes it, with the whole record, under
the run's folder) so that a failure names its operations and its seed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from ..procs import http_status, wait_until
from ..spread import SpreadStack
from .checker import Checker, Violation, read_final_state
from .history import Kind, Op, Outcome
from .nemesis import FAULTS, Fault, Nemesis
from .workload import Workload

_WRITES = (Kind.CREATE, Kind.BATCH, Kind.ENTRY, Kind.EXIT, Kind.ANNUL, Kind.REVOKE)


@dataclass
class RunConfig:
    topology: str
    seed: int
    rounds: int = 5
    fault_s: float = 8.0
    calm_s: float = 4.0
    delay_ms: float = 5.0
    workers: int = 6
    kinds: tuple[str, ...] = FAULTS
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Report:
    config: RunConfig
    ops: list[Op]
    faults: list[Fault]
    violations: list[Violation]
    seconds: float

    def outcomes(self) -> Counter[str]:
        return Counter(op.outcome.value for op in self.ops)

    def writes_per_s(self) -> float:
        """Acknowledged writes a second over the whole run, faults and calm alike."""
        span = max((op.completed_s for op in self.ops), default=0.0)
        ok = sum(op.kind in _WRITES and op.outcome is Outcome.OK for op in self.ops)
        return ok / span if span else 0.0

    def to_json(self) -> dict[str, Any]:
        c = self.config
        return {
            "topology": c.topology, "seed": c.seed, "rounds": c.rounds, "fault_s": c.fault_s, "calm_s": c.calm_s,
            "delay_ms": c.delay_ms, "workers": c.workers, "env": c.env, "seconds": round(self.seconds, 1),
            "operations": len(self.ops), "outcomes": dict(self.outcomes()),
            "writes_per_s": round(self.writes_per_s(), 1),
            "faults": [f.to_json() for f in self.faults],
            "violations": [v.to_json() for v in self.violations],
        }

    def summary(self) -> str:
        o = self.outcomes()
        rules = Counter(v.rule for v in self.violations)
        worst = max((f.unavailable_s for f in self.faults), default=0.0)
        return (f"CHAOS {self.config.topology} seed={self.config.seed}: {len(self.ops)} operations "
                f"({o['ok']} ok, {o['fail']} refused, {o['unknown']} unknown; {self.writes_per_s():.0f} "
                f"acknowledged writes/s), {len(self.faults)} faults "
                f"({', '.join(f.kind for f in self.faults)}), violations: "
                f"{dict(rules) if rules else 'none'}; longest stretch without a write {worst:.1f} s")


def unavailability(ops: list[Op], fault: Fault, until_s: float) -> float:
    """The longest stretch, from the fault's start until `until_s`, in which no write was
    acknowledged."""
    times = sorted(op.completed_s for op in ops if op.kind in _WRITES and op.outcome is Outcome.OK
                   and fault.started_s <= op.completed_s <= until_s)
    edges = [fault.started_s, *times, until_s]
    return max(b - a for a, b in zip(edges, edges[1:], strict=False))


def unacknowledged(ops: list[Op], fault: Fault) -> float:
    """The share of the writes sent while the fault lasted that got no answer either way (a
    5xx or a timeout): a refusal such as sold-out is an answer."""
    sent = [op for op in ops if op.kind in _WRITES and fault.started_s <= op.invoked_s <= fault.healed_s]
    return sum(op.outcome is Outcome.UNKNOWN for op in sent) / len(sent) if sent else 0.0


async def _run(stack: SpreadStack, config: RunConfig) -> Report:
    workload = Workload(stack.url, config.seed, workers=config.workers)
    async with aiohttp.ClientSession() as http:
        venue = await workload.setup(http)
    nemesis = Nemesis(stack, config.seed, config.rounds, config.fault_s, config.calm_s, config.kinds)
    stop = asyncio.Event()
    began = time.monotonic()
    load = asyncio.create_task(workload.run(stop))
    try:
        await nemesis.run(workload.started)
    finally:
        stop.set()
        await load
    stack.lab.heal()
    await asyncio.to_thread(_settle, stack)
    final = await read_final_state(stack.url, venue)
    violations = Checker(workload.ops, venue, final).check()
    faults = nemesis.faults
    for i, fault in enumerate(faults):
        end = faults[i + 1].started_s if i + 1 < len(faults) else max((op.completed_s for op in workload.ops),
                                                                      default=fault.healed_s)
        fault.unavailable_s = unavailability(workload.ops, fault, end)
        fault.unacknowledged = unacknowledged(workload.ops, fault)
    return Report(config, workload.ops, faults, violations, time.monotonic() - began)


def _settle(stack: SpreadStack) -> None:
    """Every node back and agreeing, and the API ready, before the final state is read."""
    for name, proc in stack.nodes.procs.items():
        if proc.poll() is not None:
            stack.nodes.start_node(name, timeout_s=90)
    if stack.topology == "cluster":
        wait_until(stack.nodes.cluster_ok, timeout_s=60, what="the Cluster to say ok")
    else:
        wait_until(stack.nodes.sentinels_agree, timeout_s=60, what="the sentinels to agree again")
    wait_until(lambda: http_status(stack.url + "/readyz") == 200, timeout_s=60, what="the API ready again")


def run(config: RunConfig, var_dir: Path) -> Report:
    stack = SpreadStack(var_dir, config.topology, delay_ms=config.delay_ms, env=config.env).start()
    try:
        report = asyncio.run(_run(stack, config))
    finally:
        stack.stop()
    (var_dir / "report.json").write_text(json.dumps(report.to_json(), indent=1))
    with open(var_dir / "history.jsonl", "w") as f:
        for op in report.ops:
            f.write(json.dumps(op.to_json()) + "\n")
    return report
