"""The nemesis: while the workload runs, one fault a round, each held for `fault_s` and then
healed, with `calm_s` between rounds. The schedule comes from the seed alone (the report
prints it), so a run can be replayed; which node is "the master" is looked up when the fault
starts, as a real fault would find it.

- isolate-master: a master's host cut from every other host (a minority of one).
- isolate-host: any one host cut off (a Redis host, an API replica's, the processor's, nginx's).
- bridge: a Redis host still hears both other Redis hosts, which no longer hear each
  other; the API hosts are split between the two sides.
- pause-master: a master SIGSTOPped past the failover timeout, then let go (a GC pause, a VM
  stall): it wakes believing it is still master.
- kill-master: a master SIGKILLed, started again when the round heals.
- stale-promotion: one of a master's replicas cut from the master's host (and from it alone)
  for half the round, so that writes are confirmed by the other replicas alone; then those
  cut off for longer than Sentinel keeps a silent replica a candidate; then the master killed:
  the only replica left to promote is the one that missed them (why WAIT is no consensus).
  On a Cluster, with one replica a master, the replica cut off first is that one.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..spread import API_HOSTS, HOSTS, REDIS_HOSTS, SpreadStack

# How long Sentinel still counts a replica that stopped answering as a candidate for promotion
# (5 ping periods of a second), and a margin.
_CANDIDATE_S = 6.0
FAULTS = ("isolate-master", "isolate-host", "bridge", "pause-master", "kill-master", "stale-promotion")


@dataclass
class Fault:
    kind: str
    started_s: float = 0.0
    healed_s: float = 0.0
    detail: str = ""
    # Filled in by the report: the longest stretch with no acknowledged write (from the fault's
    # start to the next fault's), and the share of writes sent while it lasted that got no
    # answer (a Cluster's other masters go on: the first says little there).
    unavailable_s: float = 0.0
    unacknowledged: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "started_s": round(self.started_s, 2), "healed_s": round(self.healed_s, 2),
                "detail": self.detail, "unavailable_s": round(self.unavailable_s, 2),
                "unacknowledged": round(self.unacknowledged, 3)}


@dataclass
class Nemesis:
    stack: SpreadStack
    seed: int
    rounds: int
    fault_s: float = 8.0
    calm_s: float = 4.0
    kinds: tuple[str, ...] = FAULTS
    faults: list[Fault] = field(default_factory=list)

    def schedule(self) -> list[str]:
        """Every kind in turn, in an order drawn from the seed, and again: `rounds` of them."""
        rng = random.Random(self.seed)
        out: list[str] = []
        while len(out) < self.rounds:
            out += rng.sample(self.kinds, len(self.kinds))
        return out[:self.rounds]

    async def run(self, started: float) -> None:
        rng = random.Random(self.seed + 1)
        for kind in self.schedule():
            await asyncio.sleep(self.calm_s)
            fault = Fault(kind, started_s=time.monotonic() - started)
            if kind == "stale-promotion":
                heal = await self._stale_promotion(fault, rng)
            else:
                heal = await asyncio.to_thread(self._inject, fault, rng)
                await asyncio.sleep(self.fault_s)
            await asyncio.to_thread(heal)
            fault.healed_s = time.monotonic() - started
            self.faults.append(fault)
        await asyncio.sleep(self.calm_s)

    async def _stale_promotion(self, fault: Fault, rng: random.Random) -> Callable[[], None]:
        stack = self.stack
        master = self._master(rng)
        replicas = await asyncio.to_thread(self._replicas_of, master)
        if not replicas:
            fault.detail = f"{master} has no replica: nothing to do"
            await asyncio.sleep(self.fault_s)
            return lambda: None
        behind = rng.choice(replicas)
        lab, there, late = self.stack.lab, stack.host_of(master).name, stack.host_of(behind).name
        ahead = [stack.host_of(r).name for r in replicas if r != behind]
        rest = [h for h in HOSTS if h not in (there, late, *ahead)]
        # 1. The replica falls behind: cut from its master's host alone. Writes are confirmed
        #    by the other replicas only.
        await asyncio.to_thread(lab.partition, [[there, *ahead, *rest], [late, *ahead, *rest]])
        await asyncio.sleep(self.fault_s / 2)
        if ahead:
            # 2. The replicas that have those writes cut off, for longer than Sentinel keeps a
            #    silent replica a candidate (5 pings): nothing is confirmed meanwhile.
            await asyncio.to_thread(lab.partition, [ahead, [there, *rest], [late, *rest]])
            await asyncio.sleep(_CANDIDATE_S)
        # 3. The master dies; the one that fell behind hears everyone left again, too late.
        await asyncio.to_thread(stack.nodes.kill, master)
        await asyncio.to_thread(lab.partition, [ahead, [there, late, *rest]] if ahead else [])
        fault.detail = (f"{behind} cut from {master}" + (f", then {', '.join(ahead)} cut off" if ahead else "")
                        + f", then {master} killed")
        await asyncio.sleep(self.fault_s / 2)

        def heal() -> None:
            stack.lab.heal()
            stack.nodes.start_node(master, timeout_s=90)

        return heal

    def _replicas_of(self, master: str) -> list[str]:
        """The data nodes that replicate `master` now, by its own INFO."""
        with self.stack.nodes.connect(master) as c:
            info = c.info("replication")
        ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
        return [n.name for n in self.stack.nodes.data_nodes() if n.port in ports]

    def _master(self, rng: random.Random) -> str:
        masters = sorted(self.stack.nodes.masters())
        return rng.choice(masters) if masters else "redis1"

    def _inject(self, fault: Fault, rng: random.Random) -> Any:
        lab, stack = self.stack.lab, self.stack
        if fault.kind == "isolate-master":
            host = stack.host_of(self._master(rng)).name
            lab.partition([[host], [h for h in HOSTS if h != host]])
            fault.detail = f"{host} alone"
            return lab.heal
        if fault.kind == "isolate-host":
            host = rng.choice(HOSTS)
            lab.partition([[host], [h for h in HOSTS if h != host]])
            fault.detail = f"{host} alone"
            return lab.heal
        if fault.kind == "bridge":
            middle = rng.choice(REDIS_HOSTS)
            left, right = (h for h in REDIS_HOSTS if h != middle)
            api_left = [API_HOSTS[0]]
            api_right = [h for h in HOSTS if h not in (*REDIS_HOSTS, API_HOSTS[0])]
            lab.partition([[middle, left, *api_left], [middle, right, *api_right]])
            fault.detail = f"{middle} bridges {left}+{api_left[0]} and {right}+{'+'.join(api_right)}"
            return lab.heal
        name = self._master(rng)
        fault.detail = f"{name} on {stack.host_of(name).name}"
        if fault.kind == "pause-master":
            stack.signal(name, signal.SIGSTOP)
            return lambda: stack.signal(name, signal.SIGCONT)
        stack.nodes.kill(name)
        # A node that comes back under Sentinel waits for a failover of itself to settle first.
        return lambda: stack.nodes.start_node(name, timeout_s=90)
