"""The one owner of Redis: key builders, Lua scripts, and the mapping of replies to domain types."""

from __future__ import annotations

import hashlib
import logging
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Iterator, Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .errors import IdempotencyKeyReused, StoreUnavailable, TicketNotFound, TransitionRefused
from .models import IdempotencyKey, PageCursor, Ticket, TicketState, Transition, new_ticket_id

log = logging.getLogger(__name__)

# A ticket's shard is the first hex digit of its id: uuid4 spreads them evenly, and the
# shard is the hash tag, so one ticket's keys always share a Redis Cluster slot.
SHARDS: tuple[str, ...] = tuple("0123456789abcdef")
# SSCAN's COUNT for listing. Part of the cursor's meaning: changing it between the pages of
# one walk can skip ids, so it is a constant, not a setting.
_SCAN_COUNT = 128
_VALID = {"1": TicketState.VALID, "0": TicketState.INVALID}


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


@contextmanager
def _redis_errors() -> Iterator[None]:
    """Turn any Redis failure into StoreUnavailable, so callers see one domain error."""
    try:
        yield
    except RedisError as exc:
        log.warning("redis error: %s: %s", type(exc).__name__, exc)
        raise StoreUnavailable(str(exc)) from exc


def _ticket(ticket_id: str, ts: str, valid: str) -> Ticket:
    return Ticket(id=ticket_id, timestamp=float(ts), state=_VALID[valid])


class TicketStore:
    """Tickets in Redis: one hash per ticket, one id set per shard, atomic transitions in Lua."""

    def __init__(self, redis: Redis, *, replay_ttl_s: int, idempotency_ttl_s: int = 86400) -> None:
        self.redis = redis
        self.replay_ttl_s = replay_ttl_s
        self.idempotency_ttl_s = idempotency_ttl_s
        self._create = redis.register_script(_load_lua("create.lua"))
        self._transition = redis.register_script(_load_lua("transition.lua"))
        self._list = redis.register_script(_load_lua("list.lua"))

    # Key builders: the only place key names are spelled.
    @staticmethod
    def shard_of(ticket_id: str) -> str:
        return ticket_id[0]

    @staticmethod
    def ticket_prefix(shard: str) -> str:
        return f"ticket:{{{shard}}}:"

    @classmethod
    def ticket_key(cls, ticket_id: str) -> str:
        return cls.ticket_prefix(cls.shard_of(ticket_id)) + ticket_id

    @staticmethod
    def index_key(shard: str) -> str:
        return f"tickets:{{{shard}}}"

    @classmethod
    def replay_key(cls, ticket_id: str, request_id: str) -> str:
        return f"replay:{{{cls.shard_of(ticket_id)}}}:{ticket_id}:{request_id}"

    @staticmethod
    def idempotency_key(shard: str, *scope: str) -> str:
        # Hashed: the caller's key may be long or hold any character; the record key may not.
        digest = hashlib.sha256("\n".join(scope).encode()).hexdigest()[:32]
        return f"idem:{{{shard}}}:{digest}"

    @staticmethod
    def _scope_shard(*scope: str) -> str:
        return hashlib.sha256("\n".join(scope).encode()).hexdigest()[0]

    @classmethod
    def idempotency_shard(cls, idem: IdempotencyKey) -> str:
        return cls._scope_shard(idem.actor, idem.key)

    def _create_record(
        self, idempotency: IdempotencyKey | None, request_id: str | None
    ) -> tuple[str, str, int] | None:
        """(shard, record key, ttl_s) under which a create's first answer is kept, if any."""
        if idempotency is not None:
            shard = self.idempotency_shard(idempotency)
            key = self.idempotency_key(shard, idempotency.actor, idempotency.key)
            return shard, key, self.idempotency_ttl_s
        if request_id is not None:
            shard = self._scope_shard(request_id)
            return shard, f"replay:{{{shard}}}:{request_id}", self.replay_ttl_s
        return None

    async def create(
        self,
        ticket_id: str | None = None,
        *,
        idempotency: IdempotencyKey | None = None,
        request_id: str | None = None,
    ) -> WriteResult:
        """Store a new valid ticket, timestamped by Redis. With an idempotency key (kept 24 h)
        or a load balancer's request id (kept replay_ttl_s), a repeat of the same call gets
        the first answer instead of creating another ticket."""
        ticket_id = ticket_id or new_ticket_id()
        args: list[str | int] = [ticket_id]
        record: list[str] = []
        found = self._create_record(idempotency, request_id)
        if found is not None:
            shard, record_key, ttl_s = found
            # The ticket goes to the shard of its record, so that one script sees both.
            ticket_id = shard + ticket_id[1:]
            record, args = [record_key], [ticket_id, "create", ttl_s]
        keys = [self.ticket_key(ticket_id), self.index_key(self.shard_of(ticket_id)), *record]
        with _redis_errors():
            outcome, tid, ts, valid, replayed = await self._create(keys=keys, args=args)
        if outcome == "mismatch":
            raise IdempotencyKeyReused()
        return WriteResult(_ticket(tid, ts, valid), bool(replayed))

    async def get(self, ticket_id: str) -> Ticket:
        """Return the ticket, or raise TicketNotFound."""
        with _redis_errors():
            ts, valid = await self.redis.hmget(self.ticket_key(ticket_id), ["ts", "valid"])
        if ts is None:
            raise TicketNotFound(ticket_id)
        return _ticket(ticket_id, str(ts), str(valid))

    async def transition(
        self,
        ticket_id: str,
        transition: Transition,
        *,
        request_id: str,
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Apply `transition` atomically. A ticket already in the target state raises
        TransitionRefused. The same request id, or the same idempotency key (scoped to the
        caller and the ticket), gets the first answer back, refusal included."""
        target = "1" if transition.target is TicketState.VALID else "0"
        if idempotency is None:
            record, ttl_s = self.replay_key(ticket_id, request_id), self.replay_ttl_s
        else:
            scope = (idempotency.actor, idempotency.key, ticket_id)
            record = self.idempotency_key(self.shard_of(ticket_id), *scope)
            ttl_s = self.idempotency_ttl_s
        keys = [self.ticket_key(ticket_id), record]
        with _redis_errors():
            reply = await self._transition(keys=keys, args=[target, ttl_s, transition.value])
        outcome, ts, valid, replayed = reply
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
            args: list[str | int] = [at.scan, at.after, room, self.ticket_prefix(shard), max_batches, _SCAN_COUNT]
            with _redis_errors():
                reply = await self._list(keys=[self.index_key(shard)], args=args)
            tickets.extend(self._tickets_from(reply[2:]))
            nxt = self._next_cursor(at.shard, reply[0], reply[1])
            if nxt is None:
                return Page(tickets, None)
            at = nxt
        return Page(tickets, at)

    @staticmethod
    def _tickets_from(flat: Sequence[Any]) -> Iterator[Ticket]:
        for i in range(0, len(flat), 3):
            yield _ticket(flat[i], flat[i + 1], flat[i + 2])

    @staticmethod
    def _next_cursor(shard: int, scan: str, after: str) -> PageCursor | None:
        if scan != "0" or after:
            return PageCursor(shard=shard, scan=int(scan), after=after)
        if shard + 1 < len(SHARDS):
            return PageCursor(shard=shard + 1, scan=0, after="")
        return None

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        with _redis_errors():
            await self.redis.ping()
