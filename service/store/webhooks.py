"""Webhooks and their deliveries. The webhooks live in one slot ({webhooks}) with the
generation every change moves on, which the tickets processor watches to load them again;
each webhook's deliveries live in a slot of their own ({wh-<id>}): a queue of pending ones by
when each is next due, their records, and the log by when each was made.

The processor queues a batch's deliveries (`enqueue`) before it acknowledges the batch, takes
due ones for an attempt under a lease (`claim`), and records each attempt (`settle`).

Must change together: webhook.lua and webhook_state.lua (the hash's fields), deliver_*.lua
(the record, see webhooks.Delivery), adaptors.py (their KEYS and ARGV), service/webhooks.py.
"""

from __future__ import annotations

import json
import secrets as random_ids
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import DeliveryNotFound, WebhookNotFound
from ..models import Origin
from ..webhooks import Attempt, Delivery, DeliveryState, Webhook, WebhookState, WebhookType
from . import keys
from .adaptors import (
    ClaimDueArgv,
    DeliveryKeys,
    EnqueueArgv,
    EnqueueKeys,
    RetryArgv,
    SettleArgv,
    WebhookArgv,
    WebhookKeys,
    WebhookStateArgv,
)
from .link import Arg, Link

# The webhook hash's fields a Webhook is made of, in order.
_FIELDS = ("u", "ty", "ev", "d", "st", "why", "c", "s", "s0", "s0u", "r")


@dataclass(frozen=True, slots=True)
class WebhookSpec:
    url: str
    types: tuple[WebhookType, ...] = ()
    event: str | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class Claimed:
    """Deliveries taken for an attempt, and when the next pending one is due (None: none)."""

    deliveries: list[Delivery]
    next_due_at: float | None


def _webhook(webhook_id: str, values: Sequence[str | None], now_s: float) -> Webhook:
    url, types, event, description, state, why, created, secret, old, old_until, rolled = values
    signing = [secret or ""]
    if old and old_until and int(old_until) / 1e6 > now_s:
        signing.append(old)
    return Webhook(webhook_id, url or "", tuple(WebhookType(t) for t in (types or "").split(",") if t), event or None,
                   description or "", WebhookState(state or WebhookState.DISABLED.value), int(created or 0) / 1e6,
                   why or None, tuple(signing), int(rolled) / 1e6 if rolled else None)


def new_webhook_id() -> str:
    return random_ids.token_hex(8)


class WebhookStore:
    def __init__(self, link: Link) -> None:
        self._link = link

    def _keys(self, webhook_id: str) -> WebhookKeys:
        return WebhookKeys(keys.webhook(webhook_id), keys.webhook_index(), keys.webhook_generation())

    async def create(self, spec: WebhookSpec, secret: str, origin: Origin = Origin()) -> Webhook:
        """A new webhook signing with `secret`. Through nginx its id derives from the caller and
        request id: the same request again gets the same webhook back (its secret too)."""
        mark, webhook_id = "", new_webhook_id()
        if origin.forwarded:
            mark = keys.digest(origin.actor, origin.replay_id)[:16]
            webhook_id = keys.digest("webhook", origin.actor, origin.replay_id)[:16]
        argv = WebhookArgv(webhook_id, spec.url, ",".join(spec.types), spec.event or "", spec.description, secret,
                           mark)
        outcome, *_ = await self._link.run("webhook_create", self._link.scripts.webhook,
                                           self._keys(webhook_id).flat(), argv.flat(), write=True)
        if outcome == "taken":
            return await self.create(spec, secret)
        return await self.get(webhook_id)

    async def get(self, webhook_id: str, now_s: float | None = None) -> Webhook:
        key = keys.webhook(webhook_id)
        values = await self._link.command("webhook_get", key, ("HMGET", key, *_FIELDS))
        if values[6] is None:
            raise WebhookNotFound(webhook_id)
        return _webhook(webhook_id, values, now_s if now_s is not None else await self._now())

    async def all(self) -> list[Webhook]:
        """Every webhook, oldest first (a venue has a few)."""
        index = keys.webhook_index()
        ids = await self._link.command("webhook_index", index, ("SMEMBERS", index))
        if not ids:
            return []
        batch = self._link.batch()
        for webhook_id in ids:
            batch.cmd.hmget(keys.webhook(webhook_id), list(_FIELDS))
        found = await batch.run(self._link.call("webhook_read"))
        now_s = await self._now()
        hooks = [_webhook(i, v, now_s) for i, v in zip(ids, found, strict=True) if v[6] is not None]
        return sorted(hooks, key=lambda h: (h.created_at, h.id))

    async def generation(self) -> int:
        key = keys.webhook_generation()
        return int(await self._link.command("webhook_generation", key, ("GET", key)) or 0)

    async def roll_secret(self, webhook_id: str, secret: str, grace_s: int) -> None:
        await self._change(webhook_id, "roll", secret, grace_s * 1_000_000)

    async def disable(self, webhook_id: str, why: str) -> None:
        await self._change(webhook_id, "disable", why)

    async def enable(self, webhook_id: str) -> None:
        await self._change(webhook_id, "enable")

    async def delete(self, webhook_id: str) -> None:
        """The webhook and, after it, its deliveries (the processor stops at the generation)."""
        await self._change(webhook_id, "delete")
        queue = keys.delivery_queue(webhook_id)
        await self._link.command("webhook_purge", queue, (
            "UNLINK", queue, keys.delivery_records(webhook_id), keys.delivery_log(webhook_id)), write=True)

    async def _change(self, webhook_id: str, action: str, value: str = "", grace_us: int = 0) -> None:
        argv = WebhookStateArgv(webhook_id, action, value, grace_us)
        outcome, *_ = await self._link.run(f"webhook_{action}", self._link.scripts.webhook_state,
                                           self._keys(webhook_id).flat(), argv.flat(), write=True)
        if outcome == "missing":
            raise WebhookNotFound(webhook_id)

    async def _now(self) -> float:
        seconds, micros = await self._link.command("time", keys.webhook_index(), ("TIME",))
        return int(seconds) + int(micros) / 1e6

    # --- deliveries -------------------------------------------------------------------

    def _delivery_keys(self, webhook_id: str) -> DeliveryKeys:
        return DeliveryKeys(keys.delivery_queue(webhook_id), keys.delivery_records(webhook_id))

    async def enqueue(self, webhook_id: str, deliveries: Sequence[Delivery], keep_s: int) -> int:
        """Queue them, due now; how many were new (a delivery is queued once, by its id)."""
        if not deliveries:
            return 0
        flat: list[Arg] = []
        for d in deliveries:
            flat += [d.id, round(d.created_at * 1000), d.record()]
        script_keys = EnqueueKeys(keys.delivery_queue(webhook_id), keys.delivery_records(webhook_id),
                                  keys.delivery_log(webhook_id))
        return int(await self._link.run("deliver_enqueue", self._link.scripts.deliver_enqueue, script_keys.flat(),
                                        EnqueueArgv(keep_s * 1000, tuple(flat)).flat(), write=True))

    async def claim(self, webhook_id: str, limit: int, lease_ms: int) -> Claimed:
        next_due, *records = await self._link.run(
            "deliver_claim", self._link.scripts.deliver_claim, self._delivery_keys(webhook_id).flat(),
            ClaimDueArgv(limit, lease_ms).flat(), write=True)
        return Claimed([Delivery.from_record(r) for r in records], int(float(next_due)) / 1000 if next_due else None)

    async def settle(self, webhook_id: str, delivery_id: str, outcome: DeliveryState | None, attempt: Attempt,
                     retry_in_s: float, log_attempts: int) -> str:
        """Record an attempt: `outcome` delivered or failed, or None for a retry after
        retry_in_s. The delivery's state after it ('missing' if it is gone)."""
        argv = SettleArgv(delivery_id, outcome.value if outcome else "retry", round(retry_in_s * 1000),
                          json.dumps(attempt.to_json(), separators=(",", ":")), log_attempts)
        reply = await self._link.run("deliver_settle", self._link.scripts.deliver_settle,
                                     self._delivery_keys(webhook_id).flat(), argv.flat(), write=True)
        return str(reply[-1])

    async def retry(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send it again now; DeliveryNotFound if the webhook has no such delivery."""
        reply = await self._link.run("deliver_retry", self._link.scripts.deliver_retry,
                                     self._delivery_keys(webhook_id).flat(), RetryArgv(delivery_id).flat(), write=True)
        if reply[0] == "missing":
            raise DeliveryNotFound(webhook_id, delivery_id)
        return await self.delivery(webhook_id, delivery_id)

    async def delivery(self, webhook_id: str, delivery_id: str) -> Delivery:
        records = keys.delivery_records(webhook_id)
        raw = await self._link.command("delivery_get", records, ("HGET", records, delivery_id))
        if raw is None:
            raise DeliveryNotFound(webhook_id, delivery_id)
        return Delivery.from_record(raw)

    async def deliveries(self, webhook_id: str, after: tuple[int, str] | None, limit: int) -> list[Delivery]:
        """Its deliveries, newest first; after `after` (the last one a page showed: when it was
        made, ms, and its id), or from the newest."""
        log, records = keys.delivery_log(webhook_id), keys.delivery_records(webhook_id)
        top = str(after[0]) if after else "+inf"
        # Those made in the same ms as `after` and shown already come first: at most a page.
        found = await self._link.command("delivery_log", log, (
            "ZREVRANGEBYSCORE", log, top, "-inf", "WITHSCORES", "LIMIT", 0, 2 * limit))
        ids = [i for i, ms in found if after is None or int(ms) < after[0] or i < after[1]][:limit]
        if not ids:
            return []
        raws = await self._link.command("delivery_read", records, ("HMGET", records, *ids))
        return [Delivery.from_record(r) for r in raws if r is not None]

    async def delivered_since(self, webhook_id: str, since_s: float) -> bool:
        """Whether any delivery to it succeeded at or after `since_s`."""
        records = keys.delivery_records(webhook_id)
        last_ms = await self._link.command("delivery_ok", records, ("HGET", records, "~ok"))
        return last_ms is not None and int(last_ms) >= since_s * 1000

    async def pending(self, webhook_id: str) -> int:
        queue = keys.delivery_queue(webhook_id)
        return int(await self._link.command("delivery_pending", queue, ("ZCARD", queue)))
