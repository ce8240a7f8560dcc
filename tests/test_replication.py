"""Acknowledged means replicated: with REDIS_MIN_REPLICAS_ACK, a write that no replica
confirms in time is neither a success nor a failure, but a 503 whose retry returns the
stored answer, applying nothing twice. Against a real master and a real replica."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
from aiohttp.test_utils import TestClient
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from service.api.app import create_app
from service.errors import StoreNotReplicated
from service.models import Origin, TicketState, Transition, new_ticket_id
from service.settings import Settings
from service.store import Store, StoreConfig, keys
from service.store.client import RediscoveringConnection
from service.store.link import Client
from tooling.procs import RedisServer, free_port, wait_until
from tooling.redis_nodes import confirms_writes, form_cluster, master_probes
from tooling.topologies import RedisNodes

from .conftest import AiohttpClient, Api, close_apps
from .test_api import assert_problem


@pytest.fixture
def master(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "master", extra_args=("--repl-diskless-sync-delay", "0")).start()
    yield server
    server.stop()


@pytest.fixture
async def client(master: RedisServer, open_apps: list[TestClient]) -> AsyncIterator[Redis]:  # type: ignore[type-arg]
    c = Redis.from_url(master.url, decode_responses=True)
    yield c
    await close_apps(open_apps)
    await c.aclose()


def start_replica(tmp_path: Path, master: RedisServer) -> RedisServer:
    replica = RedisServer(tmp_path / "replica", extra_args=("--replicaof", "127.0.0.1", str(master.port))).start()

    def in_sync() -> bool:
        with redis.Redis(port=master.port, decode_responses=True) as c:
            replica_info = c.info("replication").get("slave0")
            return isinstance(replica_info, dict) and replica_info.get("state") == "online"

    wait_until(in_sync, what="the replica in sync")
    with redis.Redis(port=master.port) as c:  # and acknowledging what it has (its first ACK)
        c.incr("replica-check")
        assert c.execute_command("WAIT", 1, 5000) == 1
    return replica


def durable_store(client: Redis) -> Store:
    return Store(client, StoreConfig(min_replicas_ack=1, wait_timeout_ms=50))


async def test_an_unconfirmed_create_is_answered_from_its_record_once_replicated(
    client: Redis, master: RedisServer, tmp_path: Path
) -> None:
    store, tid = durable_store(client), new_ticket_id()
    with pytest.raises(StoreNotReplicated):
        await store.tickets.create(tid)
    assert await client.exists(keys.ticket(tid))  # applied, but not confirmed
    replica = start_replica(tmp_path, master)
    try:
        again = await store.tickets.create(tid)
        assert again.replayed and again.ticket.state is TicketState.VALID
        assert (await store.tickets.stats()).total == 1
        with redis.Redis(port=replica.port, decode_responses=True) as on_replica:
            assert on_replica.exists(keys.ticket(tid))
    finally:
        replica.stop()


async def test_an_unconfirmed_scan_retried_with_its_request_id_is_its_first_answer_not_a_409(
    client: Redis, master: RedisServer, tmp_path: Path
) -> None:
    store, tid = durable_store(client), new_ticket_id()
    replica = start_replica(tmp_path, master)
    await store.tickets.create(tid)
    replica.stop()  # the only replica goes away just before the scan
    origin = Origin(actor="gate-1", request_id="scan-0001")
    with pytest.raises(StoreNotReplicated):
        await store.tickets.transition(tid, Transition.INVALIDATE, origin=origin)
    replica = start_replica(tmp_path, master)
    try:
        retried = await store.tickets.transition(tid, Transition.INVALIDATE, origin=origin)
        assert retried.replayed and retried.ticket.state is TicketState.INVALID
        stats = await store.tickets.stats()
        assert (stats.invalid, stats.refused) == (1, 0)
    finally:
        replica.stop()


async def test_the_api_answers_503_with_retry_after_and_says_how_to_retry(
    aiohttp_client: AiohttpClient, client: Redis
) -> None:
    settings = Settings.from_env({"REDIS_MIN_REPLICAS_ACK": "1", "REDIS_WAIT_TIMEOUT_MS": "50"})
    api = Api(await aiohttp_client(create_app(settings, redis=client)))
    r = await api.post("/ticket")
    assert_problem(r, 503)
    assert r.body["type"].endswith("store-not-replicated") and r.headers["Retry-After"]
    assert "X-Request-Id" in r.body["detail"]


class _Pool:
    """Where the sentinels say the master is now."""

    check_connection = False
    is_master = True

    def __init__(self, port: int) -> None:
        self.port = port

    async def get_master_address(self) -> tuple[str, int]:
        return "127.0.0.1", self.port


async def test_a_sentinel_connection_reconnecting_mid_command_asks_where_the_master_is(master: RedisServer) -> None:
    """redis-py's retry reconnects a dropped connection to the address it had, the old master
    (redis/redis-py#3874; redis-py's own class fails this test): ours asks the sentinels
    again, and reaches the promoted one."""
    old_master_port = free_port()  # nothing listens there any more
    conn = RediscoveringConnection(  # type: ignore[no-untyped-call]
        connection_pool=_Pool(master.port), host="127.0.0.1", port=old_master_port, decode_responses=True)
    try:
        await conn.send_command("PING")  # what redis-py's retry does after a drop
        assert await conn.read_response() == "PONG" and conn.port == master.port
    finally:
        await conn.disconnect()


@pytest.mark.slow
def test_a_cluster_counts_as_formed_once_each_master_has_a_write_confirmed(tmp_path: Path) -> None:
    """A replica that has just loaded its diskless sync gets no commands until its first
    REPLCONF ACK, up to a second later, though its master calls it online and at its offset:
    a WAIT in that second timed out, and the API's first write after the Cluster was formed
    was a 503 (seen in CI). form_cluster waits for a write on each master to be confirmed, so
    it holds off while a replica answers but does not confirm (paused for writes here)."""
    nodes = RedisNodes(tmp_path / "cluster", "cluster").start()
    ports = nodes.layout.data_ports
    replica = next(n.name for n in nodes.data_nodes() if nodes.role(n.name) == "slave")
    try:
        assert all(confirms_writes(node, key, timeout_ms=100) for node, key in master_probes(ports[0]))
        with redis.Redis(port=nodes.nodes[replica].port) as paused:
            paused.execute_command("CLIENT", "PAUSE", 30_000, "WRITE")
            with pytest.raises(SystemExit, match="confirmed by a replica"):
                form_cluster(ports, timeout_s=2)
            paused.execute_command("CLIENT", "UNPAUSE")
        form_cluster(ports, timeout_s=30)
        assert all(confirms_writes(node, key, timeout_ms=100) for node, key in master_probes(ports[0]))
    finally:
        nodes.stop()



async def test_ready_means_a_write_would_succeed(aiohttp_client: AiohttpClient, client: Redis) -> None:
    """A master with no replica answers PING, but a write that replicas must confirm fails:
    not ready. The same master where no replica must confirm: ready."""
    must_confirm = Settings.from_env({"REDIS_MIN_REPLICAS_ACK": "1", "REDIS_WAIT_TIMEOUT_MS": "50"})
    api = Api(await aiohttp_client(create_app(must_confirm, redis=client)))
    assert await client.ping()
    r = await api.get("/readyz")
    assert_problem(r, 503)
    assert r.body["type"].endswith("store-not-replicated")
    alone = Api(await aiohttp_client(create_app(Settings.from_env({"REDIS_MIN_REPLICAS_ACK": "0"}), redis=client)))
    assert (await alone.get("/readyz")).status == 200


async def test_ready_on_a_cluster_writes_on_every_master(aiohttp_client: AiohttpClient, cluster_redis: Client) -> None:
    api = Api(await aiohttp_client(create_app(Settings(), redis=cluster_redis)))
    assert (await api.get("/readyz")).status == 200
    assert isinstance(cluster_redis, RedisCluster)
    probes = [keys.ready_probe(s) for s in keys.SHARDS]
    written = [p for p in probes if await cluster_redis.exists(p)]
    def master(key: str) -> str:
        node = cluster_redis.get_node_from_key(key)
        assert node is not None
        return str(node.name)

    masters = {master(p) for p in probes}
    assert len(masters) == 3 and len(written) == 3
    assert {master(p) for p in written} == masters
