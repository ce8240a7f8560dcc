"""The bench's own instruments, where a wrong count would pass or fail a target unseen."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from bench.run import Monitors, command_label, until_idle
from service.store.scripts import SCRIPTS
from tooling.procs import RedisServer


def test_a_monitor_line_names_its_command_and_an_evalsha_its_script() -> None:
    line = f'1764640000.123456 [0 127.0.0.1:50000] "EVALSHA" "{SCRIPTS.scan.sha}" "1" "tickets:{{00}}"'.encode()
    assert command_label(line) == "EVALSHA scan"
    assert command_label(b'1764640000.1 [0 127.0.0.1:50000] "evalsha" "0123456789abcdef" "0"') == "EVALSHA 01234567"
    assert command_label(b'1764640000.1 [0 unix:/tmp/r.sock] "ping"') == "PING"


async def test_the_round_trip_monitor_counts_only_the_named_clients_commands(
    redis_server: RedisServer, real_redis: Redis
) -> None:
    """Commands of the named client are counted and tallied by command; another client's,
    and the commands a script makes inside Redis, are not."""
    named = Redis(port=redis_server.port, client_name="bench-monitor-test", decode_responses=True)
    try:
        await named.ping()  # its connection is open, and named, when the monitor starts
        await real_redis.script_load(SCRIPTS.scan.source)
        mon = await Monitors.start([redis_server.port], "bench-monitor-test")
        await real_redis.sadd("tickets:{00}", "a", "b")
        assert await named.evalsha(SCRIPTS.scan.sha, 1, "tickets:{00}", "0", "", 10, 4, 10) == ["0", "", "a", "b"]
        await named.set("k", "v")
        assert await real_redis.get("k") == "v"
        counts, waits = await asyncio.to_thread(mon.stop)
    finally:
        await named.aclose()
    assert (counts, waits) == ([2], 0)
    assert mon.commands() == {"EVALSHA scan": 1, "SET": 1}


@pytest.mark.slow
async def test_the_round_trip_pass_waits_for_the_named_clients_last_commands(
    redis_server: RedisServer, real_redis: Redis
) -> None:
    """Requests that wrk abandoned go on in the workers: the pass starts once their Redis
    connections have been quiet a whole second, not while they still send."""
    named = Redis(port=redis_server.port, client_name="bench-straggler", decode_responses=True)
    sent = 0

    async def straggler() -> None:
        nonlocal sent
        for _ in range(8):
            await named.incr("straggled")
            sent += 1
            await asyncio.sleep(0.2)

    try:
        await named.ping()
        task = asyncio.create_task(straggler())
        await until_idle([redis_server.port], "bench-straggler")
        assert task.done() and sent == 8
        assert await real_redis.get("straggled") == "8"
    finally:
        await named.aclose()
