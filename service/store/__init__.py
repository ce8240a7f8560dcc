"""The one owner of Redis. Each concern has its module: `keys` (every key name), `scripts`
(the Lua files), `calls` (timeouts and what a failure means), `link` (scripts, pipelines
and replica acknowledgement on any topology), `pipe` (auto-pipelining of the request path's
single calls), `client` (the client the topology needs),
`secret` (the deployment's
shared secret), `tickets` (writes and reads), `feed` (listing and the change feed) and
`consumer` (the tickets processor's side of the streams), `devices`, `webhooks` and `scans`
(each event's scan log). `Store` puts them together."""

from __future__ import annotations

from .calls import Caller
from .checkin import CheckinStore
from .config import StoreConfig
from .consumer import StreamConsumer, StreamEntry
from .devices import DeviceSpec, DeviceStore, Enrolment
from .feed import Feed, FeedPage, Page
from .imports import CodeItem, ImportStore, Withdrawal
from .keys import PROCESSOR_GROUP, SHARDS
from .link import Client, Durability, Link, has_replicas
from .scans import Scan, ScanLog
from .secret import DeploymentSecret
from .tickets import Stats, TicketStore, WriteResult
from .webhooks import Claimed, WebhookSpec, WebhookStore

__all__ = [
    "PROCESSOR_GROUP", "SHARDS", "CheckinStore", "Claimed", "DeviceSpec", "DeviceStore", "Enrolment", "Feed",
    "CodeItem", "FeedPage", "ImportStore", "Page", "Withdrawal", "Scan", "ScanLog", "WebhookSpec", "WebhookStore",
    "Stats", "Store", "StoreConfig",
    "StreamConsumer", "StreamEntry", "TicketStore", "WriteResult",
]


class Store:
    """The store's parts over one client, sharing its call bounds, scripts and secret."""

    def __init__(self, redis: Client, cfg: StoreConfig = StoreConfig()) -> None:
        replicas = has_replicas(redis) if cfg.min_replicas_ack is None else cfg.min_replicas_ack
        link = Link(redis, Caller(cfg.timeout_ms, cfg.max_concurrent), Durability(replicas, cfg.wait_timeout_ms))
        secret = DeploymentSecret(link)
        self.redis, self.link = redis, link
        self.tickets = TicketStore(link, secret, cfg)
        self.feed = Feed(link, secret)
        self.consumer = StreamConsumer(link)
        self.checkin = CheckinStore(link, cfg)
        self.devices = DeviceStore(link, cfg.enrolment_ttl_s)
        self.webhooks = WebhookStore(link)
        self.scans = ScanLog(link)
        self.imports = ImportStore(link, secret, cfg)
