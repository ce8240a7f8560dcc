"""Budgets of expensive work (service/api/budget.py): one key's pages, feed reads, tokens and QR
codes cannot starve a worker, and a worker that is merely busy is not reported as Redis being
down."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.budget import Budget
from service.errors import OverBudget, StoreUnavailable, WorkerBusy
from service.settings import Settings
from service.store.calls import Caller

from .conftest import AiohttpClient, Api


async def test_a_budget_holds_each_key_and_the_worker_to_its_share() -> None:
    budget = Budget(per_key=1000, per_worker=1500, wait_s=0)
    async with budget.hold("a", 600):
        with pytest.raises(OverBudget):
            async with budget.hold("a", 500):
                pass
        async with budget.hold("b", 900):
            with pytest.raises(OverBudget):  # the worker's share, though c has room
                async with budget.hold("c", 1):
                    pass
    async with budget.hold("a", 5000):  # dearer than the whole budget: runs, alone
        with pytest.raises(OverBudget):
            async with budget.hold("b", 1):
                pass
    async with budget.hold("a", 1000):  # everything held was given back
        pass


async def test_a_request_over_budget_waits_for_room_in_order_then_is_refused() -> None:
    budget = Budget(per_key=1000, per_worker=10_000, wait_s=5)
    order: list[str] = []
    release = asyncio.Event()

    async def held(name: str, key: str, cost: int) -> None:
        async with budget.hold(key, cost):
            order.append(name)
            await release.wait()

    first = asyncio.create_task(held("first", "a", 1000))
    while not order:  # it holds the key's whole budget
        await asyncio.sleep(0)
    later = [asyncio.create_task(held(f"later{i}", "a", 500)) for i in range(2)]
    other = asyncio.create_task(held("other key", "b", 1000))
    while len(order) < 2:  # another key is not held up by the first key's queue
        await asyncio.sleep(0)
    assert order == ["first", "other key"]
    release.set()
    await asyncio.gather(first, *later, other)
    assert order == ["first", "other key", "later0", "later1"]
    impatient = Budget(per_key=1000, per_worker=10_000, wait_s=0.05)
    async with impatient.hold("a", 1000):
        with pytest.raises(OverBudget):
            async with impatient.hold("a", 1):
                pass
    async with impatient.hold("a", 1000):  # the refused waiter left no trace
        pass


async def test_one_keys_pages_cannot_starve_a_worker(aiohttp_client: AiohttpClient, real_redis: Redis,
                                                     settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, budget_per_key=2000, budget_per_worker=8000, budget_wait_ms=0),
                     redis=real_redis)
    api = Api(await aiohttp_client(app))
    ticket = (await api.post("/ticket")).body["id"]
    pages = await asyncio.gather(*(api.get("/changes?limit=1000") for _ in range(30)))
    statuses = [p.status for p in pages]
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2
    refused = next(p for p in pages if p.status == 429)
    assert refused.body["type"].endswith("over-budget") and refused.headers["Retry-After"] == "1"
    # A plain read has no budget; and once the pages are answered, the budget is whole again.
    assert (await api.get(f"/ticket/{ticket}")).status == 200
    assert [p.status for p in await asyncio.gather(*(api.get("/changes?limit=1000") for _ in range(2)))] == [200, 200]


async def test_a_call_that_waits_for_a_busy_workers_connection_is_busy_not_redis_down() -> None:
    caller = Caller(timeout_ms=50, max_concurrent=1)
    release = asyncio.Event()
    holding = asyncio.Event()

    async def hold() -> None:
        async with caller.call("holder", extra_s=60):
            holding.set()
            await release.wait()

    holder = asyncio.create_task(hold())
    await holding.wait()
    with pytest.raises(WorkerBusy) as busy:
        async with caller.call("read"):
            pass
    assert not isinstance(busy.value, StoreUnavailable)
    release.set()
    await holder


async def test_a_burst_of_pages_from_one_key_waits_its_turn_rather_than_fail(
        aiohttp_client: AiohttpClient, real_redis: Redis, settings: Settings) -> None:
    app = create_app(dataclasses.replace(settings, budget_per_key=2000, budget_wait_ms=30_000), redis=real_redis)
    api = Api(await aiohttp_client(app))
    await api.post("/ticket")
    pages = await asyncio.gather(*(api.get("/changes?limit=1000") for _ in range(30)))
    assert [p.status for p in pages] == [200] * 30
