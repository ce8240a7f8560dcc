"""Bad and oversized input through the real nginx: every refusal is problem+json."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

import aiohttp
import pytest

from tooling.stack import ExtraNginx, LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("limits", replicas=1)



async def _problem(r: aiohttp.ClientResponse, status: int) -> dict[str, object]:
    assert r.status == status
    assert r.headers["Content-Type"].startswith("application/problem+json")
    body: dict[str, object] = json.loads(await r.read())
    assert body["status"] == status and str(body["type"]).startswith("urn:tickets:problem:")
    return body


async def test_body_over_cap_is_413(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.post(stack.url + "/ticket", data=b"{" + b" " * 40_000 + b"}") as r:
        await _problem(r, 413)


async def test_long_url_is_414(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/ticket?id=" + "a" * 5000) as r:
        await _problem(r, 414)


async def test_long_header_is_431(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/", headers={"X-Big": "b" * 5000}) as r:
        await _problem(r, 431)


def test_garbage_request_is_problem_400(stack: LocalStack) -> None:
    with socket.create_connection(("127.0.0.1", stack.cfg.port), timeout=5) as s:
        s.sendall(b"GET /\x01\x02 HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(65536).decode("latin-1")
    head, _, body = reply.partition("\r\n\r\n")
    assert head.startswith("HTTP/1.1 400")
    assert "application/problem+json" in head
    assert json.loads(body)["status"] == 400


async def test_unknown_write_parameter_is_400_through_nginx(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.post(stack.url + "/ticket?valid=false") as r:
        await _problem(r, 400)


async def test_rate_limit_is_429_with_retry_after(
    stack: LocalStack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lb = ExtraNginx.start(stack, tmp_path, stack.cfg.api_ports, rate_limit_rps=5)
    try:
        async def one() -> tuple[int, str, bytes]:
            async with http.get(lb.url + "/healthz") as r:
                return r.status, r.headers.get("Retry-After", ""), await r.read()

        results = await asyncio.gather(*(one() for _ in range(40)))
    finally:
        lb.stop()
    statuses = [s for s, _, _ in results]
    assert statuses.count(200) >= 5 and statuses.count(429) >= 20
    for status, retry_after, body in results:
        if status == 429:
            assert retry_after == "1" and json.loads(body)["status"] == 429


async def test_nginx_internal_paths_are_problem_404(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    for path in ("/_problem/502", "/metrics"):
        async with http.get(stack.url + path) as r:
            await _problem(r, 404)


async def test_trace_is_refused_as_problem(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.request("TRACE", stack.url + "/") as r:
        await _problem(r, 405)


async def test_a_batch_of_a_thousand_takes_its_larger_body_through_nginx(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    items = [{"holder": "H" * 150, "seat": f"Row {i // 30} Seat {i % 30}", "type": "general"} for i in range(1000)]
    body = json.dumps({"tickets": items}).encode()
    assert len(body) > 100_000
    async with http.post(stack.url + "/ticket/batch", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 201
        assert len((await r.json())["tickets"]) == 1000
    # Anywhere else, the body limit stays 16 KiB.
    async with http.post(stack.url + "/ticket", data=body[:20_000]) as r:
        await _problem(r, 413)


async def test_enrolment_is_held_to_a_few_tries_a_minute_per_address(
    stack: LocalStack, http: aiohttp.ClientSession,
) -> None:
    """POST /device/enrol needs no key: nginx lets an address try 6 at once (burst 5), then
    about one each 5 s; the rest are 429 problems that never reach a replica."""
    statuses = []
    for _ in range(12):
        async with http.post(stack.url + "/device/enrol", json={"token": "tke_nonsense"}) as r:
            statuses.append(r.status)
            if r.status == 429:
                await _problem(r, 429)
    assert statuses[:6] == [403] * 6 and statuses.count(429) >= 5, statuses
