"""Webhooks on every backend: registered through the API, queued by the tickets processor's
step before it acknowledges, delivered by its deliverer to a receiver on 127.0.0.1 that checks
every delivery with the Standard Webhooks reference library; retried with the same id,
disabled by a 410, never redirected, never sent to an address the policy refuses, and a slow
endpoint holds back no other."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from service.api.app import create_app
from service.api_keys import ApiKeys
from service.deliverer import Deliverer, DeliverySettings, GuardedResolver, Outbox, Webhooks
from service.processor import Processor, ProcessorSettings
from service.settings import Settings
from service.store import Store, StoreConfig, WebhookSpec
from service.webhooks import (
    Attempt,
    Delivery,
    DeliveryState,
    TargetPolicy,
    WebhookType,
    own_addresses,
    retry_delay_s,
)

from .conftest import TEST_SIGNER, AiohttpClient, Api

ADMIN = {"Authorization": "Bearer adm-0123456789abcdef"}
KEYS = "ops:admin:adm-0123456789abcdef,box:issuer:box-0123456789abcdef"
LOCAL = ("127.0.0.0/8",)
SETTINGS = Settings(api_keys=ApiKeys.parse(KEYS), signer=TEST_SIGNER, webhook_allowed_networks=LOCAL,
                    webhook_first_retry_ms=100, webhook_timeout_ms=2000)


@dataclass
class Receiver:
    """A webhook endpoint: checks each delivery with the reference library and answers from
    `answers` (then 200); `hang` holds a request until the test ends."""

    secrets: list[str] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)
    hang: bool = False
    got: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    unverified: int = 0
    redirected_to: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    released: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        headers = dict(request.headers)
        try:
            body = standardwebhooks.Webhook(self.secrets[-1]).verify(raw, headers)
        except standardwebhooks.WebhookVerificationError:
            self.unverified += 1
            return web.Response(status=400)
        self.got.append(({k.lower(): v for k, v in headers.items()}, body))
        self.arrived.set()
        if self.hang:
            await self.released.wait()
        status = self.answers.pop(0) if self.answers else 200
        if status in (301, 302, 307, 308):
            return web.Response(status=status, headers={"Location": "/elsewhere"})
        return web.Response(status=status, text="ok" if status == 200 else "no")

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected_to += 1
        return web.Response(status=200)

    async def until(self, n: int, timeout_s: float = 10.0) -> None:
        """Until n deliveries came (a wait on the handler's own signal, bounded)."""
        async def enough() -> None:
            while len(self.got) < n:
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(enough(), timeout_s)


@dataclass
class Venue:
    api: Api
    store: Store
    processor: Processor
    deliverer: Deliverer
    start_receiver: Callable[..., Awaitable[Receiver]]

    async def webhook(self, receiver: Receiver, **body: Any) -> dict[str, Any]:
        made = await self.api.post("/webhook", json={"url": receiver.url, **body}, headers=ADMIN)
        assert made.status == 201 and made.headers["Cache-Control"] == "no-store", made.body
        receiver.secrets.append(made.body["secret"])
        return dict(made.body)

    async def scan(self, event: str | None = None) -> str:
        """A ticket issued and admitted; its id."""
        body = {"event": event} if event else {}
        ticket = (await self.api.post("/ticket", json=body, headers=ADMIN)).body["id"]
        if event:
            door = (await self.api.post(f"/event/{event}/list", json={"name": "Door"}, headers=ADMIN)).body["id"]
            assert (await self.api.post("/checkin", json={"ticket": ticket, "list": door}, headers=ADMIN)).status == 200
        return str(ticket)

    async def deliveries(self, webhook_id: str) -> list[dict[str, Any]]:
        r = await self.api.get(f"/webhook/{webhook_id}/deliveries", headers=ADMIN)
        assert r.status == 200
        return list(r.body)

    async def settled(self, webhook_id: str, n: int, timeout_s: float = 10) -> list[dict[str, Any]]:
        """The delivery log once its `n` deliveries are settled: a receiver has a delivery
        before the deliverer, which records it when the answer is back."""
        async with asyncio.timeout(timeout_s):
            while True:
                log = await self.deliveries(webhook_id)
                if len(log) >= n and all(d["state"] != "pending" for d in log):
                    return log
                await asyncio.sleep(0.02)


def delivery_settings(s: Settings = SETTINGS, **over: Any) -> DeliverySettings:
    return replace(DeliverySettings.of(s), poll_s=0.05, **over)


@pytest.fixture
async def venue(
    aiohttp_client: AiohttpClient, any_redis: Redis, request: pytest.FixtureRequest,
) -> AsyncIterator[Venue]:
    """The API (which allows loopback targets) and an in-process processor and deliverer; the
    deliverer allows what the test's parameter says (loopback by default)."""
    api = Api(await aiohttp_client(create_app(SETTINGS, redis=any_redis)))
    store = Store(any_redis, StoreConfig(timeout_ms=5_000))
    webhooks = Webhooks(store.webhooks)
    outbox = Outbox(webhooks, SETTINGS.webhook_keep_s)
    processor = Processor(store.consumer, ProcessorSettings(consumer="t-1", poll_ms=20, idle_max_ms=50, linger_ms=0),
                          outbox)
    deliverer = Deliverer(webhooks, outbox, delivery_settings(allowed_networks=getattr(request, "param", LOCAL)))
    servers: list[TestServer] = []
    receivers: list[Receiver] = []

    async def start_receiver(**kw: Any) -> Receiver:
        receiver = Receiver(**kw)
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        app.router.add_post("/elsewhere", receiver.elsewhere)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        receiver.url = str(server.make_url("/hook"))
        servers.append(server)
        receivers.append(receiver)
        return receiver

    stop = asyncio.Event()
    tasks = [asyncio.create_task(processor.run(stop)), asyncio.create_task(deliverer.run(stop))]
    yield Venue(api, store, processor, deliverer, start_receiver)
    stop.set()
    for r in receivers:
        r.released.set()
    await asyncio.wait_for(asyncio.gather(*tasks), 10)
    for server in servers:
        await server.close()


async def test_a_scan_reaches_the_receiver_signed_as_the_reference_library_checks(venue: Venue) -> None:
    receiver = await venue.start_receiver()
    hook = await venue.webhook(receiver, description="CRM")
    assert hook["secret"].startswith("whsec_") and hook["state"] == "active" and hook["types"] == []
    event = (await venue.api.post("/event", json={"name": "Fest"}, headers=ADMIN)).body["id"]
    ticket = await venue.scan(event)
    await receiver.until(2)
    assert receiver.unverified == 0
    # In no promised order: attempts run side by side (the specification promises none).
    by_type = {b["type"]: b for _, b in receiver.got}
    assert sorted(by_type) == ["checkin.scanned", "ticket.issued"]
    assert all(b["data"]["ticket_id"] == ticket for _, b in receiver.got)
    scanned = by_type["checkin.scanned"]
    assert scanned["data"]["actor"] == "ops" and scanned["data"]["direction"] == "entry"
    assert scanned["timestamp"].endswith("Z")
    log = await venue.settled(hook["id"], 2)
    assert {d["id"] for d in log} == {h["webhook-id"] for h, _ in receiver.got}
    assert all(d["state"] == "delivered" and d["log"][0]["status"] == 200 for d in log)
    listed = (await venue.api.get("/webhook", headers=ADMIN)).body
    assert [w["id"] for w in listed] == [hook["id"]] and "secret" not in listed[0]


async def test_a_failing_endpoint_is_retried_with_the_same_id_until_it_takes_it(venue: Venue) -> None:
    receiver = await venue.start_receiver(answers=[500, 503, 200])
    hook = await venue.webhook(receiver, types=["ticket.issued"])
    await venue.scan()
    await receiver.until(3)
    assert len({h["webhook-id"] for h, _ in receiver.got}) == 1
    assert len({h["webhook-timestamp"] for h, _ in receiver.got}) >= 1
    [delivery] = await venue.settled(hook["id"], 1)
    print(f"\nWEBHOOKS delivery log: {json.dumps(delivery)}")
    assert delivery["state"] == "delivered" and delivery["attempts"] == 3
    assert [a["status"] for a in delivery["log"]] == [500, 503, 200]
    first, second, third = (a["at"] for a in delivery["log"])
    # 100 ms first, then twice that: each wait at least half its ceiling.
    assert second - first >= 0.05 and third - second >= 0.1


async def test_a_410_disables_the_webhook_at_once(venue: Venue) -> None:
    receiver = await venue.start_receiver(answers=[410])
    hook = await venue.webhook(receiver)
    await venue.scan()
    await receiver.until(1)
    for _ in range(100):  # the settle follows the answer: ask until it is recorded
        got = (await venue.api.get(f"/webhook/{hook['id']}", headers=ADMIN)).body
        if got["state"] == "disabled":
            break
        await asyncio.sleep(0.05)
    assert got["state"] == "disabled" and "410" in got["disabled_reason"]
    [delivery] = await venue.deliveries(hook["id"])
    assert delivery["state"] == "failed"
    enabled = await venue.api.post(f"/webhook/{hook['id']}/enable", headers=ADMIN)
    assert enabled.status == 200 and enabled.body["state"] == "active"


async def test_a_redirect_is_not_followed(venue: Venue) -> None:
    receiver = await venue.start_receiver(answers=[307, 200])
    hook = await venue.webhook(receiver)
    await venue.scan()
    await receiver.until(2)
    assert receiver.redirected_to == 0
    [delivery] = await venue.settled(hook["id"], 1)
    assert [a["status"] for a in delivery["log"]] == [307, 200]


async def test_a_hanging_endpoint_holds_back_no_other(venue: Venue) -> None:
    stuck = await venue.start_receiver(hang=True)
    quick = await venue.start_receiver()
    await venue.webhook(stuck)
    await venue.webhook(quick)
    started = time.monotonic()
    for _ in range(10):
        await venue.scan()
    await quick.until(10)
    took = time.monotonic() - started
    # Its 4 attempts in flight hang for the 2 s timeout; the other's 10 came meanwhile.
    assert len(stuck.got) == SETTINGS.webhook_concurrency and took < 2.0, (len(stuck.got), took)


async def test_types_and_event_choose_what_a_webhook_is_sent(venue: Venue) -> None:
    receiver = await venue.start_receiver()
    fest = (await venue.api.post("/event", json={"name": "Fest"}, headers=ADMIN)).body["id"]
    other = (await venue.api.post("/event", json={"name": "Other"}, headers=ADMIN)).body["id"]
    await venue.webhook(receiver, types=["checkin.scanned"], event=fest)
    await venue.scan(other)
    mine = await venue.scan(fest)
    await receiver.until(1)
    await venue.scan(other)  # a change after: had the first been sent, it would be here by now
    await venue.scan(fest)
    await receiver.until(2)
    assert [(b["type"], b["data"]["ticket_id"]) for _, b in receiver.got][0] == ("checkin.scanned", mine)
    assert all(b["data"]["ticket_id"].startswith(fest) for _, b in receiver.got)


async def test_a_rolled_secret_signs_beside_the_old_one_for_the_grace_period(venue: Venue) -> None:
    receiver = await venue.start_receiver()
    hook = await venue.webhook(receiver, types=["ticket.issued"])
    rolled = await venue.api.post(f"/webhook/{hook['id']}/secret", headers=ADMIN)
    assert rolled.status == 200 and rolled.body["secret"] != hook["secret"] and rolled.body["secret_rolled_at"]
    await venue.scan()
    await receiver.until(1)
    headers, _ = receiver.got[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    raw = json.dumps(receiver.got[0][1], separators=(",", ":"))
    for secret in (hook["secret"], rolled.body["secret"]):  # either verifies on its own
        standardwebhooks.Webhook(secret).verify(raw, headers)


async def test_a_retry_sends_a_delivery_again_with_its_id(venue: Venue) -> None:
    receiver = await venue.start_receiver()
    hook = await venue.webhook(receiver, types=["ticket.issued"])
    await venue.scan()
    await receiver.until(1)
    [delivery] = await venue.settled(hook["id"], 1)
    again = await venue.api.post(f"/webhook/{hook['id']}/deliveries/{delivery['id']}/retry", headers=ADMIN)
    assert again.status == 202 and again.body["state"] == "pending"
    await receiver.until(2)
    assert receiver.got[0][0]["webhook-id"] == receiver.got[1][0]["webhook-id"] == delivery["id"]
    missing = await venue.api.post(f"/webhook/{hook['id']}/deliveries/msg_{'0' * 26}/retry", headers=ADMIN)
    assert missing.status == 404 and missing.body["type"].endswith("delivery-not-found")


async def test_deleting_a_webhook_stops_its_deliveries(venue: Venue) -> None:
    receiver = await venue.start_receiver()
    hook = await venue.webhook(receiver)
    assert (await venue.api.request("DELETE", f"/webhook/{hook['id']}", headers=ADMIN)).status == 204
    assert (await venue.api.get(f"/webhook/{hook['id']}", headers=ADMIN)).status == 404
    quick = await venue.start_receiver()
    await venue.webhook(quick)
    await venue.scan()
    await quick.until(1)  # the other, registered after, has it: the deleted one never will
    assert receiver.got == []


@pytest.mark.parametrize("venue", [()], indirect=True, ids=["deliverer-allows-none"])
async def test_a_delivery_checks_the_address_it_connects_to(venue: Venue) -> None:
    """Registered while the API allowed loopback; the processor does not: whether the URL
    names the address or a name that resolves to it (DNS rebinding), nothing is sent."""
    receiver = await venue.start_receiver()
    by_name = await venue.start_receiver()
    by_name.url = by_name.url.replace("127.0.0.1", "localhost")
    for r in (receiver, by_name):
        await venue.webhook(r, types=["ticket.issued"])
    hooks = (await venue.api.get("/webhook", headers=ADMIN)).body
    await venue.scan()
    logs: list[dict[str, Any]] = []
    for _ in range(200):
        logs = [d for h in hooks for d in await venue.deliveries(h["id"]) if d["log"]]
        if len(logs) == 2:
            break
        await asyncio.sleep(0.05)
    assert receiver.got == by_name.got == []
    errors = sorted(d["log"][0]["error"] for d in logs)
    assert errors[0].startswith("localhost resolves to no address deliveries may go to"), errors
    assert errors[1].startswith("not allowed: 127.0.0.1 is"), errors


async def test_registration_refuses_what_deliveries_may_not_reach(api: Api, aiohttp_client: AiohttpClient,
                                                                    fake_redis: Redis) -> None:
    strict = Api(await aiohttp_client(create_app(replace(SETTINGS, webhook_allowed_networks=()), redis=fake_redis)))
    for url in ("http://127.0.0.1:9/hook", "http://localhost/hook", "http://10.1.2.3/", "http://[::1]/",
                "http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]/", "http://192.168.0.1/",
                "http://user:pw@93.184.216.34/", "http://no-such-host.invalid/", f"https://{'0' * 300}/",
                f"https://{'a' * 64}.example/"):
        r = await strict.post("/webhook", json={"url": url}, headers=ADMIN)
        assert r.status == 422 and r.body["type"].endswith("webhook-target-refused"), (url, r.body)
    for body in ({"url": "ftp://93.184.216.34/"}, {"url": "https://93.184.216.34/", "types": ["ticket.eaten"]},
                 {"url": "https://93.184.216.34/", "event": "zz"}, {"url": "https://93.184.216.34/", "secret": "x"}):
        r = await strict.post("/webhook", json=body, headers=ADMIN)
        assert r.status == 400, (body, r.body)
    assert (await strict.post("/webhook", json={"url": "https://93.184.216.34/h"}, headers=ADMIN)).status == 201
    box = {"Authorization": "Bearer box-0123456789abcdef"}
    assert (await strict.post("/webhook", json={"url": "https://93.184.216.34/h"}, headers=box)).status == 403


# --- the store, the policy and the schedule ------------------------------------------------

def _delivery(n: int, created_at: float, webhook_id: str = "0123456789abcdef") -> Delivery:
    return Delivery(f"msg_{n:026x}", webhook_id, WebhookType.TICKET_ISSUED, f"{n}-0", created_at, f'{{"n":{n}}}')


async def test_deliveries_are_queued_once_leased_settled_and_listed(store: Store) -> None:
    hooks = store.webhooks
    made = await hooks.create(WebhookSpec("https://93.184.216.34/h"), "whsec_" + "A" * 44)
    now = time.time()
    batch = [_delivery(n, now + n / 1000, made.id) for n in range(5)]
    assert await hooks.enqueue(made.id, batch, keep_s=3600) == 5
    assert await hooks.enqueue(made.id, batch, keep_s=3600) == 0  # read again after a crash: nothing twice
    claimed = await hooks.claim(made.id, 3, lease_ms=60_000)
    assert [d.id for d in claimed.deliveries] == [d.id for d in batch[:3]] and claimed.next_due_at is not None
    again = await hooks.claim(made.id, 10, lease_ms=60_000)
    assert [d.id for d in again.deliveries] == [d.id for d in batch[3:]]  # leased ones are not handed out
    assert (await hooks.claim(made.id, 10, lease_ms=60_000)).deliveries == []
    ok, failed = Attempt(now, 200, 3.0), Attempt(now, None, 1.0, error="refused")
    assert await hooks.settle(made.id, batch[0].id, DeliveryState.DELIVERED, ok, 0, 24) == "delivered"
    assert await hooks.settle(made.id, batch[0].id, DeliveryState.FAILED, ok, 0, 24) == "delivered"  # settled already
    assert await hooks.settle(made.id, batch[1].id, None, failed, 0.0, 24) == "pending"
    [due] = (await hooks.claim(made.id, 10, lease_ms=60_000)).deliveries  # due again at once
    assert due.id == batch[1].id and due.attempts == 1 and due.log[0].error == "refused"
    assert await hooks.delivered_since(made.id, now - 1) and not await hooks.delivered_since(made.id, now + 3600)
    page = await hooks.deliveries(made.id, None, 2)
    assert [d.id for d in page] == [batch[4].id, batch[3].id]
    rest = await hooks.deliveries(made.id, (round(page[-1].created_at * 1000), page[-1].id), 10)
    assert [d.id for d in rest] == [d.id for d in reversed(batch[:3])]
    assert (await hooks.retry(made.id, batch[0].id)).state is DeliveryState.PENDING
    assert await hooks.pending(made.id) == 5


async def test_a_delivery_log_keeps_its_first_and_last_attempts(store: Store) -> None:
    hooks = store.webhooks
    made = await hooks.create(WebhookSpec("https://93.184.216.34/h"), "whsec_" + "A" * 44)
    [d] = [_delivery(1, time.time(), made.id)]
    await hooks.enqueue(made.id, [d], keep_s=3600)
    for n in range(10):
        await hooks.settle(made.id, d.id, None, Attempt(float(n), 500, 1.0), 0.0, 6)
    log = (await hooks.delivery(made.id, d.id)).log
    assert [a.at for a in log] == [0.0, 1.0, 2.0, 7.0, 8.0, 9.0]


async def test_old_deliveries_age_out_of_the_log(store: Store) -> None:
    hooks = store.webhooks
    made = await hooks.create(WebhookSpec("https://93.184.216.34/h"), "whsec_" + "A" * 44)
    await hooks.enqueue(made.id, [_delivery(1, time.time() - 7200, made.id)], keep_s=3600)
    await hooks.enqueue(made.id, [_delivery(2, time.time(), made.id)], keep_s=3600)
    assert [d.id for d in await hooks.deliveries(made.id, None, 10)] == [_delivery(2, 0).id]
    assert await hooks.pending(made.id) == 1


async def test_webhooks_are_made_rolled_disabled_and_deleted(store: Store) -> None:
    hooks = store.webhooks
    generation = await hooks.generation()
    made = await hooks.create(WebhookSpec("https://93.184.216.34/h", (WebhookType.CHECKIN_REFUSED,), "0a0b0c0d", "d"),
                              "whsec_old")
    assert made.types == (WebhookType.CHECKIN_REFUSED,) and made.event == "0a0b0c0d" and made.secrets == ("whsec_old",)
    await hooks.roll_secret(made.id, "whsec_new", grace_s=3600)
    assert (await hooks.get(made.id)).secrets == ("whsec_new", "whsec_old")
    await hooks.roll_secret(made.id, "whsec_newer", grace_s=0)
    assert (await hooks.get(made.id)).secrets == ("whsec_newer",)
    await hooks.disable(made.id, "gone")
    assert (await hooks.get(made.id)).disabled_reason == "gone"
    await hooks.delete(made.id)
    assert await hooks.all() == [] and await hooks.generation() == generation + 5


def test_a_scan_belongs_to_its_lists_event_whatever_ticket_it_names() -> None:
    from service.models import Change, ChangeType
    from service.webhooks import Webhook, WebhookState

    hook = Webhook("0123456789abcdef", "https://93.184.216.34/h", (), "0a0b0c0d", "", WebhookState.ACTIVE, 0.0)
    foreign = Change("1-0", "ffffffff-0000-4000-8000-000000000000", ChangeType.CHECKIN_REFUSED, 1.0, "gate", "r",
                     "ip", "wrong_event", "0a0b0c0d-0001", "entry")
    assert hook.wants(foreign)
    assert not hook.wants(replace(foreign, list="ffffffff-0001"))
    issued = replace(foreign, type=ChangeType.CREATED, list=None, ticket_id="0a0b0c0d" + foreign.ticket_id[8:])
    assert hook.wants(issued)
    assert not hook.wants(replace(foreign, timestamp=-1.0))  # made before the webhook


def test_the_policy_refuses_what_is_not_public_and_allows_what_the_operator_says() -> None:
    strict = TargetPolicy.of((), own=("93.184.216.34",))
    for host in ("127.0.0.1", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
                 "::ffff:127.0.0.1", "0.0.0.0", "100.64.0.1", "fc00::1", "224.0.0.1", "93.184.216.34"):
        assert strict.refusal(host) is not None, host
    assert strict.refusal("8.8.8.8") is None and strict.refusal("2606:4700:4700::1111") is None
    loose = TargetPolicy.of(LOCAL)
    assert loose.refusal("127.0.0.1") is None and loose.refusal("10.0.0.1") is not None
    assert "127.0.0.1" in own_addresses()


async def test_the_resolver_hands_on_only_allowed_addresses() -> None:
    with pytest.raises(OSError, match="localhost resolves to no address"):
        await GuardedResolver(TargetPolicy.of(())).resolve("localhost", 80)
    found = await GuardedResolver(TargetPolicy.of(LOCAL)).resolve("localhost", 80)
    assert found and all(r["host"].startswith("127.") for r in found)


def test_the_back_off_grows_with_jitter_and_the_first_retry_is_within_ten_seconds() -> None:
    rng = random.Random(7)
    d = Settings()
    first_s, cap_s = d.webhook_first_retry_ms / 1000, d.webhook_retry_cap_s
    firsts = [retry_delay_s(1, first_s, cap_s, rng) for _ in range(200)]
    assert all(first_s / 2 <= f <= first_s < 10 for f in firsts) and len(set(firsts)) == 200
    delays = [retry_delay_s(n, first_s, cap_s, rng) for n in range(1, 40)]
    assert max(delays) <= cap_s and delays[10] > delays[2]
    total, n = 0.0, 0
    while total < d.webhook_retry_for_s:
        n += 1
        total += retry_delay_s(n, first_s, cap_s, rng)
    assert 15 <= n <= 40  # about three days of attempts


async def test_a_batch_read_again_after_a_crash_queues_no_delivery_twice(store: Store) -> None:
    """The outbox queues before the step acknowledges: a processor killed between the two
    reads the batch again (its own pending entries), and queues nothing new."""
    made = await store.webhooks.create(WebhookSpec("https://93.184.216.34/h"), "whsec_" + "A" * 44)
    outbox = Outbox(Webhooks(store.webhooks), 3600)
    await store.consumer.ensure_group()
    for _ in range(3):
        await store.tickets.create()
    entries = await store.consumer.read_new("c-1", 100)
    assert await outbox.enqueue(entries) == 3  # ... and the process dies before apply
    again = await store.consumer.read_own_pending("c-1", 100)
    assert [e.entry_id for e in again] == [e.entry_id for e in entries]
    assert await outbox.enqueue(again) == 0
    await store.consumer.apply(again)
    assert await store.webhooks.pending(made.id) == 3


def test_settings_read_the_webhook_environment() -> None:
    s = Settings.from_env({"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8, ::1/128", "WEBHOOK_TIMEOUT_MS": "500"})
    assert s.webhook_allowed_networks == ("127.0.0.0/8", "::1/128") and s.webhook_timeout_ms == 500
    for bad in ({"WEBHOOK_ALLOWED_NETWORKS": "localnet"}, {"WEBHOOK_KEEP_S": "60"}):
        with pytest.raises(ValueError):
            Settings.from_env(bad)

