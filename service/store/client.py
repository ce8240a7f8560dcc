"""The Redis client the API, the processor and the bench share, built from settings for the
topology they select: one redis-server (REDIS_URL), a master watched by Sentinel
(REDIS_SENTINELS), or a Redis Cluster (REDIS_CLUSTER_NODES). All three are redis-py's own
clients: master discovery and re-discovery after a failover are Sentinel's, slot routing,
MOVED/ASK and topology refresh are RedisCluster's."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import NoBackoff

from ..settings import Settings, Topology
from .link import Client


class RediscoveringConnection(SentinelManagedConnection):
    """A master connection that asks the sentinels where the master is on every connect.
    redis-py's own does so only when the pool hands it out; a connection that drops during a
    command and is reconnected by redis-py's retry goes back to the address it had, the old
    master (redis/redis-py#3874, open): the retry then fails, or meets a demoted master."""

    async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
        if not self.is_connected and retry_socket_connect:  # connect_to() has just asked: False
            self.host, self.port = await self.connection_pool.get_master_address()
        await super().connect_check_health(check_health=check_health, retry_socket_connect=retry_socket_connect)


def _common(settings: Settings, client_name: str) -> dict[str, Any]:
    """What every connection of every topology shares. One retry on a dropped connection is
    safe because every write script is idempotent for the same arguments. The client name
    shows in CLIENT LIST, for the people who watch Redis."""
    # No socket_timeout, and not the BlockingConnectionPool: the store bounds each whole call
    # (REDIS_TIMEOUT_MS) and queues callers beyond the pool size itself, at a fraction of the
    # cost per command (measured in bench/). None said outright: redis-py 8 defaults to 5 s,
    # which costs an asyncio.wait_for (a task) per write and a timeout per reply read.
    common: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": settings.redis_connect_timeout_ms / 1000,
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 1),
        "client_name": client_name,
    }
    if settings.redis_username:
        common["username"] = settings.redis_username
    if settings.redis_password:
        common["password"] = settings.redis_password
    return common


def redis_from_settings(settings: Settings, client_name: str = "tickets-api") -> Client:
    common = _common(settings, client_name)
    if settings.topology is Topology.CLUSTER:
        # No retry inside redis-py: on a connection error its ClusterPipeline closes the whole
        # client before retrying, which breaks every other call in flight on it (seen as
        # "Connection closed by server" in concurrent calls under load). A failed call is a
        # 503; MOVED and NOSCRIPT are still followed (redis-py's redirects, the store's batches).
        common["retry"] = Retry(NoBackoff(), 0)
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in settings.redis_cluster_nodes],
            max_connections=settings.redis_max_connections,
            # Slots of a failed master stay uncovered until its replica is promoted: the
            # client keeps serving every other slot meanwhile.
            require_full_coverage=False,
            **common,
        )
    if settings.topology is Topology.SENTINEL:
        sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": common["socket_connect_timeout"],
                                           "socket_timeout": settings.redis_timeout_ms / 1000,
                                           "decode_responses": True}
        if settings.redis_sentinel_password:
            sentinel_kwargs["password"] = settings.redis_sentinel_password
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels),
            sentinel_kwargs=sentinel_kwargs,
            max_connections=settings.redis_max_connections,
            **common,
        )
        # Every new connection asks the sentinels for the master, and one that meets a
        # demoted master (READONLY) is dropped: the next call finds the promoted one.
        master: Redis = sentinel.master_for(settings.redis_sentinel_master, connection_class=RediscoveringConnection)
        return master
    pool = ConnectionPool.from_url(settings.redis_url, max_connections=settings.redis_max_connections, **common)
    return Redis.from_pool(pool)


async def close_client(client: Client) -> None:
    """Close a client and every connection it holds. redis-py's RedisCluster.aclose() does
    nothing while the client holds itself uninitialized, which it does after any connection
    error or timeout until its next command: its nodes' connections would stay open (a test
    run's end found them). They are closed here, node by node."""
    await client.aclose()
    if isinstance(client, RedisCluster):
        manager = client.nodes_manager
        nodes = {id(n): n for n in (*manager.startup_nodes.values(), *manager.nodes_cache.values())}
        await asyncio.gather(*(n.disconnect() for n in nodes.values()))
