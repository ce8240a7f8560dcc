"""The migrations from earlier layouts to the current one: from the first (16 shards, tags of
one hex digit), on a real redis-server, and from ticket hashes under the former prefix `tkt:`,
on a real redis-server and a real Cluster. Data is made by the current code, moved back into
the old layout key by key (as the old code wrote it), then migrated: every view the API gives
must be what it was."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from redis.asyncio import Redis

from service.errors import TicketNotFound
from service.models import EventSpec, Origin, TicketSpec, Transition
from service.store import SHARDS, Store, keys
from service.store.link import Client
from service.store.migrate import OLD_SHARDS, OLD_TICKET, NotCaughtUp, migrate, old_layout_present
from service.store.migrate import main as migrate_main
from tooling.procs import RedisServer


def _old_tag(tag: str) -> str:
    return OLD_SHARDS[keys.SHARD_INDEX[tag] // 4]


async def downgrade(redis: Redis) -> None:
    """Rewrite every key the way the 16-shard code named it."""
    async for key in redis.scan_iter(match="*{??}*"):
        kind, tag, rest = key.split("{")[0].rstrip(":"), key[key.index("{") + 1: key.index("}")], key.split("}", 1)[1]
        old = f"{kind}:{{{_old_tag(tag)}}}{rest}"
        kind_type = await redis.type(key)
        if kind in ("tickets", "evts"):
            await redis.sadd(old, *await redis.smembers(key))
            await redis.delete(key)
        elif kind in ("stats", "processed"):
            for name, n in (await redis.hgetall(key)).items():
                await redis.hincrby(old, name, int(n))
            await redis.delete(key)
        elif kind == "events" and kind_type == "stream":
            continue  # merged below, in id order
        else:
            await redis.rename(key, old if kind != keys.TICKET else OLD_TICKET + old[len(kind):])
    for old_tag in OLD_SHARDS:
        entries: list[tuple[tuple[int, int], str, dict[str, str]]] = []
        for tag in SHARDS:
            if _old_tag(tag) == old_tag:
                stream: Any = await redis.xrange(keys.stream(tag))
                for eid, fields in stream:
                    ms, seq = eid.split("-")
                    entries.append(((int(ms), int(seq)), eid, fields))
                await redis.delete(keys.stream(tag))
        entries.sort(key=lambda e: e[0])
        last = (0, 0)
        for (ms, seq), _, fields in entries:  # one stream: ids strictly increasing, as Redis made them
            last = (ms, seq) if (ms, seq) > last else (last[0], last[1] + 1)
            await redis.xadd(f"events:{{{old_tag}}}", dict(fields), id=f"{last[0]}-{last[1]}")  # type: ignore[arg-type]
        if entries:
            await redis.xgroup_create(f"events:{{{old_tag}}}", keys.PROCESSOR_GROUP, id=f"{last[0]}-{last[1]}")


async def views(store: Store, ids: list[str]) -> dict[str, Any]:
    listed: list[str] = []
    cursor = None
    while True:
        page = await store.feed.list_page(cursor, 50)
        listed += [t.id for t in page.tickets]
        if (cursor := page.next_cursor) is None:
            break
    feed = (await store.feed.changes_page(None, 10_000)).changes
    return {
        "tickets": [await store.tickets.get(t) for t in ids],
        # Entry ids may differ: the old layout's one stream per 4 new ones numbered them anew.
        "history": [[e.type for e in await store.tickets.history(t)] for t in ids],
        "stats": await store.tickets.stats(), "listed": sorted(listed),
        "feed": sorted((e.ticket_id, e.type, e.timestamp) for e in feed),
        "events": sorted(e.id for e in (await store.feed.event_page(None, 100)).events),
    }


async def made_and_recorded(
    redis: Client, name: str, plain: int, of_event: int, used: int
) -> tuple[Store, list[str], dict[str, Any]]:
    """Tickets of the default event and of an event, the first `used` of them used, all
    recorded by the processor: (the store, their ids, every view of them)."""
    store = Store(redis)
    event = await store.tickets.create_event(EventSpec(name, capacity=100))
    ids = [t.id for t in await store.tickets.create_batch(plain)]
    ids += [t.id for t in await store.tickets.create_batch(of_event, spec=TicketSpec(event=event.id))]
    for n, tid in enumerate(ids[:used]):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id=f"r{n}"))
    await store.consumer.ensure_group()
    while entries := await store.consumer.read_new("p", 500):
        await store.consumer.apply(entries)
    return store, ids, await views(store, ids)


async def test_the_16_shard_layout_migrates_with_nothing_lost(real_redis: Redis) -> None:
    store, ids, before = await made_and_recorded(real_redis, "Old times", 120, 30, 50)

    await downgrade(real_redis)
    assert await old_layout_present(real_redis)
    with pytest.raises(TicketNotFound):
        await store.tickets.get(ids[0])
    report = await migrate(real_redis)

    assert not await old_layout_present(real_redis)
    assert report.renamed["tkt"] == 150 and report.stream_entries == 150 + 50 + 1 - 1
    assert await views(store, ids) == before
    # The processor's group starts after the copied entries: nothing is processed twice.
    await store.consumer.ensure_group()  # as the processor does when it starts
    assert await store.consumer.read_new("p", 500) == [] and await store.consumer.lag() == 0
    kinds = Counter([k.split(":")[0] async for k in real_redis.scan_iter()])
    assert kinds[keys.TICKET] == 150 and kinds[OLD_TICKET] == 0 and kinds["history"] == 150


async def test_it_refuses_while_the_processor_is_behind(real_redis: Redis) -> None:
    store = Store(real_redis)
    await store.consumer.ensure_group()
    await store.tickets.create_batch(5)
    await downgrade(real_redis)
    # downgrade() set the group past every entry; make one unprocessed again.
    old_tag = [t for t in OLD_SHARDS if await real_redis.exists(f"events:{{{t}}}")][0]
    await real_redis.xgroup_setid(f"events:{{{old_tag}}}", keys.PROCESSOR_GROUP, id="0")
    with pytest.raises(NotCaughtUp):
        await migrate(real_redis)


async def _made_with_the_old_prefix(redis: Client) -> tuple[Store, list[str], dict[str, Any]]:
    """Tickets of both kinds, some used, recorded; then their hashes renamed to `tkt:`."""
    store, ids, before = await made_and_recorded(redis, "Before the rename", 90, 20, 30)
    for tid in ids:
        await redis.rename(keys.ticket(tid), f"{OLD_TICKET}:{{{keys.shard_of(tid)}}}:{tid}")
    return store, ids, before


@pytest.fixture(params=["real_redis", "cluster_redis"])
def redis_or_cluster(request: pytest.FixtureRequest) -> Client:
    client: Client = request.getfixturevalue(request.param)
    return client


async def test_ticket_hashes_of_the_former_prefix_are_renamed_with_nothing_lost(redis_or_cluster: Client) -> None:
    store, ids, before = await _made_with_the_old_prefix(redis_or_cluster)
    assert await old_layout_present(redis_or_cluster)
    with pytest.raises(TicketNotFound):
        await store.tickets.get(ids[0])

    report = await migrate(redis_or_cluster)

    assert (report.prefixed, report.prefix_conflicts, report.renamed) == (110, [], Counter())
    assert not await old_layout_present(redis_or_cluster)
    assert await views(store, ids) == before
    assert [k async for k in redis_or_cluster.scan_iter(match=f"{OLD_TICKET}:*")] == []
    assert await migrate(redis_or_cluster) == type(report)()  # a second run has nothing to do


async def test_a_ticket_hash_whose_new_name_is_taken_is_left_and_reported(real_redis: Redis) -> None:
    store, ids, _ = await _made_with_the_old_prefix(real_redis)
    await real_redis.hset(keys.ticket(ids[5]), "valid", "1")  # written by a new version started too soon
    old_hash = await real_redis.hgetall(f"{OLD_TICKET}:{{{keys.shard_of(ids[5])}}}:{ids[5]}")

    report = await migrate(real_redis)

    assert report.prefixed == 109 and report.prefix_conflicts == [f"{OLD_TICKET}:{{{keys.shard_of(ids[5])}}}:{ids[5]}"]
    assert await real_redis.hgetall(report.prefix_conflicts[0]) == old_hash  # nothing overwritten, nothing lost
    assert (await store.tickets.get(ids[6])).id == ids[6]


async def test_the_tool_finishes_what_an_interrupted_run_left(
    real_redis: Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every hash but one already renamed, as a run stopped part-way leaves them: the tool
    scans for what is left rather than trusting a sample that would likely miss it."""
    store, ids, before = await _made_with_the_old_prefix(real_redis)
    for tid in ids[1:]:
        await real_redis.rename(f"{OLD_TICKET}:{{{keys.shard_of(tid)}}}:{tid}", keys.ticket(tid))
    monkeypatch.setenv("REDIS_URL", redis_server.url)

    assert await migrate_main() == 0

    assert [k async for k in real_redis.scan_iter(match=f"{OLD_TICKET}:*")] == []
    assert await views(store, ids) == before
