"""The one owner of Redis: key builders, Lua scripts, and the mapping of replies to domain types."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from . import metrics
from .errors import (
    FeedCursorExpired,
    IdempotencyKeyReused,
    StoreUnavailable,
    TicketNotFound,
    TransitionRefused,
)
from .models import (
    Event,
    EventType,
    FeedCursor,
    IdempotencyKey,
    Origin,
    PageCursor,
    Ticket,
    TicketState,
    Transition,
    new_ticket_id,
    stream_id_key,
)

log = logging.getLogger(__name__)

# A ticket's shard is the first hex digit of its id: uuid4 spreads them evenly, and the
# shard is the hash tag, so one ticket's keys always share a Redis Cluster slot.
SHARDS: tuple[str, ...] = tuple("0123456789abcdef")
# SSCAN's COUNT for listing. Part of the cursor's meaning: changing it between the pages of
# one walk can skip ids, so it is a constant, not a setting.
_SCAN_COUNT = 128
_VALID = {"1": TicketState.VALID, "0": TicketState.INVALID}
_STAT_FIELDS = ("total", "valid", "invalid", "refused")


def _load_lua(name: str) -> str:
    return resources.files("service.lua").joinpath(name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class WriteResult:
    ticket: Ticket
    # True when this is the stored first answer to the same request, not a new write.
    replayed: bool


@dataclass(frozen=True, slots=True)
class Page:
    tickets: list[Ticket]
    next_cursor: PageCursor | None


@dataclass(frozen=True, slots=True)
class FeedPage:
    events: list[Event]
    next_cursor: FeedCursor


@dataclass(frozen=True, slots=True)
class Stats:
    total: int
    valid: int
    invalid: int
    refused: int
    # Events the tickets processor has recorded, by type, and the entries it has yet to.
    processed: dict[str, int] = field(default_factory=dict)
    processor_lag: int | None = None


@dataclass(frozen=True, slots=True)
class StreamEntry:
    shard: str
    entry_id: str
    fields: dict[str, str]


class _RedisCall:
    """One Redis round trip: bounded in time (the wait for a connection included), timed,
    and a timeout or Redis failure turned into StoreUnavailable. One asyncio.timeout around
    the whole call replaces the client's socket_timeout, which costs a task per command
    (asyncio.wait_for); a semaphore replaces the BlockingConnectionPool's condition and
    timeout per command. Both were measured on the hot path (bench/)."""

    __slots__ = ("op", "timeout_s", "slots", "_started", "_timeout")

    def __init__(self, op: str, timeout_s: float, slots: asyncio.Semaphore) -> None:
        self.op, self.timeout_s, self.slots = op, timeout_s, slots

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()
        self._timeout = asyncio.timeout(self.timeout_s)
        await self._timeout.__aenter__()
        try:
            await self.slots.acquire()
        except BaseException as exc:  # the timeout fired while waiting for a connection
            await self._leave(exc)
            raise

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.slots.release()
        await self._leave(exc)

    async def _leave(self, exc: BaseException | None) -> None:
        try:
            # Turns the timeout's own cancellation into TimeoutError.
            await self._timeout.__aexit__(type(exc) if exc else None, exc, None)
        except TimeoutError as timeout:
            exc = timeout
        metrics.redis_latency(self.op).observe(time.perf_counter() - self._started)
        if isinstance(exc, (RedisError, TimeoutError)):
            metrics.REDIS_ERRORS.labels(self.op).inc()
            log.warning("redis error in %s: %s: %s", self.op, type(exc).__name__, exc)
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


def _ticket(ticket_id: str, ts: str, valid: str) -> Ticket:
    return Ticket(id=ticket_id, timestamp=int(ts) / 1e6, state=_VALID[valid])


def _scope_shard(*scope: str) -> str:
    return hashlib.sha256("\n".join(scope).encode()).hexdigest()[0]


class TicketStore:
    """Tickets in Redis: one hash per ticket, one id set, counter hash and event stream per
    shard, and every change made by one Lua script call."""

    def __init__(
        self,
        redis: Redis,
        *,
        replay_ttl_s: int,
        idempotency_ttl_s: int = 86400,
        events_maxlen: int = 100_000,
        timeout_ms: int = 1000,
        max_concurrent: int = 64,
    ) -> None:
        self.redis = redis
        self.timeout_s = timeout_ms / 1000
        # Calls in flight at once, at most the pool's size: more wait here, within the timeout.
        self._slots = asyncio.Semaphore(max_concurrent)
        self.replay_ttl_s = replay_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self.events_maxlen = events_maxlen
        self._id_secret: bytes | None = None
        self._create = redis.register_script(_load_lua("create.lua"))
        self._transition = redis.register_script(_load_lua("transition.lua"))
        self._list = redis.register_script(_load_lua("list.lua"))
        self._history = redis.register_script(_load_lua("history.lua"))
        self._process = redis.register_script(_load_lua("process.lua"))

    def _call(self, op: str, extra_s: float = 0.0) -> _RedisCall:
        return _RedisCall(op, self.timeout_s + extra_s, self._slots)

    # Key builders: the only place key names are spelled.
    @staticmethod
    def shard_of(ticket_id: str) -> str:
        return ticket_id[0]

    @staticmethod
    def ticket_prefix(shard: str) -> str:
        return f"tkt:{{{shard}}}:"

    @classmethod
    def ticket_key(cls, ticket_id: str) -> str:
        return cls.ticket_prefix(cls.shard_of(ticket_id)) + ticket_id

    @staticmethod
    def index_key(shard: str) -> str:
        return f"tickets:{{{shard}}}"

    @staticmethod
    def stats_key(shard: str) -> str:
        return f"stats:{{{shard}}}"

    @staticmethod
    def stream_key(shard: str) -> str:
        return f"events:{{{shard}}}"

    @classmethod
    def history_key(cls, ticket_id: str) -> str:
        return f"history:{{{cls.shard_of(ticket_id)}}}:{ticket_id}"

    @staticmethod
    def processed_key(shard: str) -> str:
        return f"processed:{{{shard}}}"

    @classmethod
    def replay_key(cls, ticket_id: str, request_id: str) -> str:
        return f"replay:{{{cls.shard_of(ticket_id)}}}:{ticket_id}:{request_id}"

    @staticmethod
    def id_key_key() -> str:
        return "config:ticket-id-key"

    @staticmethod
    def idempotency_key(shard: str, *scope: str) -> str:
        # Hashed: the caller's key may be long or hold any character; the record key may not.
        digest = hashlib.sha256("\n".join(scope).encode()).hexdigest()[:32]
        return f"idem:{{{shard}}}:{digest}"

    @staticmethod
    def idempotency_shard(idem: IdempotencyKey) -> str:
        return _scope_shard(idem.actor, idem.key)

    async def _id_key(self) -> bytes:
        """The deployment's secret for request-derived ticket ids, made once by whichever
        worker asks first (SET NX) and shared by all through Redis."""
        if self._id_secret is None:
            key = self.id_key_key()
            async with self._call("id_key"):
                await self.redis.set(key, secrets.token_hex(32), nx=True)
                value = await self.redis.get(key)
            self._id_secret = str(value).encode()
        return self._id_secret

    async def _new_id(self, origin: Origin) -> str:
        """A random uuid4; for a request nginx forwarded, one derived from its request id
        with a keyed hash: unguessable all the same, and the same again when nginx re-sends
        the request to another replica, so the re-sent create finds the ticket it made."""
        if not origin.forwarded:
            return new_ticket_id()
        digest = hmac.new(await self._id_key(), origin.request_id.encode(), hashlib.sha256).digest()
        return str(uuid.UUID(bytes=digest[:16], version=4))

    def _origin_args(self, origin: Origin) -> list[str | int]:
        return [origin.actor, origin.request_id, origin.client_ip, self.events_maxlen]

    async def create(
        self,
        ticket_id: str | None = None,
        *,
        origin: Origin = Origin(),
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Store a new valid ticket, timestamped by Redis, counted, with its `created` event.
        A repeat of the same call gets the first answer instead of another ticket: with an
        idempotency key (kept 24 h), or as nginx re-sends it (the id derives from its request
        id), or as the Redis client retries it (same id)."""
        ticket_id = ticket_id or await self._new_id(origin)
        record: list[str] = []
        extra: list[str | int] = []
        if idempotency is not None:
            shard = self.idempotency_shard(idempotency)
            # The ticket goes to the shard of its record, so that one script sees both.
            ticket_id = shard + ticket_id[1:]
            record = [self.idempotency_key(shard, idempotency.actor, idempotency.key)]
            extra = ["create", self.idempotency_ttl_s]
        shard = self.shard_of(ticket_id)
        keys = [self.ticket_key(ticket_id), self.index_key(shard), self.stats_key(shard),
                self.stream_key(shard), *record]
        args = [ticket_id, *self._origin_args(origin), *extra]
        async with self._call("create"):
            outcome, tid, ts, valid, replayed = await self._create(keys=keys, args=args)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        return WriteResult(_ticket(tid, ts, valid), bool(replayed))

    async def create_batch(self, count: int, *, origin: Origin = Origin()) -> list[Ticket]:
        """Create `count` tickets in one pipelined round trip (bulk issue, loading)."""
        ids = [new_ticket_id() for _ in range(count)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for tid in ids:
                s = self.shard_of(tid)
                keys = [self.ticket_key(tid), self.index_key(s), self.stats_key(s), self.stream_key(s)]
                await self._create(keys=keys, args=[tid, *self._origin_args(origin)], client=pipe)
            async with self._call("create_batch"):
                replies = await pipe.execute()
        return [_ticket(tid, ts, valid) for _, tid, ts, valid, _ in replies]

    async def get(self, ticket_id: str) -> Ticket:
        """Return the ticket, or raise TicketNotFound."""
        async with self._call("get"):
            ts, valid = await self.redis.hmget(self.ticket_key(ticket_id), ["ts", "valid"])
        if ts is None:
            raise TicketNotFound(ticket_id)
        return _ticket(ticket_id, str(ts), str(valid))

    async def transition(
        self,
        ticket_id: str,
        transition: Transition,
        *,
        origin: Origin,
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Apply `transition` atomically, with its event. A ticket already in the target
        state raises TransitionRefused (and records a refused event). The same request id,
        or the same idempotency key (scoped to the caller and the ticket), gets the first
        answer back, refusal included, with no second event."""
        target = "1" if transition.target is TicketState.VALID else "0"
        shard = self.shard_of(ticket_id)
        if idempotency is None:
            record, ttl_s = self.replay_key(ticket_id, origin.request_id), self.replay_ttl_s
        else:
            scope = (idempotency.actor, idempotency.key, ticket_id)
            record, ttl_s = self.idempotency_key(shard, *scope), self.idempotency_ttl_s
        keys = [self.ticket_key(ticket_id), record, self.stats_key(shard), self.stream_key(shard)]
        args = [target, ttl_s, transition.value, *self._origin_args(origin), ticket_id]
        async with self._call("transition"):
            outcome, ts, valid, replayed = await self._transition(keys=keys, args=args)
        if outcome == "missing":
            raise TicketNotFound(ticket_id)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        ticket = _ticket(ticket_id, ts, valid)
        if outcome == "conflict":
            raise TransitionRefused(ticket, replayed=bool(replayed))
        return WriteResult(ticket=ticket, replayed=bool(replayed))

    async def list_page(self, cursor: PageCursor | None, limit: int) -> Page:
        """Return up to `limit` tickets from `cursor` on, and the cursor of the rest (None
        at the end). Walks the shards in order; each script call reads one shard only."""
        at = cursor or PageCursor(shard=0, scan=0, after="")
        tickets: list[Ticket] = []
        while len(tickets) < limit:
            shard = SHARDS[at.shard]
            room = limit - len(tickets)
            # Enough SSCAN calls to fill the page from a dense set, bounded for a sparse one.
            max_batches = room // _SCAN_COUNT + 4
            args: list[str | int] = [
                at.scan, at.after, room, self.ticket_prefix(shard), max_batches, _SCAN_COUNT
            ]
            async with self._call("list"):
                reply = await self._list(keys=[self.index_key(shard)], args=args)
            tickets.extend(self._tickets_from(reply[2:]))
            nxt = self._next_cursor(at.shard, reply[0], reply[1])
            if nxt is None:
                return Page(tickets, None)
            at = nxt
        return Page(tickets, at)

    @staticmethod
    def _tickets_from(flat: Sequence[Any]) -> list[Ticket]:
        # Inlined rather than _ticket() per item: a page builds a hundred of them.
        valid = _VALID
        return [Ticket(flat[i], int(flat[i + 1]) / 1e6, valid[flat[i + 2]]) for i in range(0, len(flat), 3)]

    @staticmethod
    def _next_cursor(shard: int, scan: str, after: str) -> PageCursor | None:
        if scan != "0" or after:
            return PageCursor(shard=shard, scan=int(scan), after=after)
        if shard + 1 < len(SHARDS):
            return PageCursor(shard=shard + 1, scan=0, after="")
        return None

    async def history(self, ticket_id: str) -> list[Event]:
        """The ticket's events as the tickets processor recorded them, oldest first."""
        keys = [self.ticket_key(ticket_id), self.history_key(ticket_id)]
        async with self._call("history"):
            exists, *flat = await self._history(keys=keys, args=[])
        if not exists:
            raise TicketNotFound(ticket_id)
        entries = sorted(zip(flat[::2], flat[1::2]), key=lambda kv: stream_id_key(kv[0]))
        return [Event.from_fields(entry_id, json.loads(raw)) for entry_id, raw in entries]

    async def stats(self, group: str | None = None) -> Stats:
        """Exact totals (kept by the same scripts that change tickets), the processor's
        counts by event type, and, given its group, its lag. One round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in SHARDS:
                pipe.hmget(self.stats_key(shard), list(_STAT_FIELDS))
                pipe.hgetall(self.processed_key(shard))
            async with self._call("stats"):
                replies = await pipe.execute()
        totals = [sum(int(r[i] or 0) for r in replies[::2]) for i in range(len(_STAT_FIELDS))]
        processed: dict[str, int] = {t.value: 0 for t in EventType}
        for counts in replies[1::2]:
            for name, n in counts.items():
                processed[name] = processed.get(name, 0) + int(n)
        lag = await self.processor_lag(group) if group else None
        total, valid, invalid, refused = totals
        return Stats(total, valid, invalid, refused, processed=processed, processor_lag=lag)

    async def events_page(self, cursor: FeedCursor | None, limit: int) -> FeedPage:
        """The next `limit` events after `cursor`, merged across shards in stream-id order.
        Each shard's position moves only past the events returned, so no event is skipped
        or repeated. Raises FeedCursorExpired if the streams were trimmed past the cursor."""
        at = cursor or FeedCursor.start(len(SHARDS))
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, pos in zip(SHARDS, at.positions):
                pipe.xrange(self.stream_key(shard), f"({pos}", "+", count=limit)
                pipe.xinfo_stream(self.stream_key(shard))
            async with self._call("events"):
                replies = await pipe.execute(raise_on_error=False)
        merged: list[tuple[tuple[int, int], int, str, dict[str, str]]] = []
        for i, pos in enumerate(at.positions):
            entries, info = replies[2 * i], replies[2 * i + 1]
            self._check_not_trimmed(pos, info)
            merged.extend((stream_id_key(eid), i, eid, f) for eid, f in entries)
        merged.sort()
        taken = merged[:limit]
        positions = list(at.positions)
        for _, i, eid, _ in taken:
            positions[i] = eid
        events = [Event.from_fields(eid, f) for _, _, eid, f in taken]
        return FeedPage(events, FeedCursor(tuple(positions)))

    @staticmethod
    def _check_not_trimmed(pos: str, info: Any) -> None:
        """Refuse a cursor whose own entry was trimmed away: entries after it may have
        gone too (trimming cannot say), and a feed that may skip is no feed."""
        if isinstance(info, ResponseError):  # no such stream yet: nothing was trimmed
            return
        if isinstance(info, Exception):
            raise StoreUnavailable(str(info))
        if pos == "0-0":
            return
        first = info.get("first-entry")
        if first is None:  # empty: anything after pos was trimmed
            trimmed = stream_id_key(info["last-generated-id"]) > stream_id_key(pos)
        else:
            trimmed = stream_id_key(first[0]) > stream_id_key(pos)
        if trimmed:
            raise FeedCursorExpired()

    # The tickets processor's side.
    async def ensure_group(self, group: str) -> None:
        """Create the consumer group on every shard's stream (and the stream), once."""
        for shard in SHARDS:
            try:
                async with self._call("xgroup"):
                    await self.redis.xgroup_create(self.stream_key(shard), group, id="0", mkstream=True)
            except StoreUnavailable as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read_new(self, group: str, consumer: str, count: int) -> list[StreamEntry]:
        """New entries for this consumer from every shard, without waiting."""
        return await self._read_group(group, consumer, ">", count)

    async def read_own_pending(self, group: str, consumer: str, count: int) -> list[StreamEntry]:
        """Entries delivered to this consumer name and not yet acknowledged."""
        return await self._read_group(group, consumer, "0", count)

    async def _read_group(self, group: str, consumer: str, start: str, count: int) -> list[StreamEntry]:
        # One XREADGROUP per shard, pipelined: a command naming two streams would span two
        # hash slots, which Redis Cluster refuses.
        per_shard = max(1, count // len(SHARDS))
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in SHARDS:
                pipe.xreadgroup(group, consumer, {self.stream_key(shard): start}, count=per_shard)
            async with self._call("xreadgroup"):
                replies = await pipe.execute()
        return [entry for reply in replies for entry in self._entries(reply)]

    async def claim_stale(self, group: str, consumer: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries that another consumer left unacknowledged for min_idle_ms."""
        out: list[StreamEntry] = []
        for shard in SHARDS:
            async with self._call("xautoclaim"):
                reply = await self.redis.xautoclaim(
                    self.stream_key(shard), group, consumer, min_idle_ms, "0-0", count=count
                )
            out.extend(StreamEntry(shard, eid, f) for eid, f in reply[1] if f)
        return out

    @staticmethod
    def _entries(reply: Any) -> list[StreamEntry]:
        out: list[StreamEntry] = []
        for stream, entries in reply or []:
            shard = stream[stream.index("{") + 1]
            out.extend(StreamEntry(shard, eid, f) for eid, f in entries if f)
        return out

    async def apply(self, group: str, entries: Sequence[StreamEntry]) -> int:
        """Record each entry in its ticket's history, count it, and ack it: one script call
        per shard, all in one pipelined round trip. Returns how many were new (an entry
        seen before is not counted again)."""
        by_shard: dict[str, list[StreamEntry]] = {}
        for e in entries:
            by_shard.setdefault(e.shard, []).append(e)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, batch in by_shard.items():
                keys = [self.processed_key(shard), self.stream_key(shard)]
                keys += [self.history_key(e.fields["t"]) for e in batch]
                args: list[str] = [group]
                for e in batch:
                    args += [e.entry_id, e.fields["e"], json.dumps(e.fields)]
                await self._process(keys=keys, args=args, client=pipe)
            async with self._call("process"):
                results = await pipe.execute()
        return sum(int(r) for r in results)

    async def processor_lag(self, group: str) -> int:
        """Entries not yet acknowledged by the group: never delivered, or delivered and pending."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in SHARDS:
                pipe.xinfo_groups(self.stream_key(shard))
            async with self._call("xinfo"):
                replies = await pipe.execute(raise_on_error=False)
        lag = 0
        for groups in replies:
            for g in groups if isinstance(groups, list) else []:
                if g["name"] == group:
                    lag += int(g.get("lag") or 0) + int(g["pending"])
        return lag

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        async with self._call("ping"):
            await self.redis.ping()
