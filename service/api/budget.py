"""Budgets for the routes that cost a worker much (pages of up to 1,000 items, the whole
feed, /stats, signing and drawing QR codes): what one key may have in flight on this worker
at once, and what all keys may, in items read or the CPU of as many. A request over its
key's budget waits briefly for room, then gets 429, so that one key's reads cannot starve the
plain reads and scans of every other key on the same worker (issue 26: 200 pages of 1,000
from one key took a plain read from 2 ms to a second). Cheap routes (a ticket, a scan, a
create) have no budget. A route names its cost with `requires(..., cost=...)` (auth.py)."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from ..errors import OverBudget

# A request's cost, from the request: a page's `limit`, else a fixed weight.
Cost = Callable[[web.Request], int]

# What a route costs when its cost is not a page's size: about the CPU of reading as many
# items (a token is an Ed25519 signature, a QR code's PNG is drawn in Python).
TOKEN_COST, SVG_COST, PNG_COST, STATS_COST = 100, 200, 300, 1000


class Budget:
    """Expensive work in flight on this worker: per key, and in all. A request that does not
    fit waits, in order, up to `wait_s` for room (a flood of concurrent requests then waits
    instead of spinning the worker on refusals), and is refused after that."""

    def __init__(self, per_key: int, per_worker: int, wait_s: float = 1.0) -> None:
        self.per_key, self.per_worker, self.wait_s = per_key, per_worker, wait_s
        self._by_key: dict[str, int] = {}
        self._all = 0
        self._waiting: deque[tuple[str, int, asyncio.Future[None]]] = deque()

    def _fits(self, key: str, cost: int) -> bool:
        mine = self._by_key.get(key, 0)
        if mine + cost <= self.per_key and self._all + cost <= self.per_worker:
            return True
        return mine == 0 and self._all == 0  # dearer than the whole budget: it runs alone

    def _take(self, key: str, cost: int) -> None:
        self._by_key[key] = self._by_key.get(key, 0) + cost
        self._all += cost

    def _give(self, key: str, cost: int) -> None:
        self._all -= cost
        left = self._by_key[key] - cost
        if left:
            self._by_key[key] = left
        else:
            del self._by_key[key]
        for entry in list(self._waiting):  # the earliest waiters that fit now go in
            waiter_key, waiter_cost, granted = entry
            if not granted.done() and self._fits(waiter_key, waiter_cost):
                self._take(waiter_key, waiter_cost)
                granted.set_result(None)
            if granted.done():
                self._waiting.remove(entry)

    @asynccontextmanager
    async def hold(self, key: str, cost: int) -> AsyncIterator[None]:
        # A key with requests waiting queues behind them; another key is not held up by it.
        if any(k == key for k, _, _ in self._waiting) or not self._fits(key, cost):
            await self._wait(key, cost)
        else:
            self._take(key, cost)
        try:
            yield
        finally:
            self._give(key, cost)

    async def _wait(self, key: str, cost: int) -> None:
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (key, cost, granted)
        self._waiting.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(granted), self.wait_s)
        except TimeoutError:
            if not granted.done():
                raise OverBudget(key, self.per_key) from None
        except BaseException:  # cancelled (the client went away): give back what was granted
            if granted.done() and not granted.cancelled():
                self._give(key, cost)
            raise
        finally:
            if not granted.done():
                granted.cancel()
                self._waiting.remove(entry)


def page_cost(default: int) -> Cost:
    """A page costs the items it may read: its `limit` (a bad one is the handler's 400)."""

    def cost(request: web.Request) -> int:
        raw = request.query.get("limit", "")
        return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) <= 1000 else default

    return cost


def fixed(weight: int) -> Cost:
    return lambda request: weight
