"""Webhooks through a real stack (`make up`'s processes): the tickets processor, SIGKILLed
while its endpoint refuses and deliveries are queued and in flight, loses none once it is
started again, and every ticket's attempts carry one webhook-id."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import aiohttp
import pytest
import standardwebhooks
from aiohttp import web
from aiohttp.test_utils import TestServer

from tooling.stack import LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e
ADMIN = "adm-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
# Also for test_failover's stacks: their webhook test delivers to this host.
WEBHOOK_ENV = {"WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8", "WEBHOOK_FIRST_RETRY_MS": "200"}


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("webhooks", env={"API_KEYS": f"ops:admin:{ADMIN}", **WEBHOOK_ENV})


class Receiver:
    """Verifies each delivery with the reference library; refuses (503) until opened."""

    def __init__(self) -> None:
        self.secret = ""
        self.open = False
        self.attempts: dict[str, list[str]] = defaultdict(list)  # ticket id -> webhook-ids
        self.delivered: set[str] = set()
        self.unverified = 0
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body: dict[str, Any] = standardwebhooks.Webhook(self.secret).verify(raw, dict(request.headers))
        except standardwebhooks.WebhookVerificationError:
            self.unverified += 1
            return web.Response(status=400)
        ticket = body["data"]["ticket_id"]
        self.attempts[ticket].append(request.headers["webhook-id"])
        self.arrived.set()
        if not self.open:
            return web.Response(status=503)
        self.delivered.add(ticket)
        return web.Response(status=204)

    async def until(self, done: Any, timeout_s: float) -> None:
        async def wait() -> None:
            while not done():
                self.arrived.clear()
                await self.arrived.wait()
        await asyncio.wait_for(wait(), timeout_s)


async def serve(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def register(http: aiohttp.ClientSession, base: str, receiver: Receiver, server: TestServer) -> str:
    async with http.post(base + "/webhook", headers=AUTH, json={
            "url": str(server.make_url("/hook")), "types": ["ticket.issued"]}) as r:
        made = await r.json()
        assert r.status == 201, made
    receiver.secret = made["secret"]
    return str(made["id"])


async def test_a_killed_processor_loses_no_delivery(stack: LocalStack) -> None:
    receiver = Receiver()
    server = await serve(receiver)
    try:
        async with aiohttp.ClientSession() as http:
            await register(http, stack.url, receiver, server)
            async with http.post(stack.url + "/ticket/batch", headers=AUTH, json={"tickets": [{}] * 300}) as r:
                tickets = {t["id"] for t in (await r.json())["tickets"]}
            # Some refused, some queued, some in flight: then the processor dies.
            await receiver.until(lambda: len(receiver.attempts) >= 20, 30)
            await asyncio.to_thread(stack.kill_processor)
            receiver.open = True
            await asyncio.to_thread(stack.start_processor)
            await receiver.until(lambda: receiver.delivered >= tickets, 60)
    finally:
        await server.close()
    assert receiver.unverified == 0
    # At least once, and a retry is the same delivery: one webhook-id per ticket.
    assert all(len(set(ids)) == 1 for ids in receiver.attempts.values())
    retried = sum(1 for ids in receiver.attempts.values() if len(ids) > 1)
    print(f"\nWEBHOOKS processor killed: {len(tickets)} tickets, every one delivered; {retried} retried, "
          f"{sum(map(len, receiver.attempts.values()))} attempts")
    assert retried >= 20
