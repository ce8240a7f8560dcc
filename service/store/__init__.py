"""The one owner of Redis. Each concern has its module: `keys` (every key name), `scripts`
(the Lua files), `calls` (timeouts and what a failure means), `secret` (the deployment's
shared secret), `tickets` (writes and reads), `feed` (listing and the change feed) and
`consumer` (the tickets processor's side of the streams). `Store` puts them together."""

from __future__ import annotations

from redis.asyncio import Redis

from .calls import Caller
from .checkin import CheckinStore
from .config import StoreConfig
from .consumer import StreamConsumer, StreamEntry
from .feed import Feed, FeedPage, Page
from .keys import PROCESSOR_GROUP, SHARDS
from .scripts import Scripts
from .secret import DeploymentSecret
from .tickets import Stats, TicketStore, WriteResult

__all__ = [
    "PROCESSOR_GROUP", "SHARDS", "CheckinStore", "Feed", "FeedPage", "Page", "Stats", "Store", "StoreConfig",
    "StreamConsumer", "StreamEntry", "TicketStore", "WriteResult",
]


class Store:
    """The store's parts over one client, sharing its call bounds, scripts and secret."""

    def __init__(self, redis: Redis, cfg: StoreConfig = StoreConfig()) -> None:
        caller = Caller(cfg.timeout_ms, cfg.max_concurrent)
        scripts = Scripts(redis)
        secret = DeploymentSecret(redis, caller)
        self.redis = redis
        self.tickets = TicketStore(redis, caller, scripts, secret, cfg)
        self.feed = Feed(redis, caller, scripts, secret)
        self.consumer = StreamConsumer(redis, caller, scripts)
        self.checkin = CheckinStore(redis, caller, scripts, cfg)
