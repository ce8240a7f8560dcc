"""Every object shared through the application, under one typed key each."""

from __future__ import annotations

from aiohttp import web

from ..api_keys import ApiKeys
from ..models import Device
from ..settings import Settings
from ..store import CheckinStore, DeviceStore, Feed, ImportStore, ScanLog, StreamConsumer, TicketStore, WebhookStore
from ..webhooks import TargetPolicy
from .budget import Budget
from .device_cache import DeviceCache
from .live_hub import Hubs

SETTINGS = web.AppKey("settings", Settings)
TICKETS = web.AppKey("tickets", TicketStore)
FEED = web.AppKey("feed", Feed)
CONSUMER = web.AppKey("consumer", StreamConsumer)
CHECKIN = web.AppKey("checkin", CheckinStore)
DEVICES = web.AppKey("devices", DeviceStore)
WEBHOOKS = web.AppKey("webhooks", WebhookStore)
SCANS = web.AppKey("scans", ScanLog)
IMPORTS = web.AppKey("imports", ImportStore)
# This worker's live pictures of the events watched, and their viewers (live_hub.py).
LIVE = web.AppKey("live", Hubs)
# Which addresses a webhook may be registered for (its deliveries are checked again).
WEBHOOK_POLICY = web.AppKey("webhook_policy", TargetPolicy)
# This worker's devices, by their keys' digests (device_cache.py).
DEVICE_CACHE = web.AppKey("device_cache", DeviceCache)
OPENAPI_BODY = web.AppKey("openapi_body", bytes)
API_KEYS = web.AppKey("api_keys", ApiKeys)
# What expensive requests each key, and all keys, may have in flight on this worker.
BUDGET = web.AppKey("budget", Budget)
# The acting API key's name ("anonymous" with auth off), for the audit trail.
ACTOR = web.RequestKey("actor", str)
# The one event a bound scanner key may scan ("" for any).
BOUND_EVENT = web.RequestKey("bound_event", str)
# The device whose key made the request, if a device's did: its lists and direction bind it.
DEVICE = web.RequestKey("device", Device)
