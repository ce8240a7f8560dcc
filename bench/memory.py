"""`make bench-memory`: Redis bytes per ticket and per event, and the cost of a page of
`GET /ticket` at 10,000 tickets against BENCH_TICKETS (default 1,000,000).

It starts its own redis-server (no persistence) on a free port, loads tickets through the
store's own create script, one call a ticket (so each appends its own `created` entry, as
POST /ticket does), and measures:
- bytes per ticket, hash plus index: the growth of used_memory, less the event streams;
- bytes per event: what deleting the streams frees, per event they held;
- a page: the median time of the store's list_page, and Redis's own µs per list script call;
- the same two bytes for as many tickets issued as POST /ticket/batch issues them
  (batch.lua, 1,000 a call): one stream entry holds 100 events.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import statistics
import subprocess
import tempfile
import time
from typing import Any

from redis.asyncio import Redis

from bench.commit import measured_commit
from service.models import EventSpec, Origin, TicketSpec
from service.store import SHARDS, Store, StoreConfig, keys
from tooling.procs import free_port, wait_until
from tooling.up import ROOT, binary

TARGET_BYTES_PER_TICKET = 250
TARGET_PAGE_RATIO = 1.5


async def used_memory(redis: Redis) -> int:
    info = await redis.info("memory")
    return int(info["used_memory"])


async def drop_streams(redis: Redis) -> tuple[int, int]:
    """Delete every shard's event stream and its list of batch entries: (the bytes that
    freed, the entries the streams held). MEMORY USAGE of a stream is an estimate (of its
    radix tree, and of its listpacks by their length, not their allocation): it said 93.5
    bytes an entry where deleting the streams freed 83.6."""
    before, entries = await used_memory(redis), 0
    for shard in SHARDS:
        entries += await redis.xlen(keys.stream(shard))
        await redis.delete(keys.stream(shard), keys.batches(shard))
    return before - await used_memory(redis), entries


async def load(store: Store, upto: int) -> None:
    have = (await store.tickets.stats()).total
    while have < upto:
        batch = min(5000, upto - have)
        await store.tickets.create_batch(batch)
        have += batch


async def page_cost(store: Store, redis: Redis, pages: int = 300) -> dict[str, float]:
    """Median wall time of a 100-ticket page, walking the whole list (and again from the
    start when it ends), and Redis's own time per page (its two script calls)."""
    await redis.config_resetstat()
    times = []
    cursor: str | None = None
    for _ in range(pages):
        t0 = time.perf_counter()
        page = await store.feed.list_page(cursor, 100)
        if len(page.tickets) == 100:  # the last page of the walk is shorter: not counted
            times.append(time.perf_counter() - t0)
        cursor = page.next_cursor
    stats = await redis.info("commandstats")
    evalsha = stats.get("cmdstat_evalsha", {})
    return {
        "page_median_ms": round(statistics.median(times) * 1000, 3),
        "redis_us_per_page": round(float(evalsha.get("usec", 0.0)) / pages, 1),
    }


async def bytes_per_ticket(redis: Redis, store: Store, spec: TicketSpec, n: int) -> float:
    """Redis bytes per ticket (hash plus index; streams left out) for `n` tickets like `spec`."""
    empty = await used_memory(redis)
    made = 0
    while made < n:
        batch = min(5000, n - made)
        await store.tickets.create_batch(batch, spec=spec)
        made += batch
    await drop_streams(redis)
    return round((await used_memory(redis) - empty) / n, 1)


async def variants(port: int, n_tickets: int) -> dict[str, float]:
    """Tickets of an event, with a type and no optional strings, and with holder and seat."""
    redis = Redis(port=port, decode_responses=True)
    store = Store(redis, StoreConfig(replay_ttl_s=60, events_maxlen=n_tickets))
    try:
        out = {}
        for name, holder, seat in (("event_and_type", None, None),
                                   ("event_type_holder_seat", "Ada Lovelace", "Row 12 Seat 34")):
            await redis.flushall()
            event = await store.tickets.create_event(EventSpec("Bench"))
            spec = TicketSpec(event=event.id, type="general", holder=holder, seat=seat)
            out[name] = await bytes_per_ticket(redis, store, spec, n_tickets)
        return out
    finally:
        await redis.aclose()


async def batch_issued(port: int, n_tickets: int) -> dict[str, float]:
    """Bytes per ticket (hash plus index) and per event (the streams and their lists of batch
    entries) of tickets issued 1,000 a call, as the API's batch route issues them."""
    redis = Redis(port=port, decode_responses=True)
    store = Store(redis, StoreConfig(replay_ttl_s=60, events_maxlen=n_tickets))
    try:
        await redis.flushall()
        empty = await used_memory(redis)
        specs = [TicketSpec()] * 1000
        for _ in range(n_tickets // len(specs)):
            await store.tickets.issue_batch(specs, origin=Origin())
        n = (await store.tickets.stats()).total
        streams, _ = await drop_streams(redis)  # one entry holds up to 100 events (tickets)
        return {"tickets": n, "bytes_per_ticket": round((await used_memory(redis) - empty) / n, 1),
                "bytes_per_event": round(streams / n, 1)}
    finally:
        await redis.aclose()


async def measure(port: int, n_tickets: int) -> dict[str, Any]:
    redis = Redis(port=port, decode_responses=True)
    store = Store(redis, StoreConfig(replay_ttl_s=60, events_maxlen=n_tickets))
    try:
        await redis.flushall()
        empty = await used_memory(redis)
        await load(store, 10_000)
        small = await page_cost(store, redis)
        await load(store, n_tickets)
        large = await page_cost(store, redis)
        full = await used_memory(redis)
        streams, events = await drop_streams(redis)
        per_ticket = (full - empty - streams) / n_tickets
        return {
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "tickets": n_tickets,
            "bytes_per_ticket": round(per_ticket, 1),
            "bytes_per_event": round(streams / max(events, 1), 1),
            "events": events,
            "used_memory_mb": round(full / 2**20, 1),
            "page_at_10k": small,
            "page_at_n": large,
            "page_ratio": round(large["page_median_ms"] / small["page_median_ms"], 2),
        }
    finally:
        await redis.aclose()


def main() -> None:
    n_tickets = int(os.environ.get("BENCH_TICKETS", "1000000"))
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True)
                       .stdout.startswith(b"PONG"), what="redis-server")
            result = asyncio.run(measure(port, n_tickets))
            result["bytes_per_ticket_of_an_event"] = asyncio.run(variants(port, n_tickets))
            result["issued_in_batches"] = asyncio.run(batch_issued(port, n_tickets))
        finally:
            proc.terminate()
            proc.wait()
    result["commit"] = measured_commit()
    out = ROOT / "bench" / "results" / f"memory-{result['date'][:10]}-{result['commit']}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    of_event = result["bytes_per_ticket_of_an_event"]["event_and_type"]
    of_batch = result["issued_in_batches"]["bytes_per_ticket"]
    ok = (max(result["bytes_per_ticket"], of_event, of_batch) <= TARGET_BYTES_PER_TICKET
          and result["page_ratio"] <= TARGET_PAGE_RATIO)
    print(f"bytes/ticket {result['bytes_per_ticket']}, of an event with a type {of_event}, issued in batches "
          f"{of_batch} (target <= {TARGET_BYTES_PER_TICKET}), "
          f"page cost ratio {result['page_ratio']} (target <= {TARGET_PAGE_RATIO}): {'ok' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
