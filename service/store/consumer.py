"""The consumer side of the change streams, for the tickets processor: one consumer group
over every shard's stream, read, claimed, applied and acknowledged per shard, so that no
command spans two Cluster slots. A step's reads (one XREADGROUP per shard) and applies (one
script call per shard, a few for a shard of many changes) are auto-pipelined like the
request path's calls (pipe.py): one round trip per node, packed by hiredis, and the replies
left as Redis sent them, without redis-py's per-entry parsing (at a batch issue's rate,
packing, parsing and json.dumps were most of the processor's time)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import msgspec
from redis.exceptions import ResponseError

from ..models import Refusal, device_of
from . import keys
from .adaptors import ProcessArgv, ProcessKeys
from .entries import entry_changes, entry_size, first_change_key, stream_id_key
from .link import Arg, Link

T = TypeVar("T")
_encode = msgspec.json.Encoder().encode


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
        group = ("XREADGROUP", "GROUP", self.group, consumer, "COUNT", count, "STREAMS")
        replies = await _all(self._link.command("xreadgroup", stream, (*group, stream, start))
                             for stream in map(keys.stream, shards))
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
        """Record each entry's changes in their tickets' histories, count them, and ack the
        entries: a script call per shard, the shards' calls pipelined in one round trip per
        node. Returns how many changes were new (one seen before is not counted again). Not
        waited for by replicas: an entry whose record a failover loses is still in the
        stream, unacknowledged, and is applied again."""
        by_shard: dict[str, list[StreamEntry]] = {}
        for e in entries:
            by_shard.setdefault(e.shard, []).append(e)
        return sum(await _all(self._apply_shard(shard, of_shard) for shard, of_shard in by_shard.items()))

    async def _apply_shard(self, shard: str, entries: Sequence[StreamEntry]) -> int:
        """A shard's entries, CHANGES_PER_CALL changes (whole entries) a call, one call after
        another: Redis runs a client's pipelined calls one after another, the gates' scans
        waiting, and a read of batch entries may hold a hundred times as many changes."""
        new = 0
        for part in _parts(entries):
            new += int(await self._apply_call(shard, part))
        return new

    def _apply_call(self, shard: str, entries: Sequence[StreamEntry]) -> Awaitable[Any]:
        # Then the histories and the scan logs; each change's 6 values name its history's
        # position among them, and its event's scan log's.
        script_keys = [keys.processed(shard), keys.stream(shard), keys.unowned(shard), keys.device_scans(shard)]
        scan_logs: dict[str, int] = {}
        args: list[Arg] = []
        for e in entries:
            if "ids" in e.fields:
                _add_batch_entry(shard, e, script_keys, args)
                continue
            ticket_id = e.fields.get("t", "")
            # Only a ticket of this shard has its history here (one slot per script), and only
            # one that exists: a scan of an id nobody issued would leave a history that no
            # read shows and nothing trims.
            owned = (len(ticket_id) == 36 and keys.shard_of(ticket_id) == shard
                     and e.fields.get("why") != Refusal.UNKNOWN_TICKET.value)
            if owned:
                script_keys.append(keys.history(ticket_id))
            kind = e.fields["e"]
            device = device_of(e.fields.get("a", "")) if kind.startswith("checkin") else None
            args += [e.entry_id, kind, _encode(e.fields), len(script_keys) if owned else 0,
                     device[0] if device else "", _scan_log_at(shard, e.fields, script_keys, scan_logs)]
        processed, stream, unowned, device_scans, *tail = script_keys
        call_keys = ProcessKeys(processed, stream, unowned, device_scans, tuple(tail))
        argv = ProcessArgv(self.group, len(entries), tuple(e.entry_id for e in entries), tuple(args))
        return self._link.run("process", self._link.scripts.process, call_keys.flat(), argv.flat())

    async def lag(self) -> int:
        """Entries not yet acknowledged by the group: never delivered, or delivered and pending.
        Redis 7.0's own `lag` stays high for good once entries were trimmed before the group
        read them (redis/redis#13957, fixed in later versions): a group that has been handed
        the stream's last id has nothing left to deliver, and never more than the stream holds."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.xinfo_groups(keys.stream(shard))
            batch.cmd.xinfo_stream(keys.stream(shard))
        # A stream that does not exist yet has no group, and nothing to lag behind.
        replies = await batch.run(self._link.call("xinfo"), tolerate=_no_such_key)
        lag = 0
        for groups, stream in zip(replies[::2], replies[1::2], strict=True):
            for g in groups if isinstance(groups, list) and isinstance(stream, dict) else []:
                if g["name"] == self.group:
                    lag += int(g["pending"]) + _undelivered(g, stream)
        return lag


def _undelivered(group: dict[str, Any], stream: dict[str, Any]) -> int:
    if stream_id_key(group["last-delivered-id"]) >= stream_id_key(stream["last-generated-id"]):
        return 0
    held = int(stream["length"])
    reported = group.get("lag")
    return held if reported is None else min(int(reported), held)


# Changes per processor script call: a call blocks Redis while it runs, and a gate's scan
# waits behind it. 200 single entries were one call; a batch entry holds up to 100 changes.
CHANGES_PER_CALL = 256


def _parts(entries: Sequence[StreamEntry]) -> Iterator[Sequence[StreamEntry]]:
    """Runs of whole entries holding at most CHANGES_PER_CALL changes (or one larger entry)."""
    start = size = 0
    for n, e in enumerate(entries):
        weight = entry_size(e.fields)
        if size and size + weight > CHANGES_PER_CALL:
            yield entries[start:n]
            start, size = n, 0
        size += weight
    if start < len(entries):
        yield entries[start:]


_SAFE_IDS = re.compile(r"[0-9a-f,-]+")
_T_OPEN = b'{"t":"'
_FIRST_BYTES = {shard: keys.first_bytes(shard) for shard in keys.SHARDS}


def _add_batch_entry(shard: str, e: StreamEntry, script_keys: list[str], args: list[Arg]) -> None:
    """A batch entry's changes, as entry_changes gives them, made at a fraction of the cost
    (they were most of the processor's time): when, as batch.lua makes them, its tickets
    are all of its shard and its ids need no JSON escaping, each change's JSON is the entry's
    own with the ticket's id put in."""
    text = e.fields["ids"]
    ids = text.split(",")
    first = _FIRST_BYTES[shard]
    if not (_SAFE_IDS.fullmatch(text) and all(len(t) == 36 and t[:2] in first for t in ids)):
        for event_id, fields in entry_changes(e.entry_id, e.fields):  # not one of batch.lua's
            args += [event_id, fields["e"], _encode(fields), 0, "", 0]
        return
    rest = _encode({"t": "", **{k: v for k, v in e.fields.items() if k != "ids"}})[len(_T_OPEN):]
    kind, prefix = e.fields["e"], keys.history_prefix(shard)
    ms, seq = first_change_key(e.entry_id, e.fields)
    at = len(script_keys)
    for n, ticket_id in enumerate(ids):
        script_keys.append(prefix + ticket_id)
        args += (f"{ms}-{seq + n}", kind, _T_OPEN + ticket_id.encode() + rest, at + n + 1, "", 0)


def _scan_log_at(shard: str, fields: Mapping[str, str], script_keys: list[str], scan_logs: dict[str, int]) -> int:
    """The KEYS position of the scan log of a scan's event (added once a call), 0 for a change
    that is not a scan. A list's scans are in its event's shard: its id begins with the event's."""
    if not fields["e"].startswith("checkin") or len(fields.get("l", "")) < 8:
        return 0
    event_id = fields["l"][:8]
    if keys.shard_of(event_id) != shard:
        return 0
    key = keys.scan_log(event_id)
    if key not in scan_logs:
        script_keys.append(key)
        scan_logs[key] = len(script_keys)
    return scan_logs[key]


def _no_such_key(exc: Exception) -> bool:
    return isinstance(exc, ResponseError) and "no such key" in str(exc).lower()


async def _all(calls: Iterable[Awaitable[T]]) -> list[T]:
    """Every call's result, in order, once all have ended: the first failure is raised
    then, so that none is left running behind a failed step."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results  # type: ignore[return-value]


def _entries(reply: Any) -> list[StreamEntry]:
    """XREADGROUP's reply as Redis sends it: {stream: [[id, [field, value, ...]], ...]} in
    RESP3, [[stream, [...]]] in RESP2 (an entry trimmed away since it was delivered has no
    fields: it is skipped)."""
    out: list[StreamEntry] = []
    for stream, entries in reply.items() if isinstance(reply, dict) else reply or []:
        shard = keys.shard_of_stream(stream)
        for eid, flat in entries:
            if flat:
                it = iter(flat)
                out.append(StreamEntry(shard, eid, dict(zip(it, it, strict=True))))
    return out
