"""Budgets for the routes that cost a worker much (pages of up to 1,000 items, the whole
feed, /stats, signing and drawing QR codes): what one key may have in flight on this worker
at once, and what all keys may, in items read or the CPU of as many. A key over its budget
gets 429 at once, so that one key's reads cannot starve the plain reads and scans of every
other key on the same worker (issue 26: 200 pages of 1,000 from one key took a plain read
from 2 ms to a second). Cheap routes (a ticket, a scan, a create) have no budget. A route names its cost with
`requires(..., cost=...)` (service/auth.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from aiohttp import web

from .errors import OverBudget

# A request's cost, from the request: a page's `limit`, else a fixed weight.
Cost = Callable[[web.Request], int]

# What a route costs when its cost is not a page's size: about the CPU of reading as many
# items (a token is an Ed25519 signature, a QR code's PNG is drawn in Python).
TOKEN_COST, SVG_COST, PNG_COST, STATS_COST = 100, 200, 300, 1000


class Budget:
    """Expensive work in flight on this worker: per key, and in all."""

    def __init__(self, per_key: int, per_worker: int) -> None:
        self.per_key, self.per_worker = per_key, per_worker
        self._by_key: dict[str, int] = {}
        self._all = 0

    @contextmanager
    def hold(self, key: str, cost: int) -> Iterator[None]:
        mine = self._by_key.get(key, 0)
        if mine + cost > self.per_key or self._all + cost > self.per_worker:
            # A single request dearer than the whole budget still runs alone.
            if mine or self._all:
                raise OverBudget(key, self.per_key if mine + cost > self.per_key else self.per_worker)
        self._by_key[key] = mine + cost
        self._all += cost
        try:
            yield
        finally:
            self._all -= cost
            left = self._by_key[key] - cost
            if left:
                self._by_key[key] = left
            else:
                del self._by_key[key]


def page_cost(default: int) -> Cost:
    """A page costs the items it may read: its `limit` (a bad one is the handler's 400)."""

    def cost(request: web.Request) -> int:
        raw = request.query.get("limit", "")
        return int(raw) if raw.isascii() and raw.isdigit() and 0 < int(raw) <= 1000 else default

    return cost


def fixed(weight: int) -> Cost:
    return lambda request: weight
