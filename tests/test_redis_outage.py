"""Redis going away and coming back, with the app's own client (no injected one)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.errors import StoreUnavailable
from service.settings import Settings
from service.store import Store, StoreConfig
from tooling.procs import RedisServer

from .conftest import AiohttpClient, Api


async def test_outage_gives_fast_503_then_recovers(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True).start()
    try:
        settings = Settings(redis_url=server.url, redis_timeout_ms=500, redis_connect_timeout_ms=300)
        api = Api(await aiohttp_client(create_app(settings)))
        made = (await api.post("/ticket")).body
        server.kill()

        for path in ("/readyz", f"/ticket/{made['id']}"):
            started = time.monotonic()
            r = await api.get(path)
            assert r.status == 503 and r.headers["Retry-After"] == "1"
            assert r.headers["Content-Type"].startswith("application/problem+json")
            assert time.monotonic() - started < 1.0
        assert (await api.post("/ticket")).status == 503
        assert (await api.get("/healthz")).status == 200

        server.restart()
        r = await api.get(f"/ticket/{made['id']}")
        assert r.status == 200 and r.body == made
        assert (await api.get("/readyz")).status == 200
    finally:
        server.kill()


@pytest.mark.slow
async def test_a_stalled_redis_is_a_bounded_wait(tmp_path: Path) -> None:
    """A stalled server (CLIENT PAUSE: it holds every other client's commands): calls, and
    calls queued for a connection, give up at the store's timeout with StoreUnavailable,
    instead of hanging until the stall ends."""
    redis_server = RedisServer(tmp_path / "stalled").start()  # its own: the pause is for it alone
    stall = socket.create_connection(("127.0.0.1", redis_server.port))
    # Long enough that the calls start and time out inside it on a loaded machine (a late
    # timer once let one land after a 3 s pause).
    stall.sendall(b"CLIENT PAUSE 8000 ALL\r\n")
    assert stall.recv(16).startswith(b"+OK")  # from here on, the stall is in force
    client = Redis.from_url(redis_server.url, decode_responses=True)
    store = Store(client, StoreConfig(timeout_ms=200, max_concurrent=1)).tickets
    try:
        started = time.monotonic()
        results = await asyncio.gather(store.ping(), store.ping(), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        # Inside the 8 s pause: the calls gave up, they did not wait it out. Each gives up at
        # 200 ms alone; inside the full CI suite the pair has taken 5.2 s, reproducibly and not
        # yet explained (see the closing note of issue 11), hence this bound.
        assert time.monotonic() - started < 7
        # The store recovers on its own once the pause is over.
        async with asyncio.timeout(20):
            while isinstance((await asyncio.gather(store.ping(), return_exceptions=True))[0], StoreUnavailable):
                pass
    finally:
        stall.close()
        await client.aclose()
        redis_server.stop()
