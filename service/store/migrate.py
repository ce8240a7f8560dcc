"""Move keys of earlier layouts to the current one, in place:
- the first layout (16 shards, the hash tag one hex digit: `tkt:{a}:<id>`), on one
  redis-server, to 64 shards (keys.SHARDS);
- ticket hashes under the former prefix, `tkt:{ab}:<id>`, renamed to `t:{ab}:<id>` (the same
  slot: on a Cluster too).

    python -m service.store.migrate            # REDIS_URL as for the service

Run it with the service stopped. The move to 64 shards also waits for the tickets processor
to have caught up (it refuses otherwise: an unprocessed entry would be processed twice or not
at all). Every old shard `h`
maps onto the 4 new shards whose index is 4h .. 4h+3 (the top 6 bits of the id's first byte
extend its first hex digit), so each new stream takes the entries of one old stream, in
order, under their own ids: change-feed positions stay comparable, history is kept, and the
processor's group starts after the last copied entry. Counters are recounted from the tickets.
A record whose new shard the key does not tell (an Idempotency-Key's answer) is copied to all
4 candidates; the lookups find the right one, and the others expire with their TTL.

To move to a Redis Cluster afterwards, import the migrated instance with Redis's own
`redis-cli --cluster import <cluster node> --cluster-from <this instance> --cluster-copy`.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from ..settings import Settings
from . import keys
from .client import redis_from_settings
from .link import Client

log = logging.getLogger(__name__)

OLD_SHARDS = "0123456789abcdef"
# The ticket hash's former key kind (keys.TICKET now).
OLD_TICKET = "tkt"
_OLD_KEY = re.compile(r"^(?P<kind>[a-z]+):\{(?P<tag>[0-9a-f])\}(?::(?P<rest>.*))?$")
_CHUNK = 500


def candidates(old_tag: str) -> list[str]:
    """The new shards an old shard's keys go to."""
    first = OLD_SHARDS.index(old_tag) * 4
    return [keys.SHARDS[i] for i in range(first, first + 4)]


@dataclass
class Report:
    renamed: Counter[str] = field(default_factory=Counter)
    stream_entries: int = 0
    # Ticket hashes renamed from the former prefix, and those left where a key of the new
    # name was already there (never overwritten: the operator decides).
    prefixed: int = 0
    prefix_conflicts: list[str] = field(default_factory=list)


class NotCaughtUp(Exception):
    pass


async def old_layout_present(redis: Client) -> bool:
    """Keys of an earlier layout: of the 16 shards, or ticket hashes of the former prefix."""
    if isinstance(redis, Redis) and await sixteen_shards_present(redis):
        return True
    return await old_prefix_present(redis)


async def sixteen_shards_present(redis: Redis) -> bool:
    async with redis.pipeline(transaction=False) as pipe:
        for tag in OLD_SHARDS:
            pipe.exists(f"tickets:{{{tag}}}", f"events:{{{tag}}}", f"evts:{{{tag}}}")
        return any(await pipe.execute())


async def old_prefix_present(redis: Client) -> bool:
    """A ticket of each shard's index, at random, under the former prefix: every ticket moves
    at once, so one of them tells (two round trips, not a scan of the keyspace)."""
    async with redis.pipeline(transaction=False) as pipe:
        for shard in keys.SHARDS:
            pipe.srandmember(keys.index(shard))
        sampled = [(shard, tid) for shard, tid in zip(keys.SHARDS, await pipe.execute(), strict=True) if tid]
    if not sampled:
        return False
    async with redis.pipeline(transaction=False) as pipe:
        for shard, tid in sampled:
            pipe.exists(_old_ticket(shard, tid))
        return any(await pipe.execute())


def _old_ticket(shard: str, ticket_id: str) -> str:
    return f"{OLD_TICKET}:{{{shard}}}:{ticket_id}"


async def rename_old_prefix(redis: Client, report: Report) -> None:
    """Every `tkt:{<shard>}:<id>` to `t:{<shard>}:<id>`, unless that is taken."""
    old = [k async for k in redis.scan_iter(match=f"{OLD_TICKET}:{{*}}:*", count=1000)]
    # redis-py's Cluster pipeline refuses RENAMENX: there, calls in flight together, within
    # the client's connections per node.
    chunk_size = _CHUNK if isinstance(redis, Redis) else 32
    for start in range(0, len(old), chunk_size):
        chunk = old[start:start + chunk_size]
        done = await _renamenx(redis, [(key, keys.TICKET + key[len(OLD_TICKET):]) for key in chunk])
        report.prefixed += sum(1 for d in done if d)
        report.prefix_conflicts += [k for k, d in zip(chunk, done, strict=True) if not d]


async def _check_caught_up(redis: Redis) -> None:
    for tag in OLD_SHARDS:
        stream = f"events:{{{tag}}}"
        if not await redis.exists(stream):
            continue
        for group in await redis.xinfo_groups(stream):
            if int(group.get("pending") or 0) or int(group.get("lag") or 0):
                raise NotCaughtUp(f"{stream}: group {group['name']} has unprocessed entries; "
                                  "let the tickets processor catch up first")


async def _renamenx(redis: Client, names: list[tuple[str, str]]) -> list[bool]:
    if isinstance(redis, Redis):
        async with redis.pipeline(transaction=False) as pipe:
            for old, new in names:
                pipe.renamenx(old, new)
            return [bool(d) for d in await pipe.execute()]
    return [bool(d) for d in await asyncio.gather(*(redis.renamenx(old, new) for old, new in names))]


async def migrate(redis: Client) -> Report:
    report = Report()
    if isinstance(redis, Redis) and await sixteen_shards_present(redis):
        await _to_64_shards(redis, report)
    await rename_old_prefix(redis, report)
    return report


async def _to_64_shards(redis: Redis, report: Report) -> None:
    await _check_caught_up(redis)
    old_keys = [k async for k in redis.scan_iter(match="*:{?}*", count=1000) if _OLD_KEY.match(k)]
    simple = [k for k in old_keys if _OLD_KEY.match(k)["kind"] in  # type: ignore[index]
              ("tkt", "history", "evt", "lst", "lsts", "replay", "idem")]
    for start in range(0, len(simple), _CHUNK):
        async with redis.pipeline(transaction=False) as pipe:
            for key in simple[start:start + _CHUNK]:
                _move(pipe, key, report)
            await pipe.execute()
    for tag in OLD_SHARDS:
        await _move_sets(redis, tag, report)
        report.stream_entries += await _move_stream(redis, tag)
        await _move_processed(redis, tag)
    await _recount(redis)


def _move(pipe: object, key: str, report: Report) -> None:
    m = _OLD_KEY.match(key)
    assert m is not None
    kind, tag, rest = m["kind"], m["tag"], m["rest"] or ""
    ident = rest.split(":", 1)[0]
    if kind == "idem" and rest.endswith(":answer"):
        targets = candidates(tag)  # in its ticket's shard, which the key does not name
    elif kind == "replay" and keys.shard_of(ident) not in candidates(tag):
        targets = candidates(tag)  # a scan of another event's ticket, answered in the list's shard
    else:
        targets = [keys.shard_of(ident)]
    new_kind = keys.TICKET if kind == OLD_TICKET else kind
    for new_tag in targets[1:]:
        pipe.copy(key, f"{new_kind}:{{{new_tag}}}:{rest}")  # type: ignore[attr-defined]
    pipe.rename(key, f"{new_kind}:{{{targets[0]}}}:{rest}")  # type: ignore[attr-defined]
    report.renamed[kind] += 1


async def _move_sets(redis: Redis, tag: str, report: Report) -> None:
    for kind in ("tickets", "evts"):
        old = f"{kind}:{{{tag}}}"
        members = [m async for m in redis.sscan_iter(old, count=1000)]
        by_shard: dict[str, list[str]] = {}
        for member in members:
            by_shard.setdefault(keys.shard_of(member), []).append(member)
        async with redis.pipeline(transaction=False) as pipe:
            for shard, ids in by_shard.items():
                for start in range(0, len(ids), _CHUNK):
                    pipe.sadd(f"{kind}:{{{shard}}}", *ids[start:start + _CHUNK])
            pipe.delete(old)
            await pipe.execute()
        report.renamed[kind] += len(members)


async def _move_stream(redis: Redis, tag: str) -> int:
    old = f"events:{{{tag}}}"
    last: dict[str, str] = {}
    moved, after = 0, "-"
    while entries := _any(await redis.xrange(old, after, "+", count=_CHUNK)):
        async with redis.pipeline(transaction=False) as pipe:
            for entry_id, fields in entries:
                shard = keys.shard_of(fields["t"])
                pipe.xadd(keys.stream(shard), fields, id=entry_id)
                last[shard] = entry_id
            await pipe.execute()
        moved += len(entries)
        after = "(" + entries[-1][0]
    for shard, entry_id in last.items():
        await redis.xgroup_create(keys.stream(shard), keys.PROCESSOR_GROUP, id=entry_id, mkstream=True)
    await redis.delete(old)
    return moved


async def _move_processed(redis: Redis, tag: str) -> None:
    old = f"processed:{{{tag}}}"
    counts = await redis.hgetall(old)
    if counts:
        target = keys.processed(candidates(tag)[0])
        async with redis.pipeline(transaction=False) as pipe:
            for name, n in counts.items():
                pipe.hincrby(target, name, int(n))
            pipe.delete(old)
            await pipe.execute()


async def _recount(redis: Redis) -> None:
    """Each new shard's counters from its tickets; refusals and replays, which no ticket
    records, stay with the first new shard of their old one."""
    for tag in OLD_SHARDS:
        old = await redis.hgetall(f"stats:{{{tag}}}")
        await redis.delete(f"stats:{{{tag}}}")
        for i, shard in enumerate(candidates(tag)):
            counts: Counter[str] = Counter()
            ids = [tid async for tid in redis.sscan_iter(keys.index(shard), count=1000)]
            for start in range(0, len(ids), _CHUNK):
                async with redis.pipeline(transaction=False) as pipe:
                    for tid in ids[start:start + _CHUNK]:
                        pipe.hget(keys.ticket(tid), "valid")
                    for state in await pipe.execute():
                        counts["total"] += 1
                        counts[{"1": "valid", "0": "invalid", "r": "revoked"}.get(str(state), "valid")] += 1
            if i == 0:
                for name in ("refused", "replayed"):
                    counts[name] += int(old.get(name, 0))
            if counts:
                await redis.hset(keys.stats(shard), mapping=_any(dict(counts)))


def _any(value: object) -> Any:
    """A reply as it is: redis-py's types allow bytes and None where decode_responses and the
    command's meaning rule them out."""
    return value


async def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    redis = redis_from_settings(Settings.from_env(), client_name="tickets-migrate")
    try:
        # Not gated on old_layout_present: its sample can miss what an interrupted run left.
        report = await migrate(redis)
    except NotCaughtUp as exc:
        log.error("%s", exc)
        return 1
    finally:
        await redis.aclose()
    if report == Report():
        log.info("no keys of an earlier layout: nothing to do")
    if report.renamed:
        log.info("moved %s and %d stream entries to the 64-shard layout", dict(report.renamed), report.stream_entries)
    if report.prefixed:
        log.info("renamed %d ticket hashes from %s: to %s:", report.prefixed, OLD_TICKET, keys.TICKET)
    if report.prefix_conflicts:
        log.error("left %d ticket hashes under %s: where a key of the new name exists, e.g. %s",
                  len(report.prefix_conflicts), OLD_TICKET, report.prefix_conflicts[0])
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
