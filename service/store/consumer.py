"""The consumer side of the event streams, for the tickets processor: one consumer group
over every shard's stream, read, claimed, applied and acknowledged per shard, so that no
command spans two Cluster slots."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from . import keys
from .calls import Caller
from .scripts import Scripts


@dataclass(frozen=True, slots=True)
class StreamEntry:
    shard: str
    entry_id: str
    fields: dict[str, str]


class StreamConsumer:
    def __init__(self, redis: Redis, caller: Caller, scripts: Scripts, group: str = keys.PROCESSOR_GROUP) -> None:
        self.redis, self._caller, self._scripts, self.group = redis, caller, scripts, group

    async def ensure_group(self) -> None:
        """Create the consumer group on every shard's stream (and the stream), once."""
        for shard in keys.SHARDS:
            async with self._caller.call("xgroup"):
                try:
                    await self.redis.xgroup_create(keys.stream(shard), self.group, id="0", mkstream=True)
                except ResponseError as exc:  # BUSYGROUP: it exists, which is the point
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def read_new(self, consumer: str, count: int) -> list[StreamEntry]:
        """New entries for this consumer from every shard, without waiting."""
        return await self._read_group(consumer, ">", count)

    async def read_own_pending(self, consumer: str, count: int) -> list[StreamEntry]:
        """Entries delivered to this consumer name and not yet acknowledged."""
        return await self._read_group(consumer, "0", count)

    async def _read_group(self, consumer: str, start: str, count: int) -> list[StreamEntry]:
        # One XREADGROUP per shard, pipelined: a command naming two streams would span two
        # hash slots, which Redis Cluster refuses. Each shard may give the whole `count`: an
        # event's activity is all in its shard, and a rush at one event must not be read a
        # sixteenth of a batch at a time.
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.SHARDS:
                pipe.xreadgroup(self.group, consumer, {keys.stream(shard): start}, count=count)
            async with self._caller.call("xreadgroup"):
                replies = await pipe.execute()
        return [entry for reply in replies for entry in _entries(reply)]

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[StreamEntry]:
        """Take over entries that another consumer left unacknowledged for min_idle_ms."""
        out: list[StreamEntry] = []
        for shard in keys.SHARDS:
            async with self._caller.call("xautoclaim"):
                reply = await self.redis.xautoclaim(
                    keys.stream(shard), self.group, consumer, min_idle_ms, "0-0", count=count
                )
            out.extend(StreamEntry(shard, eid, f) for eid, f in reply[1] if f)
        return out

    async def apply(self, entries: Sequence[StreamEntry]) -> int:
        """Record each entry in its ticket's history, count it, and ack it: one script call
        per shard, all in one pipelined round trip. Returns how many were new (an entry
        seen before is not counted again)."""
        by_shard: dict[str, list[StreamEntry]] = {}
        for e in entries:
            by_shard.setdefault(e.shard, []).append(e)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, batch in by_shard.items():
                script_keys = [keys.processed(shard), keys.stream(shard)]
                script_keys += [keys.history(e.fields["t"]) for e in batch]
                args: list[str] = [self.group]
                for e in batch:
                    args += [e.entry_id, e.fields["e"], json.dumps(e.fields)]
                await self._scripts.process(keys=script_keys, args=args, client=pipe)
            async with self._caller.call("process"):
                results = await pipe.execute()
        return sum(int(r) for r in results)

    async def lag(self) -> int:
        """Entries not yet acknowledged by the group: never delivered, or delivered and pending."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard in keys.SHARDS:
                pipe.xinfo_groups(keys.stream(shard))
            async with self._caller.call("xinfo"):
                replies = await pipe.execute(raise_on_error=False)
        lag = 0
        for groups in replies:
            for g in groups if isinstance(groups, list) else []:
                if g["name"] == self.group:
                    lag += int(g.get("lag") or 0) + int(g["pending"])
        return lag


def _entries(reply: Any) -> list[StreamEntry]:
    out: list[StreamEntry] = []
    for stream, entries in reply or []:
        shard = keys.shard_of_stream(stream)
        out.extend(StreamEntry(shard, eid, f) for eid, f in entries if f)
    return out
