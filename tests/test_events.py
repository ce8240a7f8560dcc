"""The event stream, exact stats, the change feed and the processor's step, against
fakeredis and a real redis-server alike (trimming: real Redis only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from service.errors import FeedCursorExpired, StoreUnavailable, TransitionRefused
from service.models import EventSpec, EventType, IdempotencyKey, Origin, TicketSpec, Transition
from service.processor import Processor, ProcessorSettings
from service.store import SHARDS, Store, StoreConfig, StreamConsumer, StreamEntry, keys


@pytest.fixture
def store(any_redis: Redis) -> Store:
    return Store(any_redis, StoreConfig(replay_ttl_s=60, events_maxlen=10_000))


def gate(n: int) -> Origin:
    return Origin(actor=f"gate{n}", request_id=f"req-{n}", client_ip=f"10.0.0.{n}")


async def all_events(store: Store) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    cursor = None
    while True:
        page = await store.feed.events_page(cursor, 7)
        if not page.events:
            return out
        out.extend((e.ticket_id, e.type.value, e.actor) for e in page.events)
        cursor = page.next_cursor


async def test_every_change_and_refusal_is_an_event_with_its_origin(store: Store) -> None:
    tid = (await store.tickets.create(origin=gate(1))).ticket.id
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(2))
    with pytest.raises(TransitionRefused):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(3))
    await store.tickets.transition(tid, Transition.VALIDATE, origin=gate(4))
    page = await store.feed.events_page(None, 100)
    assert [(e.type, e.actor) for e in page.events] == [
        (EventType.CREATED, "gate1"), (EventType.INVALIDATED, "gate2"),
        (EventType.INVALIDATE_REFUSED, "gate3"), (EventType.VALIDATED, "gate4"),
    ]
    e = page.events[1]
    assert (e.ticket_id, e.request_id, e.client_ip) == (tid, "req-2", "10.0.0.2")
    assert all(ev.timestamp >= page.events[0].timestamp for ev in page.events)


async def test_replays_add_no_event_and_no_count(store: Store) -> None:
    key = IdempotencyKey("gate1", "k")
    tid = (await store.tickets.create(idempotency=key)).ticket.id
    await store.tickets.create(idempotency=key)
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(1))
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(1))
    assert [t for _, t, _ in await all_events(store)] == ["created", "invalidated"]
    s = await store.tickets.stats()
    assert (s.total, s.valid, s.invalid, s.refused) == (1, 0, 1, 0)


async def test_stats_are_exact(store: Store) -> None:
    ids = [(await store.tickets.create()).ticket.id for _ in range(20)]
    for tid in ids[:8]:
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(1))
    for tid in ids[:3]:
        with pytest.raises(TransitionRefused):
            await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(2))
    await store.tickets.transition(ids[0], Transition.VALIDATE, origin=gate(3))
    s = await store.tickets.stats()
    assert (s.total, s.valid, s.invalid, s.refused) == (20, 13, 7, 3)


async def test_feed_pages_equal_the_full_ordered_list(store: Store) -> None:
    ids = [(await store.tickets.create()).ticket.id for _ in range(30)]
    for tid in ids[::2]:
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(1))
    paged = await all_events(store)
    whole = await store.feed.events_page(None, 1000)
    assert paged == [(e.ticket_id, e.type.value, e.actor) for e in whole.events]
    assert len(paged) == 45 and len(set(paged)) == 45
    ordered = [e.id for e in whole.events]
    assert ordered == sorted(ordered, key=lambda i: tuple(map(int, i.split("-"))))
    # Polling from the end returns nothing new, then exactly what came after.
    end = whole.next_cursor
    assert (await store.feed.events_page(end, 10)).events == []
    await store.tickets.transition(ids[1], Transition.INVALIDATE, origin=gate(9))
    assert [(e.ticket_id, e.actor) for e in (await store.feed.events_page(end, 10)).events] == [(ids[1], "gate9")]


async def test_processor_records_history_and_counts_once(store: Store) -> None:
    tid = (await store.tickets.create(origin=gate(1))).ticket.id
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(2))
    with pytest.raises(TransitionRefused):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(3))
    await store.consumer.ensure_group()
    entries = await store.consumer.read_new("c1", 1600)
    assert await store.consumer.apply(entries) == 3
    assert await store.consumer.apply(entries) == 0  # delivered twice: counted once
    history = await store.tickets.history(tid)
    assert [(e.type, e.actor) for e in history] == [
        (EventType.CREATED, "gate1"), (EventType.INVALIDATED, "gate2"),
        (EventType.INVALIDATE_REFUSED, "gate3"),
    ]
    s = await store.tickets.stats()
    assert s.processed["created"] == 1 and s.processed["invalidate_refused"] == 1
    assert await store.consumer.lag() == 0


async def test_crash_mid_batch_then_claim_loses_and_doubles_nothing(store: Store) -> None:
    ids = [(await store.tickets.create()).ticket.id for _ in range(40)]
    await store.consumer.ensure_group()
    batch = await store.consumer.read_new("dead", 1600)
    assert len(batch) == 40
    await store.consumer.apply(batch[:15])  # then the consumer dies: 25 delivered, never acked
    assert await store.consumer.lag() == 25
    survivor = Processor(store.consumer, ProcessorSettings(consumer="alive", claim_idle_ms=0))
    assert await survivor.step() == 25
    assert await survivor.step() == 0
    s = await store.tickets.stats()
    assert s.processed["created"] == 40 and await store.consumer.lag() == 0
    for tid in ids:
        assert [e.type for e in await store.tickets.history(tid)] == [EventType.CREATED]


class FailsOnce(StreamConsumer):
    """A consumer whose first apply meets a Redis outage after the batch was delivered."""

    failed = False

    async def apply(self, entries: Sequence[StreamEntry]) -> int:
        if not self.failed:
            self.failed = True
            raise StoreUnavailable("connection refused")
        return await super().apply(entries)


async def test_after_an_outage_the_processor_takes_up_its_own_pending_at_once(any_redis: Redis) -> None:
    store = Store(any_redis)
    for _ in range(30):
        await store.tickets.create()
    consumer = FailsOnce(store.link)
    # Claiming never helps here (an hour's idle time): only its own pending can be taken up.
    cfg = ProcessorSettings(consumer="p1", claim_idle_ms=3_600_000, poll_ms=1, retry_s=0.01)
    stop = asyncio.Event()
    running = asyncio.create_task(Processor(consumer, cfg).run(stop))
    try:
        async with asyncio.timeout(10):
            while (await store.tickets.stats()).processed["created"] < 30:
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await running
    assert consumer.failed and await store.consumer.lag() == 0


async def test_processor_resumes_its_own_pending_under_the_same_name(store: Store) -> None:
    for _ in range(10):
        await store.tickets.create()
    await store.consumer.ensure_group()
    batch = await store.consumer.read_new("p1", 1600)
    await store.consumer.apply(batch[:4])
    again = await store.consumer.read_own_pending("p1", 100)
    assert len(again) == 6
    assert await store.consumer.apply(again) == 6
    assert (await store.tickets.stats()).processed["created"] == 10


async def test_history_of_unknown_ticket_is_not_found(store: Store) -> None:
    from service.errors import TicketNotFound

    with pytest.raises(TicketNotFound):
        await store.tickets.history("0" * 8 + "-0000-4000-8000-" + "0" * 12)


async def test_trimmed_feed_cursor_expires(real_redis: Redis) -> None:
    store = Store(real_redis, StoreConfig(replay_ttl_s=60, events_maxlen=1))
    first = (await store.tickets.create(ticket_id="a" + "0" * 7 + "-0000-4000-8000-" + "0" * 12)).ticket.id
    page = await store.feed.events_page(None, 1)
    assert page.events[0].ticket_id == first
    # MAXLEN ~ trims whole nodes; exact trimming makes the same gap deterministically.
    stream = keys.stream(keys.shard_of(first))
    await real_redis.xadd(stream, {"t": first, "e": "created", "ts": "1", "a": "x", "r": "", "ip": ""})
    await real_redis.xadd(stream, {"t": first, "e": "created", "ts": "1", "a": "x", "r": "", "ip": ""})
    await real_redis.xtrim(stream, maxlen=1, approximate=False)
    with pytest.raises(FeedCursorExpired):
        await store.feed.events_page(page.next_cursor, 10)
    # From the start, a reader gets what the streams still hold.
    assert len((await store.feed.events_page(None, 100)).events) == 1


async def test_a_rush_at_one_event_is_read_a_whole_batch_at_a_time(store: Store) -> None:
    """An event's activity is all in its shard: the processor's batch is not split evenly
    over the shards, or one busy event would be read a 64th of a batch at a time."""
    event = await store.tickets.create_event(EventSpec("Rush"))
    await store.tickets.create_batch(100, spec=TicketSpec(event=event.id))
    await store.consumer.ensure_group()
    assert len(await store.consumer.read_new("c1", 64)) == 64


class CountingConsumer(StreamConsumer):
    """Records which shards each read asks."""

    def __init__(self, link: Any) -> None:
        super().__init__(link)
        self.reads: list[int] = []

    async def read_new(self, consumer: str, count: int, shards: Sequence[str] = SHARDS) -> list[StreamEntry]:
        self.reads.append(len(shards))
        return await super().read_new(consumer, count, shards)


async def test_a_rush_at_one_event_is_read_from_its_shard_alone_between_sweeps(store: Store) -> None:
    rush = await store.tickets.create_event(EventSpec("Rush"))
    consumer = CountingConsumer(store.link)
    processor = Processor(consumer, ProcessorSettings(consumer="p1", poll_ms=3_600_000, claim_idle_ms=3_600_000))
    await consumer.ensure_group()
    processor._next_claim_at = float("inf")  # this test is about reads only
    await store.tickets.create_batch(10, spec=TicketSpec(event=rush.id))
    assert await processor.step() == 10 and consumer.reads == [64]  # the first read sweeps every shard
    await store.tickets.create_batch(10, spec=TicketSpec(event=rush.id))
    other = await store.tickets.create_event(EventSpec("Elsewhere"))
    while keys.shard_of(other.id) == keys.shard_of(rush.id):
        other = await store.tickets.create_event(EventSpec("Elsewhere"))
    await store.tickets.create_batch(3, spec=TicketSpec(event=other.id))
    assert await processor.step() == 10 and consumer.reads[-1] == 1  # the hot shard only
    processor._next_sweep_at = 0.0  # a sweep is due: the other shard's entries come too
    assert await processor.step() == 3 and consumer.reads[-1] == 64
