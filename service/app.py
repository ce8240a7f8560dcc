"""Application factory. `create_app()` takes no arguments so gunicorn can call it."""

from __future__ import annotations

import json
import logging
from typing import AsyncIterator, Callable

from aiohttp import web
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .apikeys import describe
from .appkeys import KEYRING, OPENAPI_BODY, REDIS, SETTINGS, STORE
from .middleware import edge_middleware
from .handlers import setup_routes
from .openapi import build_openapi
from .settings import Settings
from .store import TicketStore

log = logging.getLogger(__name__)


def redis_from_settings(settings: Settings, client_name: str = "tickets-api") -> Redis:
    """A client with a bounded pool and bounded timeouts. One retry on a dropped connection
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


def store_from_settings(client: Redis, settings: Settings) -> TicketStore:
    return TicketStore(
        client, replay_ttl_s=settings.replay_ttl_s,
        idempotency_ttl_s=settings.idempotency_ttl_s, events_maxlen=settings.events_maxlen,
        timeout_ms=settings.redis_timeout_ms, max_concurrent=settings.redis_max_connections,
    )


def _redis_ctx(
    injected: Redis | None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        client = injected if injected is not None else redis_from_settings(settings)
        app[REDIS] = client
        app[STORE] = store_from_settings(client, settings)
        yield
        if injected is None:
            await client.aclose()

    return redis_ctx


def _log_auth(settings: Settings) -> None:
    if settings.keyring.enabled:
        log.info("auth on; API keys: %s", describe(settings.keyring.keys))
    else:
        log.warning(
            "auth is OFF: anyone can create, list and re-validate tickets. "
            "Set API_KEYS=name:role:secret,... (or API_KEYS_FILE) to turn it on."
        )


def create_app(settings: Settings | None = None, redis: Redis | None = None) -> web.Application:
    """Build the application; settings default to the environment, the Redis client to
    one built from them (tests pass their own)."""
    settings = settings or Settings.from_env()
    app = web.Application(
        middlewares=[edge_middleware],
        client_max_size=settings.max_body_bytes,
    )
    app[SETTINGS] = settings
    app[KEYRING] = settings.keyring
    _log_auth(settings)
    app[OPENAPI_BODY] = json.dumps(build_openapi()).encode()
    app.cleanup_ctx.append(_redis_ctx(redis))
    setup_routes(app)
    return app
