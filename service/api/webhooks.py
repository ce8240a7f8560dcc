"""The webhook routes: an admin registers a webhook (its secret shown once), lists, reads,
deletes and enables it, rolls its secret, reads its delivery log and sends a delivery again.
The tickets processor delivers (service/deliverer.py); docs/webhooks.md."""

from __future__ import annotations

import asyncio
import re
import socket
from typing import Any
from urllib.parse import urlsplit

import msgspec
from aiohttp import web

from ..api_keys import Permission
from ..errors import InvalidInput, WebhookTargetRefused
from ..store import WebhookSpec
from ..webhooks import DELIVERY_ID_PREFIX, TargetPolicy, WebhookType, new_secret
from . import inputs
from .answers import json_answer
from .appkeys import SETTINGS, WEBHOOK_POLICY, WEBHOOKS
from .auth import all_events, requires
from .bodies import WebhookBody

_WEBHOOK_BODY = msgspec.json.Decoder(WebhookBody)
_SECRET_HEADERS = {"Cache-Control": "no-store"}
_ID_RE = re.compile(r"[0-9a-f]{16}")
_DELIVERY_RE = re.compile(re.escape(DELIVERY_ID_PREFIX) + r"[0-9a-f]{26}")
_CURSOR_RE = re.compile(r"([0-9]{1,15})\.(" + _DELIVERY_RE.pattern + ")")
DEFAULT_DELIVERIES = 50
MAX_DELIVERIES = 500
# How long registration waits for a name to resolve.
RESOLVE_TIMEOUT_S = 5.0


def _webhook_id(request: web.Request) -> str:
    raw = request.match_info["id"]
    if not _ID_RE.fullmatch(raw):
        raise InvalidInput("the webhook id is not one (16 hex digits)", slug="malformed-webhook-id")
    return raw


async def check_target(url: str, policy: TargetPolicy) -> None:
    """Refuse, now, a URL that deliveries could not go to; the deliverer checks again on every
    connection (a name may resolve elsewhere later)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise WebhookTargetRefused(f"{url}: the port is not one") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookTargetRefused(f"{url}: a webhook is an http or https URL with a host")
    if parts.username is not None or parts.password is not None:
        raise WebhookTargetRefused(f"{url}: credentials do not go in the URL; deliveries are signed")
    host = parts.hostname
    try:
        refused = policy.refusal(host)
        addresses = [host]
    except ValueError:  # a name
        addresses = await _resolve(host, port)
        refused = next((r for r in map(policy.refusal, addresses) if r is not None), None)
    if refused is not None:
        raise WebhookTargetRefused(f"{host}: {refused} (WEBHOOK_ALLOWED_NETWORKS allows others)")


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    try:
        found = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError):  # ValueError: a name IDNA cannot encode (a label too long)
        raise WebhookTargetRefused(f"{host[:80]} does not resolve") from None
    return sorted({str(info[4][0]) for info in found})


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def create_webhook(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    body, canonical = await inputs.decode_body(request, _WEBHOOK_BODY)
    await check_target(body.url, request.app[WEBHOOK_POLICY])
    spec = WebhookSpec(body.url, tuple(WebhookType(t) for t in body.types or ()), body.event, body.description or "")
    webhook = await request.app[WEBHOOKS].create(spec, new_secret(), inputs.origin(request, "webhook\n" + canonical))
    return json_answer({**webhook.to_json(), "secret": webhook.secrets[0]}, status=201,
                       headers={**_SECRET_HEADERS, "Location": f"/webhook/{webhook.id}"})


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def list_webhooks(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    return json_answer([w.to_json() for w in await request.app[WEBHOOKS].all()])


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def get_webhook(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    store, webhook_id = request.app[WEBHOOKS], _webhook_id(request)
    webhook = await store.get(webhook_id)
    return json_answer({**webhook.to_json(), "pending": await store.pending(webhook_id)})


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def delete_webhook(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    await request.app[WEBHOOKS].delete(_webhook_id(request))
    return web.Response(status=204)


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def roll_secret(request: web.Request) -> web.Response:
    """A new secret, shown once; the old one still signs for WEBHOOK_SECRET_GRACE_S."""
    inputs.reject_unknown_params(request, ())
    store, webhook_id = request.app[WEBHOOKS], _webhook_id(request)
    secret = new_secret()
    await store.roll_secret(webhook_id, secret, request.app[SETTINGS].webhook_secret_grace_s)
    return json_answer({**(await store.get(webhook_id)).to_json(), "secret": secret}, headers=_SECRET_HEADERS)


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def enable_webhook(request: web.Request) -> web.Response:
    """Deliver again to a webhook that was disabled; its pending deliveries go first."""
    inputs.reject_unknown_params(request, ())
    store, webhook_id = request.app[WEBHOOKS], _webhook_id(request)
    await store.enable(webhook_id)
    return json_answer((await store.get(webhook_id)).to_json())


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def list_deliveries(request: web.Request) -> web.Response:
    """The delivery log, newest first, a page at a time (`after`: the Link header's cursor)."""
    inputs.reject_unknown_params(request, ("after", "limit"))
    webhook_id = _webhook_id(request)
    limit = inputs.bounded_int(request.query.get("limit"), "limit", DEFAULT_DELIVERIES, MAX_DELIVERIES)
    after = None
    if "after" in request.query:
        match = _CURSOR_RE.fullmatch(request.query["after"])
        if match is None:
            raise InvalidInput("after is not a cursor of this log", slug="bad-cursor")
        after = (int(match[1]), match[2])
    store = request.app[WEBHOOKS]
    await store.get(webhook_id)  # 404 for a webhook that is not
    page = await store.deliveries(webhook_id, after, limit)
    headers = {}
    if len(page) == limit:
        last = page[-1]
        nxt = request.rel_url.update_query(limit=limit, after=f"{round(last.created_at * 1000)}.{last.id}")
        headers["Link"] = f'<{nxt}>; rel="next"'
    return json_answer([d.to_json() for d in page], headers=headers)


@requires(Permission.MANAGE_WEBHOOKS, scope=all_events)
async def retry_delivery(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    webhook_id, delivery_id = _webhook_id(request), request.match_info["delivery"]
    if not _DELIVERY_RE.fullmatch(delivery_id):
        raise InvalidInput("the delivery id is not one (msg_ and 26 hex digits)", slug="malformed-delivery-id")
    store = request.app[WEBHOOKS]
    await store.get(webhook_id)
    return json_answer((await store.retry(webhook_id, delivery_id)).to_json(), status=202)


def setup_webhook_routes(r: Any) -> None:
    r.add_post("/webhook", create_webhook)
    r.add_get("/webhook", list_webhooks)
    r.add_get("/webhook/{id}", get_webhook)
    r.add_delete("/webhook/{id}", delete_webhook)
    r.add_post("/webhook/{id}/secret", roll_secret)
    r.add_post("/webhook/{id}/enable", enable_webhook)
    r.add_get("/webhook/{id}/deliveries", list_deliveries)
    r.add_post("/webhook/{id}/deliveries/{delivery}/retry", retry_delivery)
