"""The tickets processor's webhook deliveries (docs/webhooks.md).

`Outbox.enqueue` runs in the processor's step, before a batch is acknowledged: each change a
webhook wants becomes a delivery in that webhook's queue (store/webhooks.py), keyed by an id
that derives from the webhook and the change, so a batch read again queues nothing twice and
a receiver sees the same `webhook-id` on every attempt. Delivery is at least once.

`Deliverer.run` is a task of its own beside the step: it takes each webhook's due deliveries
under a lease (no other processor attempts them meanwhile; a dead one's come due again by
themselves), sends them with at most WEBHOOK_CONCURRENCY in flight per webhook, and records
each attempt: 2xx delivered; 410 given up and the webhook disabled; anything else tried again
after a back-off, for WEBHOOK_RETRY_FOR_S, then given up (and the webhook disabled if nothing
reached it meanwhile). Redirects are not followed, each attempt has its bound, and a slow
webhook holds up only its own queue.

Addresses (webhooks.TargetPolicy) are checked where the connection is made: the resolver
hands the connector only addresses the policy allows, so a name that resolves elsewhere at
delivery time than at registration (DNS rebinding) reaches nothing it should not.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
import standardwebhooks
from aiohttp.abc import AbstractResolver, ResolveResult

from . import SERVER_HEADER
from .errors import StoreError
from .settings import Settings
from .store import StreamEntry, WebhookStore
from .store.entries import change_of, entry_changes
from .webhooks import (
    ANSWER_EXCERPT_BYTES,
    LOG_ATTEMPTS,
    Attempt,
    Delivery,
    DeliveryState,
    TargetPolicy,
    Webhook,
    WebhookState,
    delivery_of,
    retry_delay_s,
)

log = logging.getLogger("service.deliverer")


@dataclass(frozen=True, slots=True)
class DeliverySettings:
    timeout_s: float
    first_retry_s: float
    retry_cap_s: float
    retry_for_s: float
    keep_s: int
    concurrency: int
    allowed_networks: tuple[str, ...]
    # With nothing due, look again after this long (another processor's deliveries, retries).
    poll_s: float = 1.0

    @classmethod
    def of(cls, s: Settings) -> DeliverySettings:
        return cls(s.webhook_timeout_ms / 1000, s.webhook_first_retry_ms / 1000, s.webhook_retry_cap_s,
                   s.webhook_retry_for_s, s.webhook_keep_s, s.webhook_concurrency, s.webhook_allowed_networks)

    @property
    def lease_ms(self) -> int:
        """Past an attempt's bound: a delivery taken by a processor that died comes due again."""
        return round((self.timeout_s + 5) * 1000)


class Webhooks:
    """The webhooks as the processor knows them: loaded again when their generation moves
    (one GET a step)."""

    def __init__(self, store: WebhookStore) -> None:
        self.store = store
        self._generation: int | None = None
        self.all: list[Webhook] = []

    async def current(self) -> list[Webhook]:
        generation = await self.store.generation()
        if generation != self._generation:
            self.all = await self.store.all()
            self._generation = generation
        return self.all

    def active(self) -> list[Webhook]:
        return [w for w in self.all if w.state is WebhookState.ACTIVE]


class Outbox:
    def __init__(self, webhooks: Webhooks, keep_s: int) -> None:
        self.webhooks, self.keep_s = webhooks, keep_s
        # Set when deliveries were queued: the deliverer looks at once.
        self.queued = asyncio.Event()

    async def enqueue(self, entries: Sequence[StreamEntry]) -> int:
        """Queue the deliveries these entries' changes make; how many were new."""
        await self.webhooks.current()
        active = self.webhooks.active()
        if not active or not entries:
            return 0
        per_webhook: dict[str, list[Delivery]] = {w.id: [] for w in active}
        for e in entries:
            for change_id, fields in entry_changes(e.entry_id, e.fields):
                change = change_of(change_id, fields)
                for w in active:
                    if w.wants(change):
                        per_webhook[w.id].append(delivery_of(w, e.shard, change))
        calls = [self.webhooks.store.enqueue(w, d, self.keep_s) for w, d in per_webhook.items() if d]
        new = sum(await asyncio.gather(*calls))
        if new:
            self.queued.set()
        return new


class GuardedResolver(AbstractResolver):
    """The system's resolver, handing on only the addresses the policy allows."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET,
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if self.policy.refusal(r["host"]) is None]
        if not allowed:
            raise OSError(f"{host} resolves to no address deliveries may go to "
                          f"({self.policy.refusal(found[0]['host']) if found else 'none'})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def sign(webhook: Webhook, delivery_id: str, at_s: int, body: str) -> str:
    """The webhook-signature header: one `v1,` signature per secret (two after a roll)."""
    when = dt.datetime.fromtimestamp(at_s, dt.UTC)
    return " ".join(standardwebhooks.Webhook(s).sign(delivery_id, when, body) for s in webhook.secrets if s)


class Deliverer:
    def __init__(self, webhooks: Webhooks, outbox: Outbox, cfg: DeliverySettings) -> None:
        self.webhooks, self.outbox, self.cfg = webhooks, outbox, cfg
        self.policy = TargetPolicy.here(cfg.allowed_networks)
        self._in_flight: dict[str, int] = {}
        self._next_due: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def run(self, stop: asyncio.Event) -> None:
        # Kept-alive connections: each was made to an address the resolver allowed.
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(self.policy), limit=0)
        self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        try:
            while not stop.is_set():
                # Cleared before the step, not after: a delivery queued or settled while the
                # step runs leaves it set, and the wait below returns at once.
                self.outbox.queued.clear()
                try:
                    await self.webhooks.current()
                    await self.step()
                except StoreError as exc:
                    log.warning("webhook deliveries: redis %s (%s); again in %.0f s", exc.kind, exc, self.cfg.poll_s)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.cfg.poll_s)
                    continue
                await self._wait(stop)
            if self._tasks:
                await asyncio.wait(self._tasks, timeout=self.cfg.timeout_s)
        finally:
            await self._close()

    async def _close(self) -> None:
        """Attempts still out are given up (their leases run out, and they come due again
        elsewhere), then the session's connections closed, their sockets with them."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        # A closed transport lets go of its socket on the loop's next turn: give it that turn,
        # so that stopping the loop right after leaves no socket open.
        await asyncio.sleep(0)

    async def step(self) -> int:
        """Take what is due of every active webhook with room; how many attempts began."""
        now, began = time.time(), 0
        for w in self.webhooks.active():
            room = self.cfg.concurrency - self._in_flight.get(w.id, 0)
            if room <= 0 or self._next_due.get(w.id, 0.0) > now:
                continue
            claimed = await self.webhooks.store.claim(w.id, room, self.cfg.lease_ms)
            self._next_due[w.id] = claimed.next_due_at if claimed.next_due_at is not None else now + self.cfg.poll_s
            for d in claimed.deliveries:
                self._start(w, d)
                began += 1
        return began

    def _start(self, webhook: Webhook, delivery: Delivery) -> None:
        self._in_flight[webhook.id] = self._in_flight.get(webhook.id, 0) + 1
        task = asyncio.create_task(self._deliver(webhook, delivery))
        self._tasks.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._in_flight[webhook.id] -= 1
            self._next_due[webhook.id] = 0.0  # room again: look at once
            self.outbox.queued.set()

        task.add_done_callback(done)

    async def _wait(self, stop: asyncio.Event) -> None:
        # Only webhooks that can take an attempt now: active (a disabled or deleted one's time
        # would never move on) and with room.
        due = [self._next_due.get(w.id, 0.0) for w in self.webhooks.active()
               if self._in_flight.get(w.id, 0) < self.cfg.concurrency]
        pause_s = min([self.cfg.poll_s, *(t - time.time() for t in due)])
        if pause_s <= 0:
            return
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self.outbox.queued.wait())]
        await asyncio.wait(waits, timeout=pause_s, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if self.outbox.queued.is_set():
            self._next_due.clear()

    async def _deliver(self, webhook: Webhook, delivery: Delivery) -> None:
        try:
            attempt = await self.attempt(webhook, delivery)
            await self._settle(webhook, delivery, attempt)
        except StoreError as exc:  # its lease runs out and it comes due again
            log.warning("webhook %s delivery %s not settled: %s", webhook.id, delivery.id, exc)
        except Exception:
            log.exception("webhook %s delivery %s", webhook.id, delivery.id)

    async def attempt(self, webhook: Webhook, delivery: Delivery) -> Attempt:
        assert self._session is not None
        at_s = time.time()
        headers = {"webhook-id": delivery.id, "webhook-timestamp": str(int(at_s)),
                   "webhook-signature": sign(webhook, delivery.id, int(at_s), delivery.body),
                   "Content-Type": "application/json", "User-Agent": f"{SERVER_HEADER} webhooks"}
        started = time.monotonic()

        def took() -> float:
            return round((time.monotonic() - started) * 1000, 1)

        refused = self._literal_refusal(webhook.url)
        if refused is not None:
            return Attempt(at_s, None, 0.0, error=f"not allowed: {refused}")
        timeout = aiohttp.ClientTimeout(total=self.cfg.timeout_s)
        try:
            async with self._session.post(webhook.url, data=delivery.body.encode(), headers=headers,
                                          allow_redirects=False, timeout=timeout) as answer:
                excerpt = await answer.content.read(ANSWER_EXCERPT_BYTES)
                return Attempt(at_s, answer.status, took(), answer=excerpt.decode(errors="replace"))
        except TimeoutError:
            return Attempt(at_s, None, took(), error=f"no answer within {self.cfg.timeout_s:g} s")
        except aiohttp.ClientConnectorError as exc:  # its own text drops the reason
            return Attempt(at_s, None, took(), error=str(exc.os_error or exc)[:300])
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a name IDNA cannot encode
            return Attempt(at_s, None, took(), error=(str(exc) or type(exc).__name__)[:300])

    def _literal_refusal(self, url: str) -> str | None:
        """An address written in the URL is not resolved, so not checked by the resolver."""
        host = urlsplit(url).hostname or ""
        try:
            return self.policy.refusal(host)
        except ValueError:
            return None  # a name: the resolver checks what it resolves to

    async def _settle(self, webhook: Webhook, delivery: Delivery, attempt: Attempt) -> None:
        store, status = self.webhooks.store, attempt.status
        if status is not None and 200 <= status < 300:
            await store.settle(webhook.id, delivery.id, DeliveryState.DELIVERED, attempt, 0, LOG_ATTEMPTS)
            return
        if status == 410:
            await store.settle(webhook.id, delivery.id, DeliveryState.FAILED, attempt, 0, LOG_ATTEMPTS)
            await self._disable(webhook, "the endpoint answered 410 Gone")
            return
        if attempt.at - delivery.created_at >= self.cfg.retry_for_s:
            await store.settle(webhook.id, delivery.id, DeliveryState.FAILED, attempt, 0, LOG_ATTEMPTS)
            if not await store.delivered_since(webhook.id, delivery.created_at):
                await self._disable(webhook, f"no delivery succeeded for {self.cfg.retry_for_s:g} s")
            return
        delay_s = retry_delay_s(delivery.attempts + 1, self.cfg.first_retry_s, self.cfg.retry_cap_s)
        await store.settle(webhook.id, delivery.id, None, attempt, delay_s, LOG_ATTEMPTS)

    async def _disable(self, webhook: Webhook, why: str) -> None:
        log.warning("webhook %s (%s) disabled: %s", webhook.id, webhook.url, why)
        await self.webhooks.store.disable(webhook.id, why)

