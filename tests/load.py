"""A bounded mixed load through nginx, for the fault tests: every answer is recorded."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

OPS = ("create", "get", "invalidate")


@dataclass
class Outcome:
    op: str
    status: int  # 0: the connection itself failed
    ticket_id: str | None
    started: float
    elapsed_s: float
    retry_after: str | None = None


@dataclass
class MixedLoad:
    """`clients` loops, each cycling through `ops`, until stopped. Invalidations use fresh
    tickets from `to_invalidate`, one request per ticket, so any 409 would be a wrong answer."""

    http: aiohttp.ClientSession
    base: str
    read_ids: list[str]
    to_invalidate: list[str]
    ops: tuple[str, ...] = OPS
    outcomes: list[Outcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._reads = itertools.cycle(self.read_ids)

    def start(self, clients: int = 8) -> None:
        self._tasks = [asyncio.create_task(self._client(i)) for i in range(clients)]

    async def _client(self, i: int) -> None:
        for op in itertools.cycle(self.ops[i % len(self.ops):] + self.ops[: i % len(self.ops)]):
            if self._stop.is_set():
                return
            if op == "invalidate" and not self.to_invalidate:
                continue
            await self._one(op)

    async def _one(self, op: str) -> None:
        if op == "create":
            method, url, tid = "POST", f"{self.base}/ticket", None
        elif op == "get":
            tid = next(self._reads)
            method, url = "GET", f"{self.base}/ticket/{tid}"
        else:
            tid = self.to_invalidate.pop()
            method, url = "UPDATE", f"{self.base}/ticket/invalidate?id={tid}"
        started = time.monotonic()
        try:
            async with self.http.request(method, url) as r:
                body = await r.json(content_type=None)
                if op == "create" and r.status == 201:
                    tid = body["id"]
                status, retry_after = r.status, r.headers.get("Retry-After")
        except (aiohttp.ClientError, ValueError):
            status, retry_after = 0, None
        self.outcomes.append(Outcome(op, status, tid, started, time.monotonic() - started, retry_after))

    async def until(self, count: int, timeout_s: float = 60) -> None:
        """Wait until `count` answers are in (polling the list; the load itself runs on)."""
        async with asyncio.timeout(timeout_s):
            while len(self.outcomes) < count:
                await asyncio.sleep(0.005)

    async def started_after(self, t: float, count: int = 100, timeout_s: float = 60) -> None:
        """Wait until `count` answers are in for requests started after monotonic time `t`."""
        async with asyncio.timeout(timeout_s):
            while sum(1 for o in self.outcomes if o.started > t) < count:
                await asyncio.sleep(0.005)

    async def until_ok_after(self, t: float, count: int, timeout_s: float = 60) -> None:
        """Wait until `count` requests started after monotonic time `t` have succeeded."""
        async with asyncio.timeout(timeout_s):
            while sum(1 for o in self.outcomes if o.started > t and o.status in (200, 201)) < count:
                await asyncio.sleep(0.01)

    async def more(self, count: int) -> None:
        await self.until(len(self.outcomes) + count)

    async def stop(self) -> list[Outcome]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


def tally(outcomes: list[Outcome]) -> dict[str, dict[int, int]]:
    table: dict[str, Counter[int]] = {op: Counter() for op in OPS}
    for o in outcomes:
        table[o.op][o.status] += 1
    return {op: dict(c) for op, c in table.items()}


async def make_tickets(http: aiohttp.ClientSession, base: str, n: int) -> list[str]:
    async def one() -> str:
        async with http.post(f"{base}/ticket") as r:
            body = await r.json(content_type=None)
            assert r.status == 201, (r.status, body)
            ticket_id: str = body["id"]
            return ticket_id

    return list(await asyncio.gather(*(one() for _ in range(n))))
