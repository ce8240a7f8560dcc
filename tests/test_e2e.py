"""End-to-end: the real local stack (redis-server, two gunicorn replicas, nginx) on free
loopback ports, driven through nginx."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tooling.procs import free_port, wait_until
from tooling.stack import ExtraNginx, LocalStack

from .conftest import MakeStack

pytestmark = pytest.mark.e2e
SEED_README = Path(__file__).resolve().parent / "seed_curl_examples.txt"


@pytest.fixture(scope="module")
def stack(make_stack: MakeStack) -> LocalStack:
    return make_stack("stack")



async def new_ticket(http: aiohttp.ClientSession, base: str) -> str:
    async with http.post(base + "/ticket") as r:
        assert r.status == 201
        ticket_id: str = (await r.json())["id"]
        return ticket_id


def curl(command: str, base: str) -> tuple[int, str, dict[str, object] | list[object]]:
    """Run a seed README curl line as written, aimed at the test stack's port."""
    argv = shlex.split(command.replace("http://0.0.0.0:8080", base))
    out = subprocess.run([*argv, "-s", "-w", "\n%{http_code} %{content_type}"], capture_output=True,
                         text=True, check=True, timeout=10).stdout
    body, _, tail = out.rpartition("\n")
    status, _, ctype = tail.partition(" ")
    assert ctype.startswith(("application/json", "application/problem+json")), ctype
    return int(status), ctype, json.loads(body)


def test_seed_curl_examples_as_written(stack: LocalStack) -> None:
    check_seed_examples(stack.url)


def check_seed_examples(url: str) -> None:
    """The seed README's curl lines as written (`-X UPDATE` included), then on a real id."""
    lines = [ln for ln in SEED_README.read_text().splitlines() if ln.startswith("curl ")]
    create, get_one, get_all, invalidate, validate = lines
    status, _, made = curl(create, url)
    assert status == 201 and isinstance(made, dict) and made["valid"] is True
    new_id = str(made["id"])
    seed_id = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

    # The seed's ids no longer exist: as written they get a 404, not every ticket.
    status, ctype, _ = curl(get_one, url)
    assert status == 404 and ctype.startswith("application/problem+json")
    status, _, _ = curl(invalidate, url)
    assert status == 404

    status, _, body = curl(seed_id.sub(new_id, get_one), url)
    assert status == 200 and body == [made]
    status, _, body = curl(get_all, url)
    assert status == 200 and made in body
    status, _, body = curl(seed_id.sub(new_id, invalidate), url)
    assert status == 200 and body == {**made, "valid": False, "status": "used"}
    status, _, body = curl(seed_id.sub(new_id, invalidate), url)
    assert status == 409
    status, _, body = curl(seed_id.sub(new_id, validate), url)
    assert status == 200 and body == made


async def test_hundred_concurrent_invalidations_one_winner_over_both_replicas(
    stack: LocalStack, http: aiohttp.ClientSession
) -> None:
    ticket_id = await new_ticket(http, stack.url)

    async def invalidate() -> int:
        async with http.request("UPDATE", f"{stack.url}/ticket/invalidate?id={ticket_id}") as r:
            await r.read()
            return r.status

    statuses = await asyncio.gather(*(invalidate() for _ in range(100)))
    assert sorted(statuses) == [200] + [409] * 99
    upstreams = {e["upstream"] for e in stack.access_log() if ticket_id in e["uri"]}
    assert upstreams == {f"127.0.0.1:{p}" for p in stack.cfg.api_ports}


async def test_requests_reach_both_replicas(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    ids = [await new_ticket(http, stack.url) for _ in range(10)]
    served = {e["upstream"] for e in stack.access_log() if any(i in e["uri"] for i in ids)
              or e["method"] == "POST"}
    assert {f"127.0.0.1:{p}" for p in stack.cfg.api_ports} <= served


class GetStream:
    """Concurrent GETs of one ticket until stopped; every status is kept."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http, self.url = http, url
        self.statuses: list[int] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _loop(self) -> None:
        while not self._stop.is_set():
            async with self.http.get(self.url) as r:
                await r.read()
                self.statuses.append(r.status)

    def start(self, clients: int = 8) -> None:
        self._tasks = [asyncio.create_task(self._loop()) for _ in range(clients)]

    async def until(self, count: int) -> None:
        async with asyncio.timeout(30):
            while len(self.statuses) < count:
                await asyncio.sleep(0.01)

    async def stop(self) -> list[int]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.statuses


async def test_worker_killed_no_get_fails(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    ticket_id = await new_ticket(http, stack.url)
    stream = GetStream(http, f"{stack.url}/ticket/{ticket_id}")
    stream.start()
    await stream.until(200)
    old = stack.kill_worker(0)
    await asyncio.to_thread(
        wait_until, lambda: bool(stack.worker_pids(0)) and old not in stack.worker_pids(0),
        what="the master to replace its worker",
    )
    await stream.until(len(stream.statuses) + 400)
    statuses = await stream.stop()
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


async def test_replica_killed_no_get_fails(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    ticket_id = await new_ticket(http, stack.url)
    stream = GetStream(http, f"{stack.url}/ticket/{ticket_id}")
    stream.start()
    await stream.until(200)
    stack.kill_replica(1)
    await stream.until(len(stream.statuses) + 400)
    await asyncio.to_thread(stack.start_replica, 1)
    await stream.until(len(stream.statuses) + 200)
    statuses = await stream.stop()
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


class DroppingProxy:
    """Stands in for a replica that applies a request and dies before answering: it passes
    the request to a real replica, waits for its answer, then drops the connection."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.dropped: list[bytes] = []
        self.bodies: list[bytes] = []

    async def __aenter__(self) -> DroppingProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        up_writer.write(head)
        await up_writer.drain()
        head = await up_reader.readuntil(b"\r\n\r\n")  # the replica's answer
        self.dropped.append(head.split(b"\r\n", 1)[0])
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        self.bodies.append(await up_reader.readexactly(int(length.group(1))) if length else b"")
        up_writer.close()
        writer.transport.abort()


@pytest.fixture
async def dying_first_replica(
    stack: LocalStack, tmp_path: Path
) -> AsyncIterator[tuple[DroppingProxy, ExtraNginx]]:
    """An nginx whose first replica applies each request and dies before answering."""
    async with DroppingProxy(stack.cfg.api_ports[0]) as proxy:
        lb = ExtraNginx.start(stack, tmp_path, [proxy.port, stack.cfg.api_ports[1]])
        yield proxy, lb
        lb.stop()


async def test_replayed_transition_gets_no_false_409(
    stack: LocalStack, http: aiohttp.ClientSession, dying_first_replica: tuple[DroppingProxy, ExtraNginx]
) -> None:
    proxy, lb = dying_first_replica
    for _ in range(4):
        ticket_id = await new_ticket(http, stack.url)
        async with http.request("UPDATE", f"{lb.url}/ticket/invalidate?id={ticket_id}") as r:
            body = await r.json()
            assert r.status == 200, body
            assert body["valid"] is False
        async with http.request("UPDATE", f"{lb.url}/ticket/invalidate?id={ticket_id}") as r:
            assert r.status == 409
    # nginx did send a transition to the dying replica, which applied it (200), and
    # re-sent it to the other one: the client still got the winner's 200.
    assert proxy.dropped and all(line.startswith(b"HTTP/1.1 200") for line in proxy.dropped)


async def test_replayed_create_makes_one_ticket(
    http: aiohttp.ClientSession, dying_first_replica: tuple[DroppingProxy, ExtraNginx]
) -> None:
    proxy, lb = dying_first_replica
    made = []
    for _ in range(4):
        async with http.post(f"{lb.url}/ticket") as r:
            assert r.status == 201
            made.append((await r.json())["id"])
    assert proxy.dropped and all(line.startswith(b"HTTP/1.1 201") for line in proxy.dropped)
    # The dying replica created a ticket and nginx re-sent the create: the client got that
    # same ticket back from the other replica, not a second one.
    created_by_dying = {json.loads(body)["id"] for body in proxy.bodies}
    assert created_by_dying <= set(made)


async def test_nginx_own_errors_are_problem_json(
    stack: LocalStack, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    lb = ExtraNginx.start(stack, tmp_path, [free_port()])
    try:
        async with http.get(lb.url + "/ticket") as r:
            assert r.status == 502
            assert r.headers["Content-Type"].startswith("application/problem+json")
            body = await r.json(content_type=None)
            assert body["status"] == 502 and body["type"].startswith("urn:tickets:problem:")
    finally:
        lb.stop()


async def test_metrics_are_not_public(stack: LocalStack, http: aiohttp.ClientSession) -> None:
    async with http.get(stack.url + "/metrics") as r:
        assert r.status == 404
        assert r.headers["Content-Type"].startswith("application/problem+json")


def test_the_readme_tour_admits_once_then_refuses(stack: LocalStack) -> None:
    """The README's quick tour, as written, against the stack: the first scan admits, the
    second is refused as already used."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    tour = readme.split("## A quick tour", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    assert "api=http://127.0.0.1:8080" in tour
    out = subprocess.run(["bash", "-c", tour.replace("api=http://127.0.0.1:8080", f"api={stack.url}")],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    first, second = (json.loads(line) for line in out.splitlines() if line.strip())
    assert first["admitted"] is True
    assert second["admitted"] is False and second["reason"] == "already_used"


async def test_the_pages_go_out_pre_compressed_to_a_browser_that_takes_gzip(
    stack: LocalStack, http: aiohttp.ClientSession,
) -> None:
    """nginx sends the committed .gz (tooling/compress.py) as it is; a client that takes no
    gzip gets the file itself; either way the same bytes once decoded."""
    import gzip

    for page in ("/vendor/zxing-wasm/zxing_reader.wasm", "/gate/gate.js", "/gate/"):
        async with http.get(stack.url + page, headers={"Accept-Encoding": "gzip, br"}, auto_decompress=False) as r:
            packed = await r.read()
            assert r.status == 200 and r.headers["Content-Encoding"] == "gzip", page
            assert "Accept-Encoding" in r.headers["Vary"]
        async with http.get(stack.url + page, headers={"Accept-Encoding": "identity"}) as r:
            plain = await r.read()
            assert r.status == 200 and "Content-Encoding" not in r.headers
        assert gzip.decompress(packed) == plain and len(packed) < 0.6 * len(plain), page
