"""The Redis client the API and the processor share, built from settings."""

from __future__ import annotations

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from ..settings import Settings


def redis_from_settings(settings: Settings, client_name: str = "tickets-api") -> Redis:
    """A client with a bounded pool and a bounded connect. One retry on a dropped connection
    is safe because every write script is idempotent for the same arguments. The client name
    shows in CLIENT LIST, for the people who watch Redis."""
    # No socket_timeout, and not the BlockingConnectionPool: the store bounds each whole call
    # (REDIS_TIMEOUT_MS) and queues callers beyond the pool size itself, at a fraction of the
    # cost per command (measured in bench/).
    pool = ConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        socket_connect_timeout=settings.redis_connect_timeout_ms / 1000,
        decode_responses=True,
        retry=Retry(NoBackoff(), 1),
        client_name=client_name,
    )
    return Redis.from_pool(pool)
