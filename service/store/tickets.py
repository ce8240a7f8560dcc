"""Ticket writes and reads: create, transition, get, history, stats. Every change is one Lua
script call that also counts it and appends its change."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import EventNotFound, IdempotencyKeyReused, SoldOut, TicketNotFound, TransitionRefused
from ..models import (
    DEFAULT_EVENT,
    STATE_CODES,
    STATES_BY_CODE,
    Change,
    ChangeType,
    EventInfo,
    EventSpec,
    IdempotencyKey,
    Origin,
    Ticket,
    TicketSpec,
    Transition,
    new_event_id,
    new_ticket_id,
    new_ticket_ids,
)
from . import keys
from .adaptors import (
    NO_ARGV,
    BatchArgv,
    BatchKeys,
    BatchReply,
    CreateArgv,
    CreateKeys,
    CreateReply,
    EventArgv,
    EventKeys,
    HistoryKeys,
    TransitionArgv,
    TransitionKeys,
    TransitionReply,
)
from .config import StoreConfig
from .entries import change_of, stream_id_key
from .idempotency import bind
from .link import Link
from .secret import DeploymentSecret

# How long a readiness probe's key lives: long enough to outlive the probes' own interval.
READY_PROBE_TTL_S = 60
_STAT_FIELDS = ("total", "valid", "invalid", "revoked", "refused")
# The ticket hash's fields, in the order every script answers them.
TICKET_FIELDS = ("ts", "valid", "ty", "h", "st", "vf", "vu")


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
    revoked: int
    refused: int
    # Changes the tickets processor has recorded, by type.
    processed: dict[str, int] = field(default_factory=dict)


def _seconds(us: Any) -> float | None:
    return int(us) / 1e6 if us else None


def _us(seconds: float | None) -> str:
    return "" if seconds is None else str(round(seconds * 1e6))


def ticket_from(ticket_id: str, values: Sequence[Any]) -> Ticket:
    """A ticket from its hash's TICKET_FIELDS, as the scripts answer them."""
    ts, valid, ty, holder, seat, vf, vu = values
    return Ticket(ticket_id, int(str(ts)) / 1e6, STATES_BY_CODE[str(valid)], ty or None, holder or None,
                  seat or None, _seconds(vf), _seconds(vu))


EVENT_FIELDS = ("name", "starts_at", "ends_at", "capacity", "issued")


def event_from(event_id: str, values: Sequence[Any]) -> EventInfo:
    name, starts, ends, capacity, issued = values
    return EventInfo(event_id, str(name), _seconds(starts), _seconds(ends), int(capacity) if capacity else None,
                     int(issued or 0))


def _spec_args(spec: TicketSpec) -> tuple[str, ...]:
    return ("ty", spec.type or "", "h", spec.holder or "", "st", spec.seat or "",
            "vf", _us(spec.valid_from), "vu", _us(spec.valid_until))


class TicketStore:
    """Tickets in Redis: one hash per ticket, and per shard an id set, a counter hash and an
    change stream."""

    def __init__(self, link: Link, secret: DeploymentSecret, cfg: StoreConfig) -> None:
        self._link, self._secret, self.cfg = link, secret, cfg
        self.redis = link.redis

    async def _new_id(self, origin: Origin, event: str) -> str:
        """A random id; for a request nginx forwarded, one derived from its request id with
        a keyed hash: unguessable all the same, and the same again when nginx re-sends the
        request to another replica, so the re-sent create finds the ticket it made."""
        if not origin.forwarded:
            return new_ticket_id(event)
        digest = await self._secret.mac("ticket-id", f"{origin.actor}\n{origin.replay_id}")
        return new_ticket_id(event, digest[:16])

    async def create(
        self, ticket_id: str | None = None, *, spec: TicketSpec = TicketSpec(), origin: Origin = Origin(),
        idempotency: IdempotencyKey | None = None,
    ) -> WriteResult:
        """Store a new valid ticket, timestamped by Redis, counted, with its `created` change;
        a ticket of an event only while the event has room (SoldOut otherwise). A repeat of
        the same call gets the first answer instead of another ticket: with an idempotency
        key (kept IDEMPOTENCY_TTL_S), or as nginx re-sends it (the id derives from its
        request id), or as the Redis client retries it (same id)."""
        ticket_id = ticket_id or await self._new_id(origin, spec.event)
        if idempotency is not None and spec.event == DEFAULT_EVENT:
            # The ticket goes to the shard of the key's claim, so that one script sees both.
            ticket_id = keys.in_shard(ticket_id, keys.idempotency_shard(idempotency.actor, idempotency.key))
        elif idempotency is not None:
            # An event's tickets live in the event's shard, the claim in the key's: bind the key
            # first, then create the ticket whose id the key determines, so that a retry finds it.
            await self._bind(idempotency)
            digest = await self._secret.mac("idempotent-ticket", f"{idempotency.actor}\n{idempotency.key}")
            ticket_id, idempotency = new_ticket_id(spec.event, digest[:16]), None
        script_keys, argv = self._create_call(ticket_id, spec, origin, idempotency)
        reply = CreateReply.of(await self._link.run(
            "create", self._link.scripts.create, script_keys.flat(), argv.flat(), write=True))
        return WriteResult(self._created(reply, spec.event), reply.replayed)

    def _create_call(
        self, ticket_id: str, spec: TicketSpec, origin: Origin, idempotency: IdempotencyKey | None
    ) -> tuple[CreateKeys, CreateArgv]:
        """create.lua's KEYS and ARGV: the claim and the event's hash, where there are."""
        shard = keys.shard_of(ticket_id)
        optional: list[str] = []
        fingerprint, ttl_s, claim_at, event_at = "", 0, 0, 0
        if idempotency is not None:
            optional.append(keys.idempotency(idempotency.actor, idempotency.key))
            fingerprint, ttl_s, claim_at = idempotency.fingerprint, self.cfg.idempotency_ttl_s, 4 + len(optional)
        if spec.event != DEFAULT_EVENT:
            optional.append(keys.event(spec.event))
            event_at = 4 + len(optional)
        script_keys = CreateKeys(keys.ticket(ticket_id), keys.index(shard), keys.stats(shard), keys.stream(shard),
                                 tuple(optional))
        argv = CreateArgv(ticket_id, origin.actor, origin.request_id, origin.client_ip, self.cfg.events_maxlen,
                          fingerprint, ttl_s, claim_at, event_at, _spec_args(spec))
        return script_keys, argv

    @staticmethod
    def _created(reply: CreateReply, event: str) -> Ticket:
        if reply.outcome == "mismatch":
            raise IdempotencyKeyReused()
        if reply.outcome == "no_event":
            raise EventNotFound(event)
        if reply.outcome == "sold_out":
            raise SoldOut(event)
        return ticket_from(reply.ticket_id, reply.values)

    async def create_batch(
        self, count: int, *, spec: TicketSpec = TicketSpec(), origin: Origin = Origin()
    ) -> list[Ticket]:
        """Create `count` tickets alike in one pipelined round trip per node (loading,
        benchmarks). Raises SoldOut if the event ran out of room on the way (what was issued
        stays)."""
        ids = [new_ticket_id(spec.event) for _ in range(count)]
        batch = self._link.batch()
        for tid in ids:
            script_keys, argv = self._create_call(tid, spec, origin, None)
            batch.script(self._link.scripts.create, script_keys.flat(), argv.flat(), write=True)
        replies = await batch.run(self._link.call("create_batch", extra_s=count / 10_000))
        return [self._created(CreateReply.of(raw), spec.event) for raw in replies]

    async def issue_batch(
        self, specs: Sequence[TicketSpec], *, origin: Origin, idempotency: IdempotencyKey | None = None
    ) -> tuple[list[Ticket], bool]:
        """Issue tickets of one event, all or nothing, in one script call (two with an
        Idempotency-Key: the key is bound first). The ids derive from the request (its key,
        else nginx's request id), so a retry finds the tickets it made: (tickets, replayed)."""
        event = specs[0].event
        if idempotency is not None:
            await self._bind(idempotency)
            seed = f"key\n{idempotency.actor}\n{idempotency.key}"
        elif origin.forwarded:
            seed = f"request\n{origin.actor}\n{origin.replay_id}"
        else:
            seed = f"random\n{new_ticket_id()}"
        stream = bytearray(await self._secret.expand("batch-tickets", seed, 16 * len(specs)))
        if event == DEFAULT_EVENT:  # one shard for the whole batch, so that one script sees it all
            keys.place_in_shard(stream, keys.shard_of(stream[:1].hex()), 16)
        ids = new_ticket_ids(event, stream)
        shard = keys.shard_of(ids[0])
        event_key = None if event == DEFAULT_EVENT else keys.event(event)
        prefix = keys.ticket_prefix(shard)  # every ticket's, as they share the shard
        script_keys = BatchKeys(keys.index(shard), keys.stats(shard), keys.stream(shard), keys.batches(shard),
                                event_key, tuple(prefix + tid for tid in ids))
        kind_of: dict[TicketSpec, int] = {}  # a batch's items are mostly alike: each kind is sent once
        kinds: list[str | int] = []
        per_ticket: list[str | int] = []
        for tid, spec in zip(ids, specs, strict=True):
            kind = kind_of.get(spec)
            if kind is None:
                kind = kind_of[spec] = len(kind_of) + 1
                kinds += _spec_args(spec)[1::2]
            per_ticket += (tid, kind)
        argv = BatchArgv(origin.actor, origin.request_id, origin.client_ip, self.cfg.events_maxlen,
                         "0" if event_key is None else "1", 5 if event_key is None else 6, len(kind_of), tuple(kinds),
                         tuple(per_ticket))
        reply = BatchReply.of(await self._link.run(
            "batch", self._link.scripts.batch, script_keys.flat(), argv.flat(), write=True,
            extra_s=len(specs) / 10_000))
        if reply.outcome == "no_event":
            raise EventNotFound(event)
        if reply.outcome == "sold_out":
            raise SoldOut(event)
        flat = reply.flat
        if len(flat) == 1:  # every ticket new, made at one time: the rest of a Ticket per kind of item
            rest: dict[TicketSpec, tuple[Any, ...]] = {}
            for spec in specs:
                if spec not in rest:
                    rest[spec] = ticket_from("", [flat[0], "1", spec.type, spec.holder, spec.seat,
                                                  _us(spec.valid_from), _us(spec.valid_until)])[1:]
            return [Ticket(tid, *rest[spec]) for tid, spec in zip(ids, specs, strict=True)], False
        tickets = [ticket_from(tid, [flat[2 * i], flat[2 * i + 1], spec.type, spec.holder, spec.seat,
                                     _us(spec.valid_from), _us(spec.valid_until)])
                   for i, (tid, spec) in enumerate(zip(ids, specs, strict=True))]
        return tickets, reply.replayed

    async def get(self, ticket_id: str) -> Ticket:
        """Return the ticket, or raise TicketNotFound."""
        key = keys.ticket(ticket_id)
        *values, source, code = await self._link.command("get", key, ("HMGET", key, *TICKET_FIELDS, "src", "code"))
        if values[0] is None:
            raise TicketNotFound(ticket_id)
        ticket = ticket_from(ticket_id, values)
        return ticket if source is None else ticket._replace(source=source, code=code)

    async def create_event(self, spec: EventSpec, origin: Origin = Origin()) -> EventInfo:
        """A new event. Through nginx its id derives from the caller and request id, so the
        same request again (a retry after a 503) gets the event it made, not a second one."""
        mark, event_id = "", new_event_id()
        if origin.forwarded:
            mark = keys.digest(origin.actor, origin.replay_id)[:16]
            event_id = keys.digest("event", origin.actor, origin.replay_id)[:8]
        argv = EventArgv(event_id, spec.name, _us(spec.starts_at), _us(spec.ends_at),
                         "" if spec.capacity is None else spec.capacity, mark)
        script_keys = EventKeys(keys.event(event_id), keys.event_index(keys.shard_of(event_id)))
        made = await self._link.run("event_create", self._link.scripts.event, script_keys.flat(), argv.flat(),
                                    write=True)
        if made == 2:
            return await self.get_event(event_id)
        if not made:  # the id is another's: draw a random one
            return await self.create_event(spec)
        return EventInfo(event_id, spec.name, spec.starts_at, spec.ends_at, spec.capacity, 0)

    async def get_event(self, event_id: str) -> EventInfo:
        key = keys.event(event_id)
        values = await self._link.command("event_get", key, ("HMGET", key, *EVENT_FIELDS))
        if values[0] is None:
            raise EventNotFound(event_id)
        return event_from(event_id, values)

    async def transition(
        self, ticket_id: str, transition: Transition, *, origin: Origin,
        idempotency: IdempotencyKey | None = None, reason: str | None = None,
    ) -> WriteResult:
        """Apply `transition` atomically, with its change. A ticket already in the target
        state raises TransitionRefused (and records a refused change). The same request id
        (from the same caller), or the same idempotency key, gets the first answer back,
        refusal included, with no second change."""
        if idempotency is None:
            record = keys.replay(ticket_id, origin.actor, origin.replay_id)
            ttl_s = self.cfg.replay_ttl_s
        else:
            await self._bind(idempotency)
            record = keys.idempotency_answer(idempotency.actor, idempotency.key, ticket_id)
            ttl_s = self.cfg.idempotency_ttl_s
        shard = keys.shard_of(ticket_id)
        script_keys = TransitionKeys(keys.ticket(ticket_id), record, keys.stats(shard), keys.stream(shard))
        argv = TransitionArgv(STATE_CODES[transition.target], ttl_s, transition.value, origin.actor,
                              origin.request_id, origin.client_ip, self.cfg.events_maxlen, ticket_id, reason or "")
        reply = TransitionReply.of(await self._link.run(
            "transition", self._link.scripts.transition, script_keys.flat(), argv.flat(), write=True))
        if reply.outcome == "missing":
            raise TicketNotFound(ticket_id)
        if reply.outcome == "mismatch":
            raise IdempotencyKeyReused()
        ticket = ticket_from(ticket_id, reply.values)
        if reply.outcome == "conflict":
            raise TransitionRefused(ticket, replayed=reply.replayed)
        return WriteResult(ticket=ticket, replayed=reply.replayed)

    async def _bind(self, idempotency: IdempotencyKey) -> None:
        await bind(self._link, idempotency, self.cfg.idempotency_ttl_s)

    async def history(self, ticket_id: str) -> list[Change]:
        """The ticket's changes as the tickets processor recorded them, oldest first."""
        script_keys = HistoryKeys(keys.ticket(ticket_id), keys.history(ticket_id))
        exists, *flat = await self._link.run("history", self._link.scripts.history, script_keys.flat(), NO_ARGV.flat())
        if not exists:
            raise TicketNotFound(ticket_id)
        entries = sorted(zip(flat[::2], flat[1::2], strict=True), key=lambda kv: stream_id_key(kv[0]))
        return [change_of(entry_id, json.loads(raw)) for entry_id, raw in entries]

    async def stats(self) -> Stats:
        """Exact totals (kept by the same scripts that change tickets) and the processor's
        counts by change type. One round trip per node."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.hmget(keys.stats(shard), list(_STAT_FIELDS))
            batch.cmd.hgetall(keys.processed(shard))
        replies = await batch.run(self._link.call("stats"))
        totals = [sum(int(r[i] or 0) for r in replies[::2]) for i in range(len(_STAT_FIELDS))]
        processed: dict[str, int] = {t.value: 0 for t in ChangeType}
        for counts in replies[1::2]:
            for name, n in counts.items():
                processed[name] = processed.get(name, 0) + int(n)
        total, valid, invalid, revoked, refused = totals
        return Stats(total, valid, invalid, revoked, refused, processed=processed)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless Redis answers."""
        async with self._link.call("ping"):
            await self.redis.ping()

    async def ready(self) -> None:
        """Raise unless a write would succeed now: a probe key written on every master (one
        shard of each), confirmed by its replicas where they must confirm. A master that
        answers PING can still refuse writes, or have them go unconfirmed (a Cluster in the
        second after a full resync, a master that lost its replicas)."""
        async with self._link.call("ready"):
            await self._link.ready()  # a Cluster's slot map, to know each shard's master
        probes: dict[str, str] = {}
        for shard in keys.SHARDS:
            key = keys.ready_probe(shard)
            node = self._link.node_of(key)
            probes.setdefault("" if node is None else node.name, key)
        await asyncio.gather(*(self._link.command("ready", key, ("SET", key, "1", "EX", READY_PROBE_TTL_S), write=True)
                               for key in probes.values()))
