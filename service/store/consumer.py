"""The consumer side of the event streams, for the tickets processor: one consumer group
over every shard's stream, read, claimed, applied and acknowledged per shard, so that no
command spans two Cluster slots: each step is one pipeline, one round trip per node."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from . import keys
from .link import Link


@dataclass(frozen=True, slots=True)
class StreamEntry:
    shard: str
    entry_id: str
    fields: dict[str, str]


class StreamConsumer:
    def __init__(self, link: Link, group: str = keys.PROCESSOR_GROUP) -> None:
        self._link, self.group = link, group
        self.redis = link.redis

    async def ensure_group(self) -> None:
        """Create the consumer group on every shard's stream (and the stream), once."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.xgroup_create(keys.stream(shard), self.group, id="0", mkstream=True)
        # BUSYGROUP: it exists, which is the point.
        await batch.run(self._link.call("xgroup"), tolerate=lambda e: "BUSYGROUP" in str(e))

    async def read_new(
        self, consumer: str, count: int, shards: Sequence[str] = keys.SHARDS
    ) -> list[StreamEntry]:
        """New entries for this consumer from the given shards (all by default), without
        waiting."""
        return await self._read_group(consumer, ">", count, shards)

    async def read_own_pending(self, consumer: str, count: int) -> list[StreamEntry]:
        """Entries delivered to this consumer name and not yet acknowledged."""
        return await self._read_group(consumer, "0", count)

    async def _read_group(
        self, consumer: str, start: str, count: int, shards: Sequence[str] = keys.SHARDS
    ) -> list[StreamEntry]:
        # One XREADGROUP per shard, pipelined: a command naming two streams would span two
        # hash slots, which Redis Cluster refuses. Each shard may give the whole `count`: an
        # event's activity is all in its shard, and a rush at one event must not be read a
        # sixteenth of a batch at a time.
        batch = self._link.batch()
        for shard in shards:
            batch.cmd.xreadgroup(self.group, consumer, {keys.stream(shard): start}, count=count)
        replies = await batch.run(self._link.call("xreadgroup"))
        return [entry for reply in replies for entry in _entries(reply)]

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries that another consumer left unacknowledged for min_idle_ms."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.xautoclaim(keys.stream(shard), self.group, consumer, min_idle_ms, "0-0", count=count)
        replies = await batch.run(self._link.call("xautoclaim"))
        return [StreamEntry(shard, eid, f) for shard, reply in zip(keys.SHARDS, replies, strict=True)
                for eid, f in reply[1] if f]

    async def apply(self, entries: Sequence[StreamEntry]) -> int:
        """Record each entry in its ticket's history, count it, and ack it: one script call
        per shard, in one pipelined round trip per node. Returns how many were new (an entry
        seen before is not counted again). Not waited for by replicas: an entry whose
        record a failover loses is still in the stream, unacknowledged, and is applied again."""
        by_shard: dict[str, list[StreamEntry]] = {}
        for e in entries:
            by_shard.setdefault(e.shard, []).append(e)
        batch = self._link.batch()
        for shard, entries_of_shard in by_shard.items():
            script_keys = [keys.processed(shard), keys.stream(shard), keys.unowned(shard)]
            args: list[str | int | float] = [self.group]
            for e in entries_of_shard:
                ticket_id = e.fields.get("t", "")
                # Only a ticket of this shard has its history here (one slot per script).
                owned = len(ticket_id) == 36 and keys.shard_of(ticket_id) == shard
                if owned:
                    script_keys.append(keys.history(ticket_id))
                args += [e.entry_id, e.fields["e"], json.dumps(e.fields), len(script_keys) if owned else 0]
            batch.script(self._link.scripts.process, script_keys, args)
        results = await batch.run(self._link.call("process"))
        return sum(int(r) for r in results)

    async def lag(self) -> int:
        """Entries not yet acknowledged by the group: never delivered, or delivered and pending."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.xinfo_groups(keys.stream(shard))
        # A stream that does not exist yet has no group, and nothing to lag behind.
        replies = await batch.run(self._link.call("xinfo"), tolerate=_no_such_key)
        lag = 0
        for groups in replies:
            for g in groups if isinstance(groups, list) else []:
                if g["name"] == self.group:
                    lag += int(g.get("lag") or 0) + int(g["pending"])
        return lag


def _no_such_key(exc: Exception) -> bool:
    return isinstance(exc, ResponseError) and "no such key" in str(exc).lower()


def _entries(reply: Any) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for stream, entries in reply or []:
        shard = keys.shard_of_stream(stream)
        out.extend(StreamEntry(shard, eid, f) for eid, f in entries if f)
    return out
