"""How the store talks to Redis, whatever the topology (standalone, Sentinel, Cluster).

- Scripts go by EVALSHA. On NOSCRIPT (a restarted Redis, a promoted replica and a new Cluster
  node start with an empty script cache, which replication does not fill) the script is
  loaded where it is missing and the call sent again: nothing ran, so nothing runs twice. For
  a single call redis-py's Script object would do this, but not inside a pipeline, and never
  inside a Cluster pipeline.
- A pipeline is one round trip per node: redis-py's ClusterPipeline splits the commands by the
  node that owns each key's slot and sends the parts at once.
- With REDIS_MIN_REPLICAS_ACK > 0, a write script is followed by WAIT in the same pipeline,
  on the same connection (the node that ran it): still one round trip. Fewer replicas than
  asked within REDIS_WAIT_TIMEOUT_MS raises StoreNotReplicated.
- The single calls of the request path (`run`, `command`) are auto-pipelined (pipe.py): the
  calls of one event-loop iteration share one write and one read per node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.sentinel import SentinelConnectionPool
from redis.commands.core import AsyncCoreCommands
from redis.exceptions import MovedError, NoScriptError

from ..errors import StoreNotReplicated
from .calls import Caller, RedisCall
from .pipe import Command, Connect, Pipe
from .scripts import SCRIPTS, Script, Scripts

Client: TypeAlias = Redis | RedisCluster
Arg: TypeAlias = str | int | float | bytes


@dataclass(frozen=True, slots=True)
class Durability:
    """How many replicas must confirm a write (WAIT), and how long to wait for them."""

    replicas: int = 0
    timeout_ms: int = 200


class Commands(AsyncCoreCommands):
    """redis-py's command methods, recorded instead of sent: a batch can be sent again (after
    NOSCRIPT) on a fresh pipeline, which redis-py empties on every execute."""

    _event_dispatcher: Any = None
    _is_async_client: Literal[True] = True

    def __init__(self) -> None:
        self.queued: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def execute_command(self, *args: Any, **options: Any) -> None:
        self.queued.append((args, options))


# Commands whose keys redis-py's Cluster client cannot place by itself: it asks the server
# (COMMAND GETKEYS), one round trip per command, awaited one by one before the pipeline is
# sent (measured: 64 of them per processor read, 240 a second idle). Routed here instead, by
# the key that follows STREAMS.
_MOVABLE_KEYS = frozenset({"XREADGROUP", "XREAD"})


def _first_stream(args: tuple[Any, ...]) -> str:
    words = [a.decode() if isinstance(a, bytes) else str(a) for a in args]
    return words[[w.upper() for w in words].index("STREAMS") + 1]


class Batch:
    """The commands of one pipelined round trip. `cmd` takes redis-py's own commands; the
    scripts go through `script`. A batch with writes ends, when replicas must confirm, with
    one WAIT per node written to: WAIT counts the replicas that have every earlier write of
    its connection, and a (Cluster) pipeline sends each node's part on one connection."""

    __slots__ = ("cmd", "_link", "_scripts", "_write_keys", "_written")

    def __init__(self, link: Link) -> None:
        self._link = link
        self.cmd = Commands()
        self._scripts: set[Script] = set()
        # A key of each write that replicas must confirm; at send time, per node written to
        # (its name; '' off a Cluster), the node and one key written there.
        self._write_keys: list[str] = []
        self._written: dict[str, tuple[Any, str]] = {}

    def script(self, script: Script, keys: Sequence[str], args: Sequence[Arg], *, write: bool = False) -> None:
        self._scripts.add(script)
        self.cmd.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
        if write and self._link.durability.replicas:
            self._write_keys.append(keys[0])

    async def run(self, call: RedisCall, *, tolerate: Callable[[Exception], bool] | None = None) -> list[Any]:
        """Send it; the replies in order, without the WAITs'. A reply that is an error is
        raised (as what it means, by `call`), unless `tolerate` says it is expected: then it
        is returned in its place."""
        if not self.cmd.queued:
            return []
        async with call:
            replies = await self._send()
            # Each is answered before anything ran, so sending the whole batch again is safe;
            # a new master can need both (a stale map first, then an empty script cache).
            for _ in range(3):
                if any(isinstance(r, NoScriptError) for r in replies):
                    await self._link.load(self._scripts)
                elif any(isinstance(r, MovedError) for r in replies):
                    # The slot map was stale (a failover, a reshard, a client that met the
                    # nodes before they were a Cluster): learn it again, so that each write
                    # and its WAIT still share a node and a connection.
                    await self._link.refresh_slots()
                else:
                    break
                replies = await self._send()
            replies, acks = replies[: len(self.cmd.queued)], replies[len(self.cmd.queued):]
            for reply in replies:
                if isinstance(reply, Exception) and not (tolerate and tolerate(reply)):
                    raise reply
            self._check_replicated(acks)
        return replies

    async def _send(self) -> list[Any]:
        # Which node each write goes to, by the slot map as it is now (a Cluster client
        # learns it at its first command).
        await self._link.ready()
        self._written = {}
        for key in self._write_keys:
            node = self._link.node_of(key)
            self._written.setdefault("" if node is None else node.name, (node, key))
        pipe = self._link.redis.pipeline(transaction=False)
        for args, options in self.cmd.queued:
            if self._link.cluster and str(args[0]).upper() in _MOVABLE_KEYS:
                options = {**options, "target_nodes": self._link.node_of(_first_stream(args))}
            pipe.execute_command(*args, **options)
        durability = self._link.durability
        for node, _ in self._written.values():
            wait = ("WAIT", durability.replicas, durability.timeout_ms)
            if node is None:
                pipe.execute_command(*wait)
            else:
                pipe.execute_command(*wait, target_nodes=node)
        if isinstance(pipe, ClusterPipeline):
            # No redirection by redis-py: it would send a redirected command alone, on another
            # connection than its WAIT (run() handles MOVED).
            return list(await pipe.execute(raise_on_error=False, allow_redirections=False))
        return list(await pipe.execute(raise_on_error=False))

    def _check_replicated(self, acks: list[Any]) -> None:
        for (_, key), acked in zip(self._written.values(), acks, strict=True):
            self._link.check_replicated(acked, key)


def has_replicas(redis: Client) -> int:
    """1 for a topology with replicas (a Cluster, a Sentinel-managed master), else 0: the
    default of REDIS_MIN_REPLICAS_ACK."""
    return int(isinstance(redis, RedisCluster) or isinstance(redis.connection_pool, SentinelConnectionPool))


class Link:
    """The store's client with its call bounds, its scripts and its durability."""

    __slots__ = ("redis", "caller", "scripts", "durability", "cluster", "_pipes", "_loading", "_slots_loaded")

    def __init__(self, redis: Client, caller: Caller, durability: Durability = Durability()) -> None:
        self.redis, self.caller, self.durability = redis, caller, durability
        self.scripts: Scripts = SCRIPTS
        self.cluster = isinstance(redis, RedisCluster)
        # Commands go to nodes' own connections, not through the client's execute_command, so
        # the Cluster client's slot map is loaded here, once (and again on MOVED).
        self._slots_loaded = False
        # By node name ('' off a Cluster) and whether its writes wait for replicas.
        self._pipes: dict[tuple[str, bool], Pipe] = {}
        # A script's SCRIPT LOAD under way, by sha: the calls that met NOSCRIPT together wait
        # for one load (each its own would take a pooled connection, and a burst more than
        # the pool holds: the processor's first step after a restart meets 64 at once).
        self._loading: dict[str, asyncio.Future[None]] = {}

    def call(self, op: str, extra_s: float = 0.0) -> RedisCall:
        return self.caller.call(op, extra_s)

    def batch(self) -> Batch:
        return Batch(self)

    async def refresh_slots(self) -> None:
        if isinstance(self.redis, RedisCluster):
            await self.redis.nodes_manager.initialize()

    async def ready(self) -> None:
        """A Cluster client's slot map, loaded (it is, after the client's first command)."""
        if isinstance(self.redis, RedisCluster) and not self._slots_loaded:
            await self.redis.initialize()  # a no-op when the client has loaded it already
            self._slots_loaded = True

    def node_of(self, key: str) -> Any:
        """The Cluster node that owns `key`'s slot (None off a Cluster)."""
        if isinstance(self.redis, RedisCluster):
            return self.redis.get_node_from_key(key)
        return None

    async def run(
        self, op: str, script: Script, keys: Sequence[str], args: Sequence[Arg], *, write: bool = False,
        extra_s: float = 0.0,
    ) -> Any:
        """One script call, one round trip (shared with the other calls of the moment); a
        write with a WAIT when replicas must confirm."""
        command = ("EVALSHA", script.sha, len(keys), *keys, *args)
        return await self.command(op, keys[0], command, write=write, extra_s=extra_s, script=script)

    async def command(
        self, op: str, key: str, command: Command, *, write: bool = False, extra_s: float = 0.0,
        script: Script | None = None,
    ) -> Any:
        """One command on `key`'s node, auto-pipelined; its reply, or its error raised as
        what it means. NOSCRIPT (the script is loaded) and MOVED (the slot map is learned
        again) are answered before anything ran: the command is sent again."""
        confirm = write and self.durability.replicas > 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.caller.timeout_s + extra_s
        async with self.caller.piped(op, extra_s):
            for _ in range(3):
                if self.cluster and not self._slots_loaded:
                    async with asyncio.timeout_at(deadline):  # the slot map, at the first call
                        await self.ready()
                pipe = self._pipe(self.node_of(key), confirm)
                replies = await pipe.send((command,), deadline - loop.time())
                if script is not None and isinstance(replies[0], NoScriptError):
                    async with asyncio.timeout_at(deadline):
                        await self._load_once(script)
                elif isinstance(replies[0], MovedError):
                    async with asyncio.timeout_at(deadline):
                        await self.refresh_slots()
                else:
                    break
            if isinstance(replies[0], Exception):
                raise replies[0]
            if confirm:
                self.check_replicated(replies[1], key)
            return replies[0]

    def check_replicated(self, acked: Any, key: str) -> None:
        wanted = self.durability.replicas
        if isinstance(acked, Exception) or int(acked) < wanted:
            raise StoreNotReplicated(f"{acked} of {wanted} replicas confirmed the write on {key} in time")

    def _pipe(self, node: ClusterNode | None, confirm: bool) -> Pipe:
        name = "" if node is None else node.name
        pipe = self._pipes.get((name, confirm))
        if pipe is None:
            wait = (self.durability.replicas, self.durability.timeout_ms) if confirm else None
            pipe = self._pipes[(name, confirm)] = Pipe(self._connector(node), wait)
        return pipe

    def _connector(self, node: ClusterNode | None) -> Connect:
        """A connection of redis-py's own for a Pipe, counted in its pool (which closes it
        with the client)."""
        if node is None:
            assert isinstance(self.redis, Redis)
            pool = self.redis.connection_pool

            async def pooled() -> AbstractConnection:
                conn: AbstractConnection = await pool.get_connection()  # type: ignore[no-untyped-call]
                return conn

            return pooled

        async def of_node() -> AbstractConnection:
            return node.acquire_connection()

        return of_node

    async def _load_once(self, script: Script) -> None:
        loading = self._loading.get(script.sha)
        if loading is None:
            loading = self._loading[script.sha] = asyncio.ensure_future(self.load((script,)))
            loading.add_done_callback(self._loaded)
        await asyncio.shield(loading)  # a caller past its deadline leaves the load to the rest

    def _loaded(self, loading: asyncio.Future[None]) -> None:
        for sha, future in list(self._loading.items()):
            if future is loading:
                del self._loading[sha]
        if not loading.cancelled():
            loading.exception()  # its callers were given it; none left is no error

    async def load(self, scripts: Sequence[Script] | set[Script]) -> None:
        """Load scripts into the script cache: every master's, on a Cluster."""
        for script in scripts:
            await self.redis.script_load(script.source)

