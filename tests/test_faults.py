"""Faults against real processes (redis-server, gunicorn replicas, nginx), under load.
Each test prints a line `FAULT <name>: sent=.. failed=.. lost=..` for the record."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tooling.procs import wait_until
from tooling.stack import LocalStack

from .conftest import MakeStack
from .load import MixedLoad, Outcome, make_tickets, tally

pytestmark = pytest.mark.e2e



@pytest.fixture
def stack(make_stack: MakeStack) -> Iterator[LocalStack]:
    """A stack of each test's own: the tests kill its processes."""
    s = make_stack("faults")
    yield s
    s.stop()


async def lost_writes(http: aiohttp.ClientSession, base: str, outcomes: list[Outcome]) -> int:
    """Acknowledged writes that Redis no longer shows: a 201 whose ticket is gone, or a 200
    invalidation whose ticket is valid again."""
    created = {o.ticket_id for o in outcomes if o.op == "create" and o.status == 201}
    invalidated = {o.ticket_id for o in outcomes if o.op == "invalidate" and o.status == 200}
    lost = 0
    for tid in created | invalidated:
        async with http.get(f"{base}/ticket/{tid}") as r:
            body = await r.json()
            if r.status != 200 or (tid in invalidated and body["valid"]):
                lost += 1
    return lost


def record(name: str, outcomes: list[Outcome], lost: int, **extra: object) -> None:
    failed = sum(1 for o in outcomes if o.status not in (200, 201))
    print(f"\nFAULT {name}: sent={len(outcomes)} failed={failed} lost={lost} "
          f"by_op={json.dumps(tally(outcomes))} {json.dumps(extra)}")


async def test_redis_killed_then_restarted_from_aof(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    to_invalidate = await make_tickets(http, stack.url, 2000)
    load = MixedLoad(http, stack.url, read_ids=[], to_invalidate=to_invalidate, ops=("create", "create", "invalidate"))
    workers_before = [stack.worker_pids(i) for i in range(stack.cfg.replicas)]
    load.start(clients=4)
    await load.more(300)
    killed_at = time.monotonic()
    stack.kill_redis(signal.SIGKILL)
    await load.more(200)
    restart_at = time.monotonic()
    await asyncio.to_thread(stack.start_redis)  # returns once Redis answers PING
    back_at = time.monotonic()
    await asyncio.to_thread(
        wait_until, lambda: any(o.status == 201 and o.started > back_at for o in load.outcomes),
        5.0, "a create to succeed after Redis came back",
    )
    await load.started_after(back_at + 2.0)
    outcomes = await load.stop()

    during = [o for o in outcomes if killed_at < o.started and o.started + o.elapsed_s < restart_at]
    assert during and all(o.status == 503 and o.retry_after == "1" for o in during)
    assert max(o.elapsed_s for o in during) < 1.0, "503s must be fast"
    first_ok = min(o.started + o.elapsed_s for o in outcomes if o.status == 201 and o.started > back_at)
    assert first_ok - back_at < 2.0
    settled = [o for o in outcomes if o.started > back_at + 2.0]
    assert settled and all(o.status in (200, 201) for o in settled)
    assert [stack.worker_pids(i) for i in range(stack.cfg.replicas)] == workers_before
    lost = await lost_writes(http, stack.url, outcomes)
    record("redis-killed", outcomes, lost, outage_503s=len(during),
           recovered_s=round(first_ok - back_at, 3))
    assert lost == 0


@pytest.fixture
async def mixed_load(stack: LocalStack, http: aiohttp.ClientSession) -> MixedLoad:
    """Creates, reads of 50 tickets, and invalidations of 4,000 fresh ones, running."""
    read_ids = await make_tickets(http, stack.url, 50)
    to_invalidate = await make_tickets(http, stack.url, 4000)
    load = MixedLoad(http, stack.url, read_ids, to_invalidate)
    load.start()
    return load


async def test_replica_killed_under_mixed_load(
    stack: LocalStack, http: aiohttp.ClientSession, mixed_load: MixedLoad
) -> None:
    load = mixed_load
    await load.more(600)
    stack.kill_replica(1, signal.SIGKILL)
    await load.more(600)
    await asyncio.to_thread(stack.start_replica, 1)
    await load.more(600)
    outcomes = await load.stop()

    gets = [o for o in outcomes if o.op == "get"]
    assert gets and all(o.status == 200 for o in gets)
    invalidations = [o for o in outcomes if o.op == "invalidate"]
    # One request per ticket: a 409 would be a false refusal, a transition reported wrongly.
    assert not [o for o in invalidations if o.status == 409]
    lost = await lost_writes(http, stack.url, outcomes)
    record("replica-killed", outcomes, lost)
    assert lost == 0
    # Every invalidated ticket is invalid exactly once: its one request got the one 200.
    won = [o.ticket_id for o in invalidations if o.status == 200]
    assert len(won) == len(set(won))


async def test_rolling_restart_fails_nothing(
    stack: LocalStack, http: aiohttp.ClientSession, mixed_load: MixedLoad
) -> None:
    load = mixed_load
    await load.more(400)
    for i in range(stack.cfg.replicas):
        await asyncio.to_thread(stack.kill_replica, i, signal.SIGTERM)
        await load.more(300)
        await asyncio.to_thread(stack.start_replica, i)
        await load.more(300)
    outcomes = await load.stop()
    lost = await lost_writes(http, stack.url, outcomes)
    record("rolling-restart", outcomes, lost)
    assert {o.status for o in outcomes} <= {200, 201}, tally(outcomes)
    assert lost == 0


async def test_a_stalled_replica_holds_a_request_for_at_most_the_read_timeout(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    """SIGSTOP one replica (a stall: the port still accepts, nothing answers) under reads:
    nginx gives up on each request it sent there after proxy_read_timeout (3 s) and re-sends
    it to the other. (With max_fails=0 it keeps sending the stalled one its share.)"""
    load = MixedLoad(http, stack.url, await make_tickets(http, stack.url, 20), [], ops=("get",))
    load.start(clients=4)
    await load.more(200)
    proc = stack.replicas[1]
    assert proc is not None
    os.killpg(proc.pid, signal.SIGSTOP)
    stalled_at = time.monotonic()
    try:
        await load.started_after(stalled_at + 3.5, count=20)
    finally:
        os.killpg(proc.pid, signal.SIGCONT)
    await load.more(200)
    outcomes = await load.stop()
    assert {o.status for o in outcomes} == {200}, tally(outcomes)
    held = max(o.elapsed_s for o in outcomes)
    record("replica-stalled", outcomes, 0, longest_s=round(held, 3))
    assert 2.5 < held < 4.5
