"""Redis going away and coming back, with the app's own client (no injected one)."""

from __future__ import annotations

import time
from pathlib import Path

from service.app import create_app
from service.settings import Settings

from .conftest import AiohttpClient, Api
from .procs import RedisServer


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
