from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import fakeredis
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from openapi_core import Config, OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.openapi import build_openapi
from service.settings import Settings
from service.signing import TicketSigner
from service.store import Store, StoreConfig
from service.store.client import close_client
from service.store.link import Client
from tooling.procs import RedisServer
from tooling.stack import LocalStack
from tooling.topologies import RedisNodes

AiohttpClient = Callable[[web.Application], Awaitable[TestClient]]  # type: ignore[type-arg]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session; tests that kill Redis start their own."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def open_apps() -> list[TestClient]:  # type: ignore[type-arg]
    """Every app the test started (through `aiohttp_client`). A Redis fixture closes them
    before it closes its client: pytest tears fixtures down in the reverse order of their
    setup, so a test that asks for `aiohttp_client` before its Redis fixture would otherwise
    shut its app down (the device cache's last flush of last-seen times) on a closed client,
    which redis-py quietly connects again and nobody closes."""
    return []


@pytest.fixture
def aiohttp_client(aiohttp_client: AiohttpClient, open_apps: list[TestClient]) -> AiohttpClient:  # type: ignore[type-arg]
    async def start(app: web.Application) -> TestClient:  # type: ignore[type-arg]
        client = await aiohttp_client(app)
        open_apps.append(client)
        return client

    return start


async def close_apps(open_apps: list[TestClient]) -> None:  # type: ignore[type-arg]
    for app in reversed(open_apps):
        await app.close()  # a no-op for one closed already


@pytest.fixture
async def real_redis(redis_server: RedisServer, open_apps: list[TestClient]) -> AsyncIterator[Redis]:  # type: ignore[type-arg]
    client = Redis.from_url(redis_server.url, decode_responses=True)
    await client.flushdb()
    yield client
    await close_apps(open_apps)
    await client.flushdb()
    await client.aclose()


@pytest.fixture
async def fake_redis(open_apps: list[TestClient]) -> AsyncIterator[Redis]:  # type: ignore[type-arg]
    client = fakeredis.FakeAsyncRedis(decode_responses=True)
    yield client
    await close_apps(open_apps)
    await client.flushall()
    await client.aclose()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisNodes]:
    """A real Redis Cluster of 3 masters with a replica each, once for the session; the
    failover tests that kill its nodes start their own."""
    nodes = RedisNodes(tmp_path_factory.mktemp("cluster"), "cluster").start()
    yield nodes
    nodes.stop()


@pytest.fixture
async def cluster_redis(redis_cluster: RedisNodes, open_apps: list[TestClient]) -> AsyncIterator[Client]:  # type: ignore[type-arg]
    """A client of the session's Cluster (redis-py's RedisCluster, from the service's own
    factory), on empty nodes."""
    client = redis_cluster.client()
    await client.flushall()
    yield client
    await close_apps(open_apps)
    await client.flushall()
    await close_client(client)


_BACKENDS = {"fakeredis": "fake_redis", "redis-server": "real_redis", "cluster": "cluster_redis"}


@pytest.fixture(params=list(_BACKENDS))
def any_redis(request: pytest.FixtureRequest) -> Redis:
    """The same test against fakeredis, a real redis-server and a real 3+3 Redis Cluster
    (where every write also waits for a replica's acknowledgement)."""
    client: Redis = request.getfixturevalue(_BACKENDS[request.param])
    return client


@pytest.fixture
def store(any_redis: Redis) -> Store:
    """The store on every backend, as the service builds it (replays kept a minute). Its
    timeout is generous: no test of this store is about time (the outage tests build their
    own), and fakeredis compiles a script on the test's own CPU, which a busy 2-core machine
    can hold up past the default second."""
    return Store(any_redis, StoreConfig(replay_ttl_s=60, events_maxlen=10_000, timeout_ms=5_000))


MakeStack = Callable[..., LocalStack]


@pytest.fixture(scope="module")
def make_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MakeStack]:
    """The local stack factory (tooling/stack.py: the processes and configs of `make up`):
    `make_stack(name, **settings)` builds and starts one with LocalStack's settings, and
    every stack it built is stopped when the module ends, as arq's worker fixture does. A
    test that wants a stack of its own stops it at its end (stop() is idempotent)."""
    made: list[LocalStack] = []

    def make(name: str = "stack", **settings: Any) -> LocalStack:
        stack = LocalStack(tmp_path_factory.mktemp(name), **settings)
        made.append(stack)  # before start: a start that fails half-way is stopped too
        return stack.start()

    yield make
    for stack in reversed(made):
        stack.stop()


@dataclass
class Resp:
    status: int
    headers: Any
    body: Any
    raw: bytes


_SPEC = OpenAPI.from_dict(
    build_openapi(),
    config=Config(extra_media_type_deserializers={"application/problem+json": json.loads}),
)


class Api:
    """A test client whose every answer is checked against /openapi.json."""

    def __init__(self, client: TestClient) -> None:  # type: ignore[type-arg]
        self.client = client

    async def request(
        self, method: str, path: str, *, check: bool = True, **kwargs: Any
    ) -> Resp:
        async with self.client.request(method, path, **kwargs) as r:
            raw = await r.read()
            resp = Resp(r.status, r.headers, json.loads(raw) if raw else None, raw)
            if check:
                self._check(method, r, resp, kwargs)
            return resp

    @staticmethod
    def _check(method: str, r: Any, resp: Resp, kwargs: dict[str, Any]) -> None:
        req = MockRequest(
            "http://localhost", method, r.url.path, args=dict(r.url.query),
            headers=dict(kwargs.get("headers") or {}),
        )
        content_type = r.headers.get("Content-Type", "").split(";")[0]
        res = MockResponse(resp.raw, r.status, dict(r.headers), content_type)
        _SPEC.validate_response(req, res)

    async def get(self, path: str, **kw: Any) -> Resp:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, **kw: Any) -> Resp:
        return await self.request("POST", path, **kw)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client for the tests that drive a real stack through nginx."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200)) as session:
        yield session


# What nginx sends in X-Proxy-Auth in the tests that stand in for it.
PROXY_SECRET = "test0proxy0secret0123456789"
FROM_PROXY = {"X-Proxy-Auth": PROXY_SECRET}


# One signing key for the session's tests (a key is slow to make only by comparison).
TEST_SIGNER = TicketSigner.parse(TicketSigner.generate_pem())


@pytest.fixture
def settings() -> Settings:
    return Settings(redis_url="redis://127.0.0.1:1/0", proxy_secret=PROXY_SECRET, signer=TEST_SIGNER)


@pytest.fixture
async def api(aiohttp_client: AiohttpClient, fake_redis: Redis, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings, redis=fake_redis)))


@pytest.fixture
async def any_api(aiohttp_client: AiohttpClient, any_redis: Redis, settings: Settings) -> Api:
    """The API on every backend the store's tests run against."""
    return Api(await aiohttp_client(create_app(settings, redis=any_redis)))


@pytest.fixture
async def real_api(aiohttp_client: AiohttpClient, real_redis: Redis, settings: Settings) -> Api:
    return Api(await aiohttp_client(create_app(settings, redis=real_redis)))


@pytest.fixture
def make_tickets(api: Api) -> Callable[[int], Awaitable[list[dict[str, Any]]]]:
    async def make(n: int) -> list[dict[str, Any]]:
        out = []
        for _ in range(n):
            r = await api.post("/ticket")
            assert r.status == 201
            out.append(r.body)
        return out

    return make

