"""The store against fakeredis and a real redis-server alike."""

from __future__ import annotations

import asyncio
import binascii
import os
import time
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.errors import BadCursor, IdempotencyKeyReused, TicketNotFound, TransitionRefused
from service.models import (
    Direction,
    EventSpec,
    IdempotencyKey,
    ListSpec,
    Origin,
    TicketSpec,
    TicketState,
    Transition,
    new_ticket_id,
    new_ticket_ids,
)
from service.store import SHARDS, Store, StoreConfig, keys
from service.store import feed as feed_module
from service.store.client import close_client
from tooling.procs import RedisServer
from tooling.topologies import RedisNodes


async def test_create_stores_a_valid_ticket_with_server_time(store: Store) -> None:
    tid = new_ticket_id()
    ticket = (await store.tickets.create(tid)).ticket
    assert ticket.id == tid and ticket.state is TicketState.VALID
    assert await store.tickets.get(tid) == ticket
    server_s, _ = await store.redis.time()
    assert abs(ticket.timestamp - server_s) < 5


async def test_ticket_is_a_hash_indexed_in_its_shard_set(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    shard = keys.shard_of(tid)
    assert await store.redis.type(f"t:{{{shard}}}:{tid}") == "hash"
    assert await store.redis.sismember(f"tickets:{{{shard}}}", tid)


async def test_create_is_idempotent_for_the_same_id(store: Store) -> None:
    tid = new_ticket_id()
    first = (await store.tickets.create(tid)).ticket
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="r1"))
    again = (await store.tickets.create(tid)).ticket
    assert again.timestamp == first.timestamp and again.state is TicketState.INVALID
    assert await store.redis.scard(keys.index(keys.shard_of(tid))) == 1


async def test_get_unknown_raises(store: Store) -> None:
    with pytest.raises(TicketNotFound):
        await store.tickets.get(new_ticket_id())


async def test_invalidate_then_again_is_refused_with_current_ticket(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    result = await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    assert result.ticket.state is TicketState.INVALID and not result.replayed
    with pytest.raises(TransitionRefused) as refused:
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))
    assert refused.value.ticket.state is TicketState.INVALID
    assert refused.value.ticket.timestamp == result.ticket.timestamp


async def test_validate_reenables_and_refuses_when_already_valid(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    with pytest.raises(TransitionRefused):
        await store.tickets.transition(tid, Transition.VALIDATE, origin=Origin(request_id="a"))
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))
    result = await store.tickets.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"))
    assert result.ticket.state is TicketState.VALID


async def test_transition_of_unknown_ticket_raises_not_found(store: Store) -> None:
    with pytest.raises(TicketNotFound):
        await store.tickets.transition(new_ticket_id(), Transition.INVALIDATE, origin=Origin(request_id="a"))


async def test_replayed_request_id_gets_the_first_answer(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    first = await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    replay = await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    assert replay.replayed and replay.ticket == first.ticket
    with pytest.raises(TransitionRefused):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-2"))


async def test_replay_record_expires(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    ttl = await store.redis.ttl(keys.replay(tid, "anonymous", Origin(request_id="gate-1").replay_id))
    assert 0 < ttl <= 60


async def test_refused_answer_is_replayed_as_refused(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    for _ in range(2):
        with pytest.raises(TransitionRefused):
            await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))


async def test_concurrent_invalidations_have_exactly_one_winner(store: Store) -> None:
    tid = new_ticket_id()
    await store.tickets.create(tid)

    async def attempt(i: int) -> bool:
        try:
            await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id=f"req-{i}"))
            return True
        except TransitionRefused:
            return False

    wins = await asyncio.gather(*(attempt(i) for i in range(60)))
    assert wins.count(True) == 1


@pytest.mark.parametrize("limit", [1, 7, 100])
async def test_list_pages_cover_every_ticket_once(store: Store, limit: int) -> None:
    ids = {new_ticket_id() for _ in range(3 * limit + 5)}
    for tid in ids:
        await store.tickets.create(tid)
    seen: list[str] = []
    cursor = None
    for _ in range(10_000):
        page = await store.feed.list_page(cursor, limit)
        assert len(page.tickets) <= limit
        seen.extend(t.id for t in page.tickets)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


async def test_list_of_empty_store_is_one_empty_page(store: Store) -> None:
    page = await store.feed.list_page(None, 10)
    assert page.tickets == [] and page.next_cursor is None


async def test_big_shard_is_split_into_limit_sized_pages(store: Store) -> None:
    # 300 ids in one shard: past the listpack size, so SSCAN batches are hashtable buckets.
    ids: set[str] = set()
    while len(ids) < 300:
        tid = new_ticket_id()
        if keys.shard_of(tid) == SHARDS[40]:
            ids.add(tid)
    for tid in ids:
        await store.tickets.create(tid)
    cursor, pages = None, 0
    seen: list[str] = []
    while True:
        page = await store.feed.list_page(cursor, 25)
        pages += 1
        assert len(page.tickets) <= 25
        seen.extend(t.id for t in page.tickets)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert pages >= 300 // 25


def _slot(tag: str) -> int:
    return binascii.crc_hqx(tag.encode(), 0) % 16384


def test_the_64_shard_tags_sit_one_in_each_64th_of_the_cluster_slots() -> None:
    assert len(SHARDS) == 64 == len(set(SHARDS))
    width = 16384 // len(SHARDS)
    assert [_slot(tag) // width for tag in SHARDS] == list(range(64))


def test_a_shard_is_the_top_six_bits_of_the_first_byte() -> None:
    assert keys.shard_of("00" + "0" * 34) == keys.shard_of("03" + "0" * 34) == SHARDS[0]
    assert keys.shard_of("04" + "0" * 34) == SHARDS[1] and keys.shard_of("ff" + "0" * 34) == SHARDS[63]
    assert keys.ticket("ab" + "0" * 34) == f"t:{{{SHARDS[0xab >> 2]}}}:ab" + "0" * 34
    moved = keys.in_shard("ab" + "1" * 34, SHARDS[5])
    assert keys.shard_of(moved) == SHARDS[5] and moved[2:] == "1" * 34 and int(moved[:2], 16) & 3 == 0xab & 3


async def test_shards_spread_over_three_masters_as_redis_cli_assigns_slots() -> None:
    # redis-cli --cluster create with 3 masters: 0-5460, 5461-10922, 10923-16383.
    owners = [0 if s <= 5460 else 1 if s <= 10922 else 2 for s in map(_slot, SHARDS)]
    assert sorted(owners.count(m) for m in range(3)) == [21, 21, 22]


async def test_idempotent_create_returns_the_first_ticket(store: Store) -> None:
    key = IdempotencyKey(actor="box-office-1", key="order-17")
    first = await store.tickets.create(idempotency=key)
    again = await store.tickets.create(idempotency=key)
    assert not first.replayed and again.replayed and again.ticket == first.ticket
    assert keys.shard_of(first.ticket.id) == keys.idempotency_shard(key.actor, key.key)
    other_caller = await store.tickets.create(idempotency=IdempotencyKey(actor="box-office-2", key="order-17"))
    assert other_caller.ticket.id != first.ticket.id and not other_caller.replayed
    total = sum([await store.redis.scard(keys.index(s)) for s in SHARDS])
    assert total == 2


async def test_idempotent_transition_replays_and_refuses_other_use(store: Store) -> None:
    tid = (await store.tickets.create()).ticket.id
    key = scan_key("scan-1", "invalidate", tid)
    first = await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"), idempotency=key)
    again = await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"), idempotency=key)
    assert again.replayed and again.ticket == first.ticket
    with pytest.raises(IdempotencyKeyReused):
        await store.tickets.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"),
                                       idempotency=scan_key("scan-1", "validate", tid))
    assert (await store.tickets.get(tid)).state is TicketState.INVALID
    ttl = await store.redis.ttl(keys.idempotency_answer(key.actor, key.key, tid))
    assert 23 * 3600 < ttl <= 24 * 3600


def scan_key(key: str, operation: str, ticket_id: str, actor: str = "gate-3") -> IdempotencyKey:
    return IdempotencyKey(actor=actor, key=key, request=f"{operation}\n{ticket_id}")


async def test_an_idempotency_key_reused_on_another_ticket_is_refused(store: Store) -> None:
    a, b = (await store.tickets.create()).ticket.id, (await store.tickets.create()).ticket.id
    await store.tickets.transition(a, Transition.INVALIDATE, origin=Origin(request_id="a"),
                                   idempotency=scan_key("scan-1", "invalidate", a))
    with pytest.raises(IdempotencyKeyReused):
        await store.tickets.transition(b, Transition.INVALIDATE, origin=Origin(request_id="b"),
                                       idempotency=scan_key("scan-1", "invalidate", b))
    assert (await store.tickets.get(b)).state is TicketState.VALID
    # Another caller's key of the same text is another key.
    other = await store.tickets.transition(b, Transition.INVALIDATE, origin=Origin(request_id="c"),
                                           idempotency=scan_key("scan-1", "invalidate", b, actor="gate-4"))
    assert not other.replayed


async def test_an_idempotency_key_of_a_create_is_refused_on_a_transition_and_back(store: Store) -> None:
    made = await store.tickets.create(idempotency=IdempotencyKey("gate-3", "k1", "create"))
    tid = made.ticket.id
    with pytest.raises(IdempotencyKeyReused):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"),
                                       idempotency=scan_key("k1", "invalidate", tid))
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"),
                                   idempotency=scan_key("k2", "invalidate", tid))
    with pytest.raises(IdempotencyKeyReused):
        await store.tickets.create(idempotency=IdempotencyKey("gate-3", "k2", "create"))
    with pytest.raises(IdempotencyKeyReused):
        await store.tickets.create(idempotency=IdempotencyKey("gate-3", "k1", "create\n{\"type\":\"vip\"}"))
    assert (await store.tickets.stats()).total == 1


async def test_concurrent_uses_of_one_key_on_two_tickets_let_one_through(store: Store) -> None:
    ids = [(await store.tickets.create()).ticket.id for _ in range(2)]

    async def scan(tid: str) -> bool:
        try:
            await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id=tid),
                                           idempotency=scan_key("once", "invalidate", tid))
            return True
        except IdempotencyKeyReused:
            return False

    done = await asyncio.gather(*(scan(t) for t in ids * 5))
    assert done.count(True) == 5 and len({t for t, ok in zip(ids * 5, done, strict=True) if ok}) == 1


async def test_refusal_is_replayed_under_the_same_idempotency_key(store: Store) -> None:
    tid = (await store.tickets.create()).ticket.id
    await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    key = scan_key("scan-2", "invalidate", tid)
    with pytest.raises(TransitionRefused) as first:
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"), idempotency=key)
    await store.tickets.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"))
    with pytest.raises(TransitionRefused) as again:
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="d"), idempotency=key)
    assert not first.value.replayed and again.value.replayed


async def test_forwarded_ids_are_uuid4_and_shared_by_every_worker(store: Store) -> None:
    origin = Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True)
    first = (await store.tickets.create(origin=origin)).ticket
    assert uuid.UUID(first.id).version == 4
    # Another worker, same Redis: the same secret, so the same id for the same request.
    other = Store(store.redis, StoreConfig(replay_ttl_s=60)).tickets
    again = await other.create(origin=origin)
    assert again.replayed and again.ticket == first
    assert await store.redis.exists(keys.DEPLOYMENT_SECRET_KEY)
    different = await other.create(origin=Origin(request_id="f" * 32, forwarded=True))
    assert different.ticket.id != first.id and not different.replayed


async def test_create_replayed_by_request_id_makes_one_ticket(store: Store) -> None:
    first = await store.tickets.create(origin=Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True))
    again = await store.tickets.create(origin=Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True))
    assert again.replayed and again.ticket == first.ticket
    assert sum([await store.redis.scard(keys.index(s)) for s in SHARDS]) == 1
    other = await store.tickets.create(origin=Origin(request_id="fedcba9876543210fedcba9876543210", forwarded=True))
    assert other.ticket.id != first.ticket.id and not other.replayed


async def test_create_batch_makes_distinct_indexed_tickets(store: Store) -> None:
    made = await store.tickets.create_batch(50)
    assert len({t.id for t in made}) == 50 and all(t.state is TicketState.VALID for t in made)
    assert [await store.tickets.get(t.id) for t in made] == made
    assert (await store.tickets.stats()).total == 50


async def test_a_batch_of_interleaved_kinds_gives_each_ticket_its_own_fields(store: Store) -> None:
    """A batch sends each kind of item once and each ticket names its kind: kinds that come
    back again, out of order, still land on the tickets that asked for them."""
    a = TicketSpec(type="day", holder="Ada")
    b = TicketSpec(seat="R1", valid_from=1_900_000_000.0, valid_until=1_900_003_600.5)
    c = TicketSpec()
    specs = [a, b, a, c, b, c, a]
    made, replayed = await store.tickets.issue_batch(specs, origin=Origin(request_id="kinds", forwarded=True))
    assert not replayed
    for ticket, spec in zip(made, specs, strict=True):
        assert (ticket.type, ticket.holder, ticket.seat, ticket.valid_from, ticket.valid_until) == \
            (spec.type, spec.holder, spec.seat, spec.valid_from, spec.valid_until)
    assert [await store.tickets.get(t.id) for t in made] == made


async def test_an_admission_stores_its_time_as_integer_microseconds(store: Store) -> None:
    """The admission's time goes into the ticket as the integer it came as: Lua's own number
    to string keeps 14 digits, which made u1 '<list>|1.7961597148207e+15'."""
    event = await store.tickets.create_event(EventSpec("Gala"))
    gate = await store.checkin.create_list(event.id, ListSpec("Gate"))
    ticket = (await store.tickets.create(spec=TicketSpec(event=event.id))).ticket
    scanned_at_us = int(time.time() * 1e6) - 60_000_000  # 16 digits, as every time since 2001
    result, _ = await store.checkin.checkin(ticket.id, gate.id, Direction.ENTRY, origin=Origin(request_id="scan"),
                                            scanned_at_us=scanned_at_us, offline=True)
    assert result.admitted
    stored = await store.redis.hmget(keys.ticket(ticket.id), ["u1", f"a:{gate.id}"])
    assert stored == [f"{gate.id}|{scanned_at_us}", str(scanned_at_us)]


async def test_a_resent_batch_makes_only_what_is_missing(store: Store) -> None:
    """A batch re-sent by nginx finds its tickets: all of them (a replay, nothing made), or
    (a ticket's hash gone) only the missing one is made, the others left as they are."""
    origin = Origin(request_id="batch-1", forwarded=True)
    made, replayed = await store.tickets.issue_batch([TicketSpec()] * 3, origin=origin)
    assert not replayed
    again, replayed = await store.tickets.issue_batch([TicketSpec()] * 3, origin=origin)
    assert replayed and again == made and (await store.tickets.stats()).total == 3
    await store.tickets.transition(made[0].id, Transition.INVALIDATE, origin=Origin(request_id="r"))
    await store.redis.delete(keys.ticket(made[1].id))
    mixed, replayed = await store.tickets.issue_batch([TicketSpec()] * 3, origin=origin)
    assert not replayed and [t.id for t in mixed] == [t.id for t in made]
    assert (await store.tickets.get(made[0].id)).state is TicketState.INVALID
    assert (await store.tickets.get(made[1].id)).state is TicketState.VALID
    assert (await store.tickets.stats()).total == 4


@pytest.mark.parametrize(("kind", "payload"), [
    ("page", "64.0."),  # no such shard
    ("page", "0.18446744073709551616."),  # past SSCAN's 64-bit cursor
    ("page", "0.0.not-an-id"),
    ("page", "0.0"),
    ("page", "\u0661.0."),  # a digit, but not an ASCII one
])
async def test_a_signed_cursor_out_of_range_is_refused_before_redis(store: Store, kind: str, payload: str) -> None:
    token = await store.feed._sign(kind, payload.encode())
    with pytest.raises(BadCursor):
        await store.feed.list_page(token, 10)


@pytest.mark.parametrize("payload", [
    b"\x00" * 64,  # one shard short
    b"\x00" * 66,  # one too many
    b"\x05" + b"\x00" * 63 + b"\x07\x00",  # older than the epoch
    b"\x05" + b"\x00" * 63 + b"\x80",  # a varint cut short
    b"\xff" * 11 + b"\x00" * 64,  # past 64 bits
])
async def test_a_signed_feed_cursor_out_of_range_is_refused(store: Store, payload: bytes) -> None:
    token = await store.feed._sign("feed", payload)
    with pytest.raises(BadCursor):
        await store.feed.changes_page(token, 10)


async def test_a_feed_cursor_of_64_busy_shards_fits_a_url(store: Store) -> None:
    positions = [f"{1_764_000_000_000 + 37 * i}-{i % 3}" for i in range(64)]
    token = await store.feed._sign("feed", feed_module._pack_positions(positions))
    assert len(token) < 600
    assert (await store.feed.feed_cursor(token)).positions == tuple(positions)


@pytest.mark.parametrize("token", ["", "abc", "abc.def", "....", "MC4wLg", "MC4wLg.AAAAAAAAAAAAAAAA", "é.é"])
async def test_a_cursor_the_service_did_not_issue_is_refused(store: Store, token: str) -> None:
    with pytest.raises(BadCursor):
        await store.feed.list_page(token, 10)
    with pytest.raises(BadCursor):
        await store.feed.changes_page(token, 10)


async def test_a_page_cursor_is_not_a_feed_cursor(store: Store) -> None:
    for _ in range(3):
        await store.tickets.create()
    page = await store.feed.list_page(None, 1)
    assert page.next_cursor is not None
    with pytest.raises(BadCursor):
        await store.feed.changes_page(page.next_cursor, 10)
    assert len((await store.feed.list_page(page.next_cursor, 10)).tickets) == 2


async def test_an_empty_script_cache_is_reloaded_in_pipelines_too(store: Store) -> None:
    """A promoted replica or a new node starts with no scripts; redis-py reloads them for a
    single call, not inside a (Cluster) pipeline: the store's link does."""
    made = await store.tickets.create_batch(20)
    await store.consumer.ensure_group()
    await store.redis.script_flush()
    more = await store.tickets.create_batch(5)  # one pipeline of scripts, per node
    await store.redis.script_flush()
    listed = [t.id for t in (await store.feed.list_page(None, 100)).tickets]  # scan and read per shard
    assert sorted(listed) == sorted(t.id for t in made + more)
    await store.redis.script_flush()
    entries = await store.consumer.read_new("c1", 100)
    assert await store.consumer.apply(entries) == 25  # the processor's pipelined script
    assert (await store.tickets.stats()).processed["created"] == 25


async def test_a_burst_of_calls_after_a_flush_loads_each_script_once(
    real_redis: Redis, redis_server: RedisServer
) -> None:
    """Every call of the burst meets NOSCRIPT; a load each would need more connections than
    the pool has (the processor's first step after a restart: one call per shard)."""
    await real_redis.script_flush()
    await real_redis.config_resetstat()
    client = Redis.from_url(redis_server.url, decode_responses=True, max_connections=2)
    try:
        store = Store(client, StoreConfig(max_concurrent=2))
        made = await asyncio.gather(*(store.tickets.create() for _ in range(40)))
        assert len({m.ticket.id for m in made}) == 40
        loads = (await real_redis.info("commandstats")).get("cmdstat_script|load", {}).get("calls")
        assert loads == 1
    finally:
        await client.aclose()


async def test_a_new_cluster_client_can_write_before_any_other_command(redis_cluster: RedisNodes) -> None:
    """A RedisCluster client learns the slot map at its first command: a write that is the
    first must still find the node its WAIT goes to."""
    client = redis_cluster.client()
    try:
        ticket = (await Store(client).tickets.create()).ticket
        assert (await Store(client).tickets.get(ticket.id)) == ticket
    finally:
        await client.flushall()
        await close_client(client)


async def test_a_stale_slot_map_is_relearned_and_the_write_confirmed_on_the_right_node(
    redis_cluster: RedisNodes,
) -> None:
    """After a failover or a reshard the client's map may name the wrong master: the write
    meets MOVED there (nothing runs). The store learns the map again and sends the write and
    its WAIT together to the right node, rather than let redis-py re-send the write alone."""
    client = redis_cluster.client()
    assert isinstance(client, RedisCluster)
    try:
        store = Store(client)
        await client.ping()
        tid = new_ticket_id()
        slot = client.keyslot(keys.ticket(tid))
        right = client.nodes_manager.slots_cache[slot][0]
        wrong = next(n for n in client.get_primaries() if n.name != right.name)
        client.nodes_manager.slots_cache[slot] = [wrong]  # what a failover leaves behind
        made = await store.tickets.create(tid)
        assert not made.replayed and await store.tickets.get(tid) == made.ticket
        assert client.nodes_manager.slots_cache[slot][0].name == right.name
    finally:
        await client.flushall()
        await close_client(client)


async def test_an_event_and_a_list_made_again_by_the_same_request_are_the_first_ones(store: Store) -> None:
    """A retry after a 503 (same caller, same request id) must not make a second event."""
    origin = Origin(actor="admin", request_id="req-event-1", forwarded=True)
    first = await store.tickets.create_event(EventSpec("Gala"), origin=origin)
    again = await store.tickets.create_event(EventSpec("Gala"), origin=origin)
    other = await store.tickets.create_event(EventSpec("Gala"), origin=Origin(actor="admin", request_id="req-event-2",
                                                                             forwarded=True))
    assert again == first and other.id != first.id
    assert len((await store.feed.event_page(None, 10)).events) == 2
    gate = await store.checkin.create_list(first.id, ListSpec("Gate"), origin=origin)
    again_gate = await store.checkin.create_list(first.id, ListSpec("Gate"), origin=origin)
    assert again_gate.to_json() == gate.to_json()
    made_elsewhere = await store.checkin.create_list(first.id, ListSpec("Gate"))
    assert made_elsewhere.id != gate.id


@pytest.mark.slow
async def test_a_uniform_load_over_many_events_spreads_evenly_over_the_three_masters(
    redis_cluster: RedisNodes,
) -> None:
    client = redis_cluster.client()
    assert isinstance(client, RedisCluster)
    try:
        store = Store(client, StoreConfig(min_replicas_ack=0))
        events = [await store.tickets.create_event(EventSpec(f"E{n}")) for n in range(2048)]
        tickets = [(await store.tickets.create_batch(1, spec=TicketSpec(event=e.id)))[0] for e in events]

        async def commands() -> dict[str, int]:
            info = await client.info("stats", target_nodes=RedisCluster.PRIMARIES)
            return {node: int(stats["total_commands_processed"]) for node, stats in info.items()}

        before = await commands()
        for ticket in tickets:
            await store.tickets.get(ticket.id)
        after = await commands()
        served = [after[n] - before[n] for n in after]
        shares = [s / sum(served) for s in served]
        print(f"\nSPREAD 2048 events, gets per master: {served} ({[round(s, 3) for s in shares]})")
        # 2048 events over 64 shards over 3 masters (21/22/21 shards): a third each, give or
        # take the events' random placement (about 1.3 points).
        assert len(shares) == 3 and all(abs(share - 1 / 3) < 0.05 for share in shares), shares
    finally:
        await client.flushall()
        await close_client(client)


def test_the_pipe_packs_commands_as_redis_py_would() -> None:
    """The auto-pipeline packs with hiredis (C); redis-py's own packer is the reference."""
    import hiredis
    from redis.asyncio.connection import Connection

    command: tuple[Any, ...] = (
        "EVALSHA", "a" * 40, 2, keys.ticket(new_ticket_id()), "tickets:{x}", "", 0, 100_000, -1, "é", "a b")
    assert hiredis.pack_command(command) == b"".join(Connection().pack_commands([command]))


@pytest.mark.parametrize("event", ["default", "0a1b2c3d"])
def test_a_new_ticket_id_is_the_canonical_form_of_its_uuid(event: str) -> None:
    tid = new_ticket_id(event)
    assert str(uuid.UUID(tid)) == tid and uuid.UUID(tid).variant == uuid.RFC_4122
    assert uuid.UUID(tid).version == (4 if event == "default" else 8)


@pytest.mark.parametrize("event", ["default", "0a1b2c3d"])
def test_a_batch_of_ids_is_each_id_made_alone(event: str) -> None:
    """new_ticket_ids sets a batch's bits all at once: the same ids as one at a time."""
    random = os.urandom(16 * 300)
    ids = new_ticket_ids(event, random)
    assert ids == [new_ticket_id(event, random[at:at + 16]) for at in range(0, len(random), 16)]
    assert len(set(ids)) == 300 and all(event == "default" or t.startswith(event) for t in ids)


async def test_a_piped_call_fails_at_its_own_deadline_while_its_batch_hangs() -> None:
    """A Redis that never answers (here, never accepts): each call of the batch gets
    TimeoutError at its own deadline, the shorter first."""
    from service.store.pipe import Pipe

    loop = asyncio.get_running_loop()
    never: asyncio.Future[Any] = loop.create_future()

    async def hang() -> Any:
        return await never

    pipe = Pipe(hang)
    short, long = pipe.send((("PING",),), 0.05), pipe.send((("PING",),), 0.3)
    started = loop.time()
    with pytest.raises(TimeoutError):
        await short
    assert not long.done() and loop.time() - started < 0.3
    with pytest.raises(TimeoutError):
        await long
    assert loop.time() - started >= 0.3
    never.cancel()
