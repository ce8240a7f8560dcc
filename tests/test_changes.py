"""The event stream, exact stats, the change feed and the processor's step, against
fakeredis, a real redis-server and a Redis Cluster alike (trimming by MAXLEN ~: real Redis
only)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from typing import Any

import pytest
from redis.asyncio import Redis

from service.errors import FeedCursorExpired, StoreUnavailable, TransitionRefused
from service.models import (
    Change,
    ChangeType,
    Direction,
    EventSpec,
    IdempotencyKey,
    ListSpec,
    Origin,
    TicketSpec,
    Transition,
    new_ticket_id,
)
from service.processor import Processor, ProcessorSettings
from service.store import SHARDS, Store, StoreConfig, StreamConsumer, StreamEntry, keys
from service.store.consumer import CHANGES_PER_CALL
from service.store.consumer import _add_batch_entry as add_batch_entry
from service.store.consumer import _parts as consumer_parts
from service.store.entries import entry_changes, entry_size, stream_id_key


def gate(n: int) -> Origin:
    return Origin(actor=f"gate{n}", request_id=f"req-{n}", client_ip=f"10.0.0.{n}")


async def all_events(store: Store) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    cursor = None
    while True:
        page = await store.feed.changes_page(cursor, 7)
        if not page.changes:
            return out
        out.extend((e.ticket_id, e.type.value, e.actor) for e in page.changes)
        cursor = page.next_cursor


async def test_every_change_and_refusal_is_an_event_with_its_origin(store: Store) -> None:
    tid = (await store.tickets.create(origin=gate(1))).ticket.id
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(2))
    with pytest.raises(TransitionRefused):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=gate(3))
    await store.tickets.transition(tid, Transition.VALIDATE, origin=gate(4))
    page = await store.feed.changes_page(None, 100)
    assert [(e.type, e.actor) for e in page.changes] == [
        (ChangeType.CREATED, "gate1"), (ChangeType.INVALIDATED, "gate2"),
        (ChangeType.INVALIDATE_REFUSED, "gate3"), (ChangeType.VALIDATED, "gate4"),
    ]
    e = page.changes[1]
    assert (e.ticket_id, e.request_id, e.client_ip) == (tid, "req-2", "10.0.0.2")
    assert all(ev.timestamp >= page.changes[0].timestamp for ev in page.changes)


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
    whole = await store.feed.changes_page(None, 1000)
    assert paged == [(e.ticket_id, e.type.value, e.actor) for e in whole.changes]
    assert len(paged) == 45 and len(set(paged)) == 45
    ordered = [e.id for e in whole.changes]
    assert ordered == sorted(ordered, key=lambda i: tuple(map(int, i.split("-"))))
    # Polling from the end returns nothing new, then exactly what came after.
    end = whole.next_cursor
    assert (await store.feed.changes_page(end, 10)).changes == []
    await store.tickets.transition(ids[1], Transition.INVALIDATE, origin=gate(9))
    assert [(e.ticket_id, e.actor) for e in (await store.feed.changes_page(end, 10)).changes] == [(ids[1], "gate9")]


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
        (ChangeType.CREATED, "gate1"), (ChangeType.INVALIDATED, "gate2"),
        (ChangeType.INVALIDATE_REFUSED, "gate3"),
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
        assert [e.type for e in await store.tickets.history(tid)] == [ChangeType.CREATED]


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
    page = await store.feed.changes_page(None, 1)
    assert page.changes[0].ticket_id == first
    # MAXLEN ~ trims whole nodes; exact trimming makes the same gap deterministically.
    stream = keys.stream(keys.shard_of(first))
    await real_redis.xadd(stream, {"t": first, "e": "created", "ts": "1", "a": "x", "r": "", "ip": ""})
    await real_redis.xadd(stream, {"t": first, "e": "created", "ts": "1", "a": "x", "r": "", "ip": ""})
    await real_redis.xtrim(stream, maxlen=1, approximate=False)
    with pytest.raises(FeedCursorExpired):
        await store.feed.changes_page(page.next_cursor, 10)
    # From the start, a reader gets what the streams still hold.
    assert len((await store.feed.changes_page(None, 100)).changes) == 1


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


def box_office(n: int) -> Origin:
    return Origin(actor=f"box{n}", request_id=f"batch-{n}", client_ip="10.0.1.1", forwarded=True)


async def issue(store: Store, n: int, request: int, spec: TicketSpec | None = None) -> list[str]:
    made, _ = await store.tickets.issue_batch([spec or TicketSpec()] * n, origin=box_office(request))
    return [t.id for t in made]


async def stream_of(redis: Redis, ticket_id: str) -> list[tuple[str, dict[str, str]]]:
    return await redis.xrange(keys.stream(keys.shard_of(ticket_id)))  # type: ignore[return-value]


async def whole_feed(store: Store, limit: int = 1000) -> list[Change]:
    """Every event, page after page (a page holds about 2 * limit events spread over the
    shards: fewer than `limit` when they are all in one)."""
    out: list[Change] = []
    cursor = None
    while (page := await store.feed.changes_page(cursor, limit)).changes:
        out += page.changes
        cursor = page.next_cursor
    return out


async def test_a_batch_is_an_entry_per_hundred_tickets_and_an_event_per_ticket(store: Store, any_redis: Redis) -> None:
    ids = await issue(store, 250, 1)
    entries = await stream_of(any_redis, ids[0])
    assert [entry_size(f) for _, f in entries] == [100, 100, 50]
    events = await whole_feed(store)
    assert [e.ticket_id for e in events] == ids
    assert {(e.type, e.actor, e.request_id, e.client_ip) for e in events} == {
        (ChangeType.CREATED, "box1", "batch-1", "10.0.1.1")}
    # Each ticket's event has its own id, in order, and an entry's own id is its last event's.
    event_ids = [e.id for e in events]
    assert sorted(event_ids, key=stream_id_key) == event_ids and len(set(event_ids)) == 250
    assert [event_ids[99], event_ids[199], event_ids[249]] == [eid for eid, _ in entries]
    # A write after the batch, in its shard, has an id after every one of the batch's events.
    await store.tickets.transition(ids[0], Transition.INVALIDATE, origin=gate(1))
    last = (await stream_of(any_redis, ids[0]))[-1][0]
    assert stream_id_key(last) > stream_id_key(event_ids[-1])


async def test_feed_pages_cross_batch_entries_without_gaps_or_repeats(store: Store) -> None:
    event = await store.tickets.create_event(EventSpec("Pages"))
    spec = TicketSpec(event=event.id)
    first = await issue(store, 230, 2, spec)
    await store.tickets.transition(first[5], Transition.INVALIDATE, origin=gate(3))
    second = await issue(store, 120, 4, spec)
    single = (await store.tickets.create(spec=spec, origin=gate(5))).ticket.id
    paged = await all_events(store)  # pages of 7: most end inside an entry of 100
    assert [t for t, _, _ in paged] == [*first, first[5], *second, single]
    assert [a for _, _, a in paged] == ["box2"] * 230 + ["gate3"] + ["box4"] * 120 + ["gate5"]
    # The event's own change feed, in pages of 40, from a cursor inside an entry on.
    seen: list[str] = []
    cursor = None
    while (page := await store.feed.event_changes(cursor, event.id, 40)).changes:
        seen += [e.ticket_id for e in page.changes]
        cursor = page.next_cursor
    assert seen == [t for t, _, _ in paged]


async def test_the_processor_records_each_ticket_of_a_batch_entry_once(store: Store) -> None:
    ids = await issue(store, 300, 6)
    await store.consumer.ensure_group()
    entries = await store.consumer.read_new("c1", 100)
    assert len(entries) == 3
    assert await store.consumer.apply(entries) == 300
    assert await store.consumer.apply(entries) == 0  # delivered twice: counted once
    feed = {e.ticket_id: e.id for e in await whole_feed(store)}
    for tid in [*ids[::37], ids[-1]]:
        [recorded] = await store.tickets.history(tid)
        assert (recorded.type, recorded.id, recorded.actor) == (ChangeType.CREATED, feed[tid], "box6")
    assert (await store.tickets.stats()).processed["created"] == 300
    assert await store.consumer.lag() == 0


def test_a_processor_call_holds_whole_entries_of_at_most_so_many_events() -> None:
    def entry(n: int) -> StreamEntry:
        fields = {"t": "x"} if n == 1 else {"ids": ",".join("x" * n)}
        return StreamEntry("00", "1-0", fields)

    entries = [entry(100), entry(100), entry(1), entry(100), entry(1), entry(300), entry(1)]
    parts = [[entry_size(e.fields) for e in part] for part in consumer_parts(entries)]
    assert parts == [[100, 100, 1], [100, 1], [300], [1]]
    assert all(sum(p) <= CHANGES_PER_CALL or len(p) == 1 for p in parts)


async def test_the_streams_cap_counts_each_ticket_of_a_batch_entry(any_redis: Redis) -> None:
    store = Store(any_redis, StoreConfig(replay_ttl_s=60, events_maxlen=300))
    event = await store.tickets.create_event(EventSpec("Capped"))
    spec = TicketSpec(event=event.id)
    batches = [await issue(store, 100, 10 + n, spec) for n in range(3)]
    cursor = (await store.feed.event_changes(None, event.id, 150)).next_cursor  # inside the second batch
    await store.tickets.create(spec=spec, origin=gate(1))
    batches += [await issue(store, 100, 20 + n, spec) for n in range(2)]
    entries = await stream_of(any_redis, batches[0][0])
    assert sum(entry_size(f) for _, f in entries) <= 300
    # What was trimmed is the oldest, whole entries: the newest batches are all there.
    held = [e.ticket_id for e in (await store.feed.event_changes(None, event.id, 1000)).changes]
    assert held[-200:] == batches[3] + batches[4] and len(held) >= 201
    with pytest.raises(FeedCursorExpired):  # the cursor's entry is gone
        await store.feed.event_changes(cursor, event.id, 10)


def test_a_batch_entrys_events_are_recorded_as_entry_events_gives_them() -> None:
    ids = [new_ticket_id() for _ in range(40)]
    shard = keys.shard_of(ids[0])
    ids = [keys.in_shard(t, shard) for t in ids]
    fields = {"ids": ",".join(ids), "e": "created", "ts": "1796168120635123", "a": "box \"1\"",
              "r": "req", "ip": "10.0.0.1"}
    script_keys: list[str] = []
    args: list[Any] = []
    add_batch_entry(shard, StreamEntry(shard, "1796168120635-44", fields), script_keys, args)
    made = [(a[0], a[1], json.loads(a[2]), script_keys[a[3] - 1], a[4], a[5])
            for a in zip(*[iter(args)] * 6, strict=True)]
    assert made == [(eid, f["e"], dict(f), keys.history(f["t"]), "", 0)  # a creation: no device, no scan log
                    for eid, f in entry_changes("1796168120635-44", fields)]
    assert made[0][0] == "1796168120635-5" and made[-1][0] == "1796168120635-44"
    # An entry batch.lua did not make (a ticket of another shard) is recorded without a history.
    other = keys.in_shard(new_ticket_id(), SHARDS[(SHARDS.index(shard) + 1) % len(SHARDS)])
    args = []
    add_batch_entry(shard, StreamEntry(shard, "5-1", {**fields, "ids": f"{ids[0]},{other}"}), [], args)
    assert args[3::6] == [0, 0] and [json.loads(b)["t"] for b in args[2::6]] == [ids[0], other]


async def test_a_batch_takes_ids_after_the_streams_last_even_when_that_entry_is_gone(
    store: Store, any_redis: Redis
) -> None:
    event = await store.tickets.create_event(EventSpec("Ids"))
    spec = TicketSpec(event=event.id)
    stream = keys.stream(keys.shard_of(event.id))
    ahead = f"{int(time.time() * 1000) + 3_600_000}-7"  # a clock that ran ahead, then came back
    await any_redis.xadd(stream, {"t": "x", "e": "created", "ts": "1", "a": "x", "r": "", "ip": ""}, id=ahead)
    await any_redis.xdel(stream, ahead)
    ids = await issue(store, 150, 30, spec)
    changes = (await store.feed.event_changes(None, event.id, 1000)).changes
    assert [e.ticket_id for e in changes] == ids
    assert stream_id_key(changes[0].id) == (stream_id_key(ahead)[0], 8)


async def test_a_feed_read_takes_the_entries_its_events_need_not_a_count_of_entries(store: Store) -> None:
    event = await store.tickets.create_event(EventSpec("Read"))
    await issue(store, 500, 40, TicketSpec(event=event.id))
    stream = keys.stream(keys.shard_of(event.id))

    async def read(start: str, want: int) -> tuple[int, list[int]]:
        have, *entries = await store.link.run("events", store.link.scripts.feed, [stream], [start, want])
        return have, [entry_size(dict(zip(f[::2], f[1::2], strict=True))) for _, f in entries]

    assert await read("-", 150) == (200, [100, 100])
    ids = [e.id for e in (await store.feed.event_changes(None, event.id, 500)).changes]
    assert await read(ids[129], 100) == (170, [100, 100])  # the position's entry, 70 after it
    assert await read(ids[199], 1) == (100, [100, 100])  # the position is its entry's last
    assert await read(ids[450], 1000) == (49, [100])  # the end of the stream


async def test_lag_is_what_is_left_even_after_entries_were_trimmed_unread(real_redis: Redis) -> None:
    """Redis 7.0 counts entries trimmed before the group read them in its `lag` for good
    (redis/redis#13957): the processor's lag, and the bench's wait for it, would never end."""
    store = Store(real_redis, StoreConfig(replay_ttl_s=60, events_maxlen=10_000))
    event = await store.tickets.create_event(EventSpec("Lag"))
    for _ in range(5):
        await store.tickets.create(spec=TicketSpec(event=event.id))
    stream = keys.stream(keys.shard_of(event.id))
    await store.consumer.ensure_group()
    await store.consumer.apply(await store.consumer.read_new("c1", 1))
    assert await store.consumer.lag() == 4
    await real_redis.xtrim(stream, maxlen=1, approximate=False)  # three of them gone unread
    rest = await store.consumer.read_new("c1", 10)
    assert len(rest) == 1 and await store.consumer.lag() == 1  # delivered, not yet acknowledged
    await store.consumer.apply(rest)
    assert await store.consumer.lag() == 0
    [group] = await real_redis.xinfo_groups(stream)
    assert group["lag"] > 0  # what Redis itself says


async def test_a_batch_trims_just_the_oldest_events_the_cap_needs(any_redis: Redis) -> None:
    store = Store(any_redis, StoreConfig(replay_ttl_s=60, events_maxlen=300))
    event = await store.tickets.create_event(EventSpec("Exact"))
    spec = TicketSpec(event=event.id)
    singles = [(await store.tickets.create(spec=spec)).ticket.id for _ in range(150)]
    first = await issue(store, 100, 50, spec)
    second = await issue(store, 100, 51, spec)  # 350 events: the 50 oldest singles go

    async def held() -> list[str]:
        return [e.ticket_id for e in (await store.feed.event_changes(None, event.id, 1000)).changes]

    assert await held() == singles[50:] + first + second
    third = await issue(store, 120, 52, spec)  # 420: the other singles, then the first batch
    assert await held() == second + third
    entries = await stream_of(any_redis, first[0])
    assert sum(entry_size(f) for _, f in entries) == 220 == len(await held())


async def test_a_scan_of_an_id_nobody_issued_leaves_no_history(store: Store) -> None:
    """Scans of made-up ids are counted and stay in the feed, but write no history: one that
    no read shows and nothing trims would let anyone grow Redis without bound."""
    event = await store.tickets.create_event(EventSpec("Gala"))
    gate_list = await store.checkin.create_list(event.id, ListSpec("Gate"))
    made_up = [new_ticket_id(event.id), new_ticket_id("0badf00d"), new_ticket_id()]
    for n, ticket_id in enumerate(made_up):
        result, _ = await store.checkin.checkin(ticket_id, gate_list.id, Direction.ENTRY, origin=gate(n))
        assert result.reason is not None and result.reason.value == "unknown_ticket"
    await store.consumer.ensure_group()
    assert await store.consumer.apply(await store.consumer.read_new("c1", 1600)) == 3
    assert [await store.redis.exists(keys.history(t)) for t in made_up] == [0, 0, 0]
    assert (await store.tickets.stats()).processed["checkin_refused"] == 3
    assert await store.consumer.lag() == 0
