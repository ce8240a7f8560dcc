"""One Redis round trip: bounded in time, timed, counted, and its failure turned into a
domain error by what it is. Only the store's modules use this."""

from __future__ import annotations

import asyncio
import logging
import time
from types import TracebackType

from redis import exceptions as rx

from .. import metrics
from ..errors import StoreDefect, StoreError, StoreOutOfMemory, StoreUnavailable, WorkerBusy

log = logging.getLogger(__name__)

# What a Redis failure means, most specific first. A timeout, a dropped connection and the
# replies that say "not now" (loading its data, a replica during failover, a cluster without
# a quorum) are an outage: the same request will succeed later. Out of memory is a capacity
# problem with its own answer. Any other error reply is a defect of ours (a script bug, a
# wrong argument): retrying cannot help.
_MEANINGS: tuple[tuple[type[BaseException], type[StoreError]], ...] = (
    (rx.OutOfMemoryError, StoreOutOfMemory),
    (rx.ConnectionError, StoreUnavailable),
    (rx.TimeoutError, StoreUnavailable),
    (TimeoutError, StoreUnavailable),
    (rx.ReadOnlyError, StoreUnavailable),
    (rx.ClusterDownError, StoreUnavailable),
    (rx.TryAgainError, StoreUnavailable),
    # The slot moved again while the store followed it, or is being migrated (ASK): no
    # command ran; the same request will succeed once the Cluster settles.
    (rx.MovedError, StoreUnavailable),
    (rx.AskError, StoreUnavailable),
    # No node owns the slot yet (a master failed, its replica not yet promoted).
    (rx.SlotNotCoveredError, StoreUnavailable),
    (rx.MaxConnectionsError, StoreUnavailable),
    (rx.RedisError, StoreDefect),
    # Anything else the Cluster client refuses (keys of two slots in one command) is ours.
    (rx.RedisClusterException, StoreDefect),
)


# Error replies that redis-py has no class for, by their first word. NOREPLICAS: a master
# with fewer live replicas than min-replicas-to-write refuses writes (an isolated master);
# MASTERDOWN: a replica cut off from its master (replica-serve-stale-data no). Both pass.
_OUTAGE_REPLIES = ("NOREPLICAS", "MASTERDOWN")


def meaning(exc: BaseException) -> type[StoreError] | None:
    if isinstance(exc, rx.ResponseError) and str(exc).startswith(_OUTAGE_REPLIES):
        return StoreUnavailable
    if isinstance(exc, RuntimeError) and "handler is closed" in str(exc):
        # uvloop raises this for a write on a connection the server has just closed, where
        # asyncio's own loop ignores it (MagicStack/uvloop#506); redis-py drops the connection
        # and re-raises it as it is. Met when a Redis master is killed mid-reconnect.
        return StoreUnavailable
    if isinstance(exc, rx.RedisClusterException) and "connect" in str(exc):
        return StoreUnavailable  # no startup node reachable: the Cluster is down, not wrong
    for raised, meant in _MEANINGS:
        if isinstance(exc, raised):
            return meant
    return None


class RedisCall:
    """`async with caller.call("op"):` around one round trip. One asyncio.timeout around the
    whole call replaces the client's socket_timeout, which costs a task per command
    (asyncio.wait_for); a semaphore replaces the BlockingConnectionPool's condition and
    timeout per command. Both were measured on the hot path (bench/)."""

    __slots__ = ("op", "timeout_s", "slots", "_started", "_timeout")

    def __init__(self, op: str, timeout_s: float, slots: asyncio.Semaphore | None, *, timed: bool = True) -> None:
        self.op, self.timeout_s, self.slots = op, timeout_s, slots
        # An auto-pipelined call is timed by its pipe (a timer per call), not here.
        self._timeout: asyncio.Timeout | None = asyncio.timeout(timeout_s) if timed else None

    async def __aenter__(self) -> None:
        self._started = time.perf_counter()
        if self._timeout is not None:
            await self._timeout.__aenter__()
        if self.slots is None:
            return
        try:
            await self.slots.acquire()
        except BaseException as exc:
            await self._busy(exc)
            raise

    async def _busy(self, exc: BaseException) -> None:
        """The timeout fired while the call waited for one of this worker's connections, all
        busy with its other calls: the worker is busy, which says nothing of Redis."""
        try:
            if self._timeout is not None:
                await self._timeout.__aexit__(type(exc), exc, None)
        except TimeoutError:
            metrics.WORKER_BUSY.labels(self.op).inc()
            raise WorkerBusy(f"every Redis connection of this worker stayed busy for {self.timeout_s:g} s "
                             f"({self.op})") from None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.slots is not None:
            self.slots.release()
        await self._leave(exc)

    async def _leave(self, exc: BaseException | None) -> None:
        try:
            # Turns the timeout's own cancellation into TimeoutError.
            if self._timeout is not None:
                await self._timeout.__aexit__(type(exc) if exc else None, exc, None)
        except TimeoutError as timeout:
            exc = timeout
        metrics.redis_latency(self.op).observe(time.perf_counter() - self._started)
        meant = meaning(exc) if exc is not None else None
        if isinstance(exc, StoreError):  # the store's own verdict (replicas did not confirm)
            metrics.REDIS_ERRORS.labels(self.op, exc.kind).inc()
            log.warning("redis %s in %s: %s", exc.kind, self.op, exc)
            return
        if meant is None:
            return
        metrics.REDIS_ERRORS.labels(self.op, meant.kind).inc()
        detail = str(exc) or type(exc).__name__
        if meant is StoreDefect:
            log.error("redis refused %s, a defect: %s: %s", self.op, type(exc).__name__, detail)
        else:
            log.warning("redis %s in %s: %s: %s", meant.kind, self.op, type(exc).__name__, detail)
        raise meant(detail) from exc


class Caller:
    """Makes RedisCalls that share one timeout and one bound on calls in flight."""

    __slots__ = ("timeout_s", "_slots")

    def __init__(self, timeout_ms: int, max_concurrent: int) -> None:
        self.timeout_s = timeout_ms / 1000
        # Calls in flight at once, at most the pool's size: more wait here, within the timeout.
        self._slots = asyncio.Semaphore(max_concurrent)

    def call(self, op: str, extra_s: float = 0.0) -> RedisCall:
        """A call on a pooled connection: bounded by the pool's size and in time."""
        return RedisCall(op, self.timeout_s + extra_s, self._slots)

    def piped(self, op: str, extra_s: float = 0.0) -> RedisCall:
        """One of the auto-pipelined calls, which share a connection (no slot) and whose
        pipe keeps their deadline: timed and counted here, and its failure turned into
        what it means."""
        return RedisCall(op, self.timeout_s + extra_s, None, timed=False)
