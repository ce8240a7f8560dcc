"""Ticket writes and reads: create, transition, get, history, stats. Every change is one Lua
script call that also counts it and appends its event."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis

from ..errors import IdempotencyKeyReused, TicketNotFound, TransitionRefused
from ..models import (
    Event,
    EventType,
    IdempotencyKey,
    Origin,
    Ticket,
    TicketState,
    Transition,
    new_ticket_id,
    stream_id_key,
)
from . import keys
from .calls import Caller
from .config import StoreConfig
from .scripts import Scripts
from .secret import DeploymentSecret

_VALID = {"1": TicketState.VALID, "0": TicketState.INVALID}
_STAT_FIELDS = ("total", "valid", "invalid", "refused")


@dataclass(frozen=True, slots=True)
class WriteResult:
    ticket: Ticket
    # True when this is the stored first answer to the same request, not a new write.
    replayed: bool


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    valid: int
    invalid: int
    refused: int
    # Events the tickets processor has recorded, by type.
    processed: dict[str, int] = field(default_factory=dict)


def ticket_from(ticket_id: str, ts: str, valid: str) -> Ticket:
    return Ticket(id=ticket_id, timestamp=int(ts) / 1e6, state=_VALID[valid])


class TicketStore:
    """Tickets in Redis: one hash per ticket, and per shard an id set, a counter hash and an
    event stream."""

    def __init__(
        self, redis: Redis, caller: Caller, scripts: Scripts, secret: DeploymentSecret, cfg: StoreConfig
    ) -> None:
        self.redis, self._caller, self._scripts, self._secret, self.cfg = redis, caller, scripts, secret, cfg

    async def _new_id(self, origin: Origin) -> str:
        """A random uuid4; for a request nginx forwarded, one derived from its request id
        with a keyed hash: unguessable all the same, and the same again when nginx re-sends
        the request to another replica, so the re-sent create finds the ticket it made."""
        if not origin.forwarded:
            return new_ticket_id()
        digest = await self._secret.mac("ticket-id", f"{origin.actor}\n{origin.request_id}")
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def _origin_args(self, origin: Origin) -> list[str | int]:
        return [origin.actor, origin.request_id, origin.client_ip, self.cfg.events_maxlen]

    async def create(
        self, ticket_id: str | None = None, *, origin: Origin = Origin(),
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Store a new valid ticket, timestamped by Redis, counted, with its `created` event.
        A repeat of the same call gets the first answer instead of another ticket: with an
        idempotency key (kept IDEMPOTENCY_TTL_S), or as nginx re-sends it (the id derives
        from its request id), or as the Redis client retries it (same id)."""
        ticket_id = ticket_id or await self._new_id(origin)
        record: list[str] = []
        extra: list[str | int] = []
        if idempotency is not None:
            # The ticket goes to the shard of the key's claim, so that one script sees both.
            ticket_id = keys.idempotency_shard(idempotency.actor, idempotency.key) + ticket_id[1:]
            record = [keys.idempotency(idempotency.actor, idempotency.key)]
            extra = [idempotency.fingerprint, self.cfg.idempotency_ttl_s]
        shard = keys.shard_of(ticket_id)
        script_keys = [keys.ticket(ticket_id), keys.index(shard), keys.stats(shard), keys.stream(shard), *record]
        async with self._caller.call("create"):
            outcome, tid, ts, valid, replayed = await self._scripts.create(
                keys=script_keys, args=[ticket_id, *self._origin_args(origin), *extra]
            )
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        return WriteResult(ticket_from(tid, ts, valid), bool(replayed))

    async def create_batch(self, count: int, *, origin: Origin = Origin()) -> list[Ticket]:
        """Create `count` tickets in one pipelined round trip (bulk issue, loading)."""
        ids = [new_ticket_id() for _ in range(count)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                s = keys.shard_of(tid)
                script_keys = [keys.ticket(tid), keys.index(s), keys.stats(s), keys.stream(s)]
                await self._scripts.create(keys=script_keys, args=[tid, *self._origin_args(origin)], client=pipe)
            async with self._caller.call("create_batch"):
                replies = await pipe.execute()
        return [ticket_from(tid, ts, valid) for _, tid, ts, valid, _ in replies]

    async def get(self, ticket_id: str) -> Ticket:
        """Return the ticket, or raise TicketNotFound."""
        async with self._caller.call("get"):
            ts, valid = await self.redis.hmget(keys.ticket(ticket_id), ["ts", "valid"])
        if ts is None:
            raise TicketNotFound(ticket_id)
        return ticket_from(ticket_id, str(ts), str(valid))

    async def transition(
        self, ticket_id: str, transition: Transition, *, origin: Origin,
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Apply `transition` atomically, with its event. A ticket already in the target
        state raises TransitionRefused (and records a refused event). The same request id
        (from the same caller), or the same idempotency key, gets the first answer back,
        refusal included, with no second event."""
        if idempotency is None:
            record = keys.replay(ticket_id, origin.actor, origin.request_id)
            ttl_s = self.cfg.replay_ttl_s
        else:
            await self._claim(idempotency)
            record = keys.idempotency_answer(idempotency.actor, idempotency.key, ticket_id)
            ttl_s = self.cfg.idempotency_ttl_s
        target = "1" if transition.target is TicketState.VALID else "0"
        shard = keys.shard_of(ticket_id)
        script_keys = [keys.ticket(ticket_id), record, keys.stats(shard), keys.stream(shard)]
        args = [target, ttl_s, transition.value, *self._origin_args(origin), ticket_id]
        async with self._caller.call("transition"):
            outcome, ts, valid, replayed = await self._scripts.transition(keys=script_keys, args=args)
        if outcome == "missing":
            raise TicketNotFound(ticket_id)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        ticket = ticket_from(ticket_id, ts, valid)
        if outcome == "conflict":
            raise TransitionRefused(ticket, replayed=bool(replayed))
        return WriteResult(ticket=ticket, replayed=bool(replayed))

    async def _claim(self, idempotency: IdempotencyKey) -> None:
        """Bind the caller's key to this request, once: the same key on any other request
        (another ticket, operation or body) is refused. Its own round trip, because the claim
        lives in the key's slot and the ticket in its own; a crash between the two steps
        leaves a claim that the retry of the same request passes."""
        claim = keys.idempotency(idempotency.actor, idempotency.key)
        async with self._caller.call("idempotency_claim"):
            outcome = await self._scripts.claim(
                keys=[claim], args=[idempotency.fingerprint, self.cfg.idempotency_ttl_s]
            )
        if outcome == "mismatch":
            raise IdempotencyKeyReused()

    async def history(self, ticket_id: str) -> list[Event]:
        """The ticket's events as the tickets processor recorded them, oldest first."""
        async with self._caller.call("history"):
            exists, *flat = await self._scripts.history(keys=[keys.ticket(ticket_id), keys.history(ticket_id)])
        if not exists:
            raise TicketNotFound(ticket_id)
        entries = sorted(zip(flat[::2], flat[1::2], strict=True), key=lambda kv: stream_id_key(kv[0]))
        return [Event.from_fields(entry_id, json.loads(raw)) for entry_id, raw in entries]

    async def stats(self) -> Stats:
        """Exact totals (kept by the same scripts that change tickets) and the processor's
        counts by event type. One round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.SHARDS:
                pipe.hmget(keys.stats(shard), list(_STAT_FIELDS))
                pipe.hgetall(keys.processed(shard))
            async with self._caller.call("stats"):
                replies = await pipe.execute()
        totals = [sum(int(r[i] or 0) for r in replies[::2]) for i in range(len(_STAT_FIELDS))]
        processed: dict[str, int] = {t.value: 0 for t in EventType}
        for counts in replies[1::2]:
            for name, n in counts.items():
                processed[name] = processed.get(name, 0) + int(n)
        total, valid, invalid, refused = totals
        return Stats(total, valid, invalid, refused, processed=processed)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        async with self._caller.call("ping"):
            await self.redis.ping()
