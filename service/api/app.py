"""Application factory. `create_app()` takes no arguments so gunicorn can call it."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from redis.exceptions import RedisClusterException, RedisError

from ..api_keys import describe
from ..settings import Settings
from ..store import Store, StoreConfig
from ..store.client import close_client, redis_from_settings
from ..store.link import Client
from ..store.migrate import old_layout_present
from ..webhooks import TargetPolicy
from . import parser_errors
from .appkeys import (
    API_KEYS,
    BUDGET,
    CHECKIN,
    CONSUMER,
    DEVICE_CACHE,
    DEVICES,
    FEED,
    IMPORTS,
    LIVE,
    OPENAPI_BODY,
    SCANS,
    SETTINGS,
    TICKETS,
    WEBHOOK_POLICY,
    WEBHOOKS,
)
from .budget import Budget
from .device_cache import DeviceCache, device_cache_ctx
from .handlers import setup_routes
from .live import close_streams
from .live_hub import Hubs
from .live_hub import Stores as LiveStores
from .middleware import edge_middleware
from .observability import metrics_flush_ctx
from .openapi import build_openapi

log = logging.getLogger(__name__)


def _redis_ctx(injected: Client | None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
        settings = app[SETTINGS]
        client = injected if injected is not None else redis_from_settings(settings)
        store = Store(client, StoreConfig.from_settings(settings))
        app[TICKETS], app[FEED], app[CONSUMER], app[CHECKIN] = store.tickets, store.feed, store.consumer, store.checkin
        app[DEVICES], app[WEBHOOKS], app[SCANS] = store.devices, store.webhooks, store.scans
        app[IMPORTS] = store.imports
        app[LIVE] = Hubs(lambda: LiveStores(store.tickets, store.checkin, store.scans, store.devices), settings)
        # The device cache's checks run on a client of their own (see DeviceCache).
        background = injected if injected is not None else redis_from_settings(settings, "tickets-api-background")
        app[DEVICE_CACHE] = DeviceCache(store.devices, settings.device_cache_check_ms,
                                        Store(background, StoreConfig.from_settings(settings)).devices)
        await _warn_of_old_layout(client)
        yield
        if injected is None:
            await close_client(client)
            await close_client(background)

    return redis_ctx


async def _warn_of_old_layout(client: Client) -> None:
    """Keys of an earlier layout are invisible to this version: say so at start, loudly."""
    try:
        found = await old_layout_present(client)
    except (RedisError, RedisClusterException):
        return  # Redis not up yet: /readyz says so
    if found:
        log.error("Redis holds keys of an earlier layout (16 shards, or tickets under `tkt:`), which this "
                  "version does not read: stop the service and run `python -m service.store.migrate` "
                  "(docs/redis.md#upgrading)")


def _log_start(settings: Settings) -> None:
    if settings.api_keys.enabled:
        log.info("auth on; API keys: %s", describe(settings.api_keys.keys))
    else:
        log.warning(
            "auth is OFF: anyone can create, list and re-validate tickets. "
            "Set API_KEYS=name:role:secret,... (or API_KEYS_FILE) to turn it on."
        )
    if not settings.proxy_secret:
        log.warning(
            "PROXY_SECRET is not set: X-Request-Id and X-Real-IP are never believed, so a "
            "request nginx re-sends to another replica is not recognised as the same one."
        )


def create_app(settings: Settings | None = None, redis: Client | None = None) -> web.Application:
    """Build the application; settings default to the environment, the Redis client to
    one built from them (tests pass their own)."""
    settings = settings or Settings.from_env()
    parser_errors.install()
    app = web.Application(
        # The largest body any route takes (a batch); every other route holds its body to
        # MAX_BODY_BYTES itself (inputs.decode_body).
        middlewares=[edge_middleware], client_max_size=max(settings.max_body_bytes, settings.max_batch_body_bytes),
        # Bodies are never decoded (an encoded one is a 415), so a bad gzip stream cannot
        # fail inside the parser, even while aiohttp drains a refused body.
        handler_args={"auto_decompress": False},
    )
    app[SETTINGS] = settings
    app[API_KEYS] = settings.api_keys
    app[WEBHOOK_POLICY] = TargetPolicy.here(settings.webhook_allowed_networks)
    app[BUDGET] = Budget(settings.budget_per_key, settings.budget_per_worker, settings.budget_wait_ms / 1000)
    _log_start(settings)
    app[OPENAPI_BODY] = json.dumps(build_openapi()).encode()
    app.cleanup_ctx.append(_redis_ctx(redis))
    app.cleanup_ctx.append(device_cache_ctx(DEVICE_CACHE))
    app.cleanup_ctx.append(metrics_flush_ctx)
    app.on_shutdown.append(close_streams)
    setup_routes(app)
    return app
