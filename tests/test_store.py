"""The store against fakeredis and a real redis-server alike."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from service.errors import IdempotencyKeyReused, TicketNotFound, TransitionRefused
from service.models import IdempotencyKey, Origin, TicketState, Transition, new_ticket_id
from service.store import SHARDS, TicketStore


@pytest.fixture
def store(any_redis: Redis) -> TicketStore:
    return TicketStore(any_redis, replay_ttl_s=60)


async def test_create_stores_a_valid_ticket_with_server_time(store: TicketStore) -> None:
    tid = new_ticket_id()
    ticket = (await store.create(tid)).ticket
    assert ticket.id == tid and ticket.state is TicketState.VALID
    assert await store.get(tid) == ticket
    server_s, _ = await store.redis.time()
    assert abs(ticket.timestamp - server_s) < 5


async def test_ticket_is_a_hash_indexed_in_its_shard_set(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    assert await store.redis.type(f"tkt:{{{tid[0]}}}:{tid}") == "hash"
    assert await store.redis.sismember(f"tickets:{{{tid[0]}}}", tid)


async def test_create_is_idempotent_for_the_same_id(store: TicketStore) -> None:
    tid = new_ticket_id()
    first = (await store.create(tid)).ticket
    await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="r1"))
    again = (await store.create(tid)).ticket
    assert again.timestamp == first.timestamp and again.state is TicketState.INVALID
    assert await store.redis.scard(store.index_key(tid[0])) == 1


async def test_get_unknown_raises(store: TicketStore) -> None:
    with pytest.raises(TicketNotFound):
        await store.get(new_ticket_id())


async def test_invalidate_then_again_is_refused_with_current_ticket(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    result = await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    assert result.ticket.state is TicketState.INVALID and not result.replayed
    with pytest.raises(TransitionRefused) as refused:
        await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))
    assert refused.value.ticket.state is TicketState.INVALID
    assert refused.value.ticket.timestamp == result.ticket.timestamp


async def test_validate_reenables_and_refuses_when_already_valid(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    with pytest.raises(TransitionRefused):
        await store.transition(tid, Transition.VALIDATE, origin=Origin(request_id="a"))
    await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))
    result = await store.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"))
    assert result.ticket.state is TicketState.VALID


async def test_transition_of_unknown_ticket_raises_not_found(store: TicketStore) -> None:
    with pytest.raises(TicketNotFound):
        await store.transition(new_ticket_id(), Transition.INVALIDATE, origin=Origin(request_id="a"))


async def test_replayed_request_id_gets_the_first_answer(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    first = await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    replay = await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    assert replay.replayed and replay.ticket == first.ticket
    with pytest.raises(TransitionRefused):
        await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-2"))


async def test_replay_record_expires(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="gate-1"))
    ttl = await store.redis.ttl(store.replay_key(tid, "gate-1"))
    assert 0 < ttl <= 60


async def test_refused_answer_is_replayed_as_refused(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)
    await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    for _ in range(2):
        with pytest.raises(TransitionRefused):
            await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"))


async def test_concurrent_invalidations_have_exactly_one_winner(store: TicketStore) -> None:
    tid = new_ticket_id()
    await store.create(tid)

    async def attempt(i: int) -> bool:
        try:
            await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id=f"req-{i}"))
            return True
        except TransitionRefused:
            return False

    wins = await asyncio.gather(*(attempt(i) for i in range(60)))
    assert wins.count(True) == 1


@pytest.mark.parametrize("limit", [1, 7, 100])
async def test_list_pages_cover_every_ticket_once(store: TicketStore, limit: int) -> None:
    ids = {new_ticket_id() for _ in range(3 * limit + 5)}
    for tid in ids:
        await store.create(tid)
    seen: list[str] = []
    cursor = None
    for _ in range(10_000):
        page = await store.list_page(cursor, limit)
        assert len(page.tickets) <= limit
        seen.extend(t.id for t in page.tickets)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)


async def test_list_of_empty_store_is_one_empty_page(store: TicketStore) -> None:
    page = await store.list_page(None, 10)
    assert page.tickets == [] and page.next_cursor is None


async def test_big_shard_is_split_into_limit_sized_pages(store: TicketStore) -> None:
    # 300 ids in one shard: past the listpack size, so SSCAN batches are hashtable buckets.
    ids: set[str] = set()
    while len(ids) < 300:
        tid = new_ticket_id()
        if tid[0] == "a":
            ids.add(tid)
    for tid in ids:
        await store.create(tid)
    cursor, pages = None, 0
    seen: list[str] = []
    while True:
        page = await store.list_page(cursor, 25)
        pages += 1
        assert len(page.tickets) <= 25
        seen.extend(t.id for t in page.tickets)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert pages >= 300 // 25


def test_every_shard_is_a_hex_digit() -> None:
    assert SHARDS == tuple("0123456789abcdef")
    assert TicketStore.ticket_key("ab" + "0" * 34) == "tkt:{a}:ab" + "0" * 34


async def test_idempotent_create_returns_the_first_ticket(store: TicketStore) -> None:
    key = IdempotencyKey(actor="box-office-1", key="order-17")
    first = await store.create(idempotency=key)
    again = await store.create(idempotency=key)
    assert not first.replayed and again.replayed and again.ticket == first.ticket
    assert first.ticket.id[0] == TicketStore.idempotency_shard(key)
    other_caller = await store.create(idempotency=IdempotencyKey(actor="box-office-2", key="order-17"))
    assert other_caller.ticket.id != first.ticket.id and not other_caller.replayed
    total = sum([await store.redis.scard(store.index_key(s)) for s in SHARDS])
    assert total == 2


async def test_idempotent_transition_replays_and_refuses_other_use(store: TicketStore) -> None:
    tid = (await store.create()).ticket.id
    key = IdempotencyKey(actor="gate-3", key="scan-1")
    first = await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"), idempotency=key)
    again = await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"), idempotency=key)
    assert again.replayed and again.ticket == first.ticket
    with pytest.raises(IdempotencyKeyReused):
        await store.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"), idempotency=key)
    assert (await store.get(tid)).state is TicketState.INVALID
    ttl = await store.redis.ttl(store.idempotency_key(tid[0], key.actor, key.key, tid))
    assert 23 * 3600 < ttl <= 24 * 3600


async def test_idempotency_keys_are_scoped_per_ticket(store: TicketStore) -> None:
    a, b = (await store.create()).ticket.id, (await store.create()).ticket.id
    key = IdempotencyKey(actor="gate-3", key="scan-1")
    await store.transition(a, Transition.INVALIDATE, origin=Origin(request_id="a"), idempotency=key)
    result = await store.transition(b, Transition.INVALIDATE, origin=Origin(request_id="b"), idempotency=key)
    assert not result.replayed and result.ticket.state is TicketState.INVALID


async def test_refusal_is_replayed_under_the_same_idempotency_key(store: TicketStore) -> None:
    tid = (await store.create()).ticket.id
    await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="a"))
    key = IdempotencyKey(actor="gate-3", key="scan-2")
    with pytest.raises(TransitionRefused) as first:
        await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="b"), idempotency=key)
    await store.transition(tid, Transition.VALIDATE, origin=Origin(request_id="c"))
    with pytest.raises(TransitionRefused) as again:
        await store.transition(tid, Transition.INVALIDATE, origin=Origin(request_id="d"), idempotency=key)
    assert not first.value.replayed and again.value.replayed


async def test_forwarded_ids_are_uuid4_and_shared_by_every_worker(store: TicketStore) -> None:
    origin = Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True)
    first = (await store.create(origin=origin)).ticket
    assert uuid.UUID(first.id).version == 4
    # Another worker, same Redis: the same secret, so the same id for the same request.
    other = TicketStore(store.redis, replay_ttl_s=60)
    again = await other.create(origin=origin)
    assert again.replayed and again.ticket == first
    assert await store.redis.exists(TicketStore.id_key_key())
    different = await other.create(origin=Origin(request_id="f" * 32, forwarded=True))
    assert different.ticket.id != first.id and not different.replayed


async def test_create_replayed_by_request_id_makes_one_ticket(store: TicketStore) -> None:
    first = await store.create(origin=Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True))
    again = await store.create(origin=Origin(request_id="0123456789abcdef0123456789abcdef", forwarded=True))
    assert again.replayed and again.ticket == first.ticket
    assert sum([await store.redis.scard(store.index_key(s)) for s in SHARDS]) == 1
    other = await store.create(origin=Origin(request_id="fedcba9876543210fedcba9876543210", forwarded=True))
    assert other.ticket.id != first.ticket.id and not other.replayed


async def test_create_batch_makes_distinct_indexed_tickets(store: TicketStore) -> None:
    made = await store.create_batch(50)
    assert len({t.id for t in made}) == 50 and all(t.state is TicketState.VALID for t in made)
    assert [await store.get(t.id) for t in made] == made
    assert (await store.stats()).total == 50
