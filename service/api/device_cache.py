"""Each worker's cache of the devices whose keys it has seen, so that a device's request costs
no Redis round trip to authenticate: only its first on this worker reads the device.

Every DEVICE_CACHE_CHECK_MS a task reads the devices' generation (one GET, off the request
path), which every roll and revocation moves on (device_state.lua): when it moves, the cache is
dropped, so a revoked or rolled key is refused by every replica within that interval plus a
request. When the read fails (Redis unreachable from this worker), the cache is dropped and not
filled again until a read succeeds; and the cache answers only while its last good check is
recent (two intervals), so a worker that was cut off, or stopped, while a device was revoked
never answers from what it knew before (docs/trust.md#devices).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..api_keys import DEVICE_KEY_PREFIX, DeviceCredential
from ..errors import DeviceNotFound, DeviceRevoked, StoreError, Unauthenticated
from ..models import Device, DeviceState
from ..store import DeviceStore

log = logging.getLogger(__name__)
# A worker keeps at most this many devices; past it the cache starts again (a venue has tens).
MAX_CACHED = 10_000
# How often a worker writes when its devices were last seen: one script call, not a write
# per request.
SEEN_FLUSH_S = 10.0


class DeviceCache:
    """`devices` reads a device on the request path; `background` (a client of its own, so
    that its commands are neither a request's nor keep the request path's connections busy)
    checks the generation and writes last_seen."""

    def __init__(self, devices: DeviceStore, check_ms: int, background: DeviceStore | None = None) -> None:
        self._devices = devices
        self.background = background or devices
        self.check_s = check_ms / 1000
        self._cached: dict[str, Device] = {}
        # The generation the cache holds devices of; None: unknown, nothing is cached.
        self._generation: int | None = None
        # When a check last read the generation (monotonic seconds).
        self._checked_at = float("-inf")
        # Devices seen since the last flush: id -> when (seconds since the epoch).
        self._seen: dict[str, float] = {}
        self._flushed_at = time.monotonic()

    def _fresh(self) -> bool:
        return time.monotonic() - self._checked_at <= 2 * self.check_s

    async def resolve(self, key: str) -> Device:
        """The active device whose key this is; DeviceRevoked for a key that was its device's
        (revoked, or rolled since), Unauthenticated for anything else."""
        credential = DeviceCredential.parse(DEVICE_KEY_PREFIX, key)
        if credential is None:
            raise Unauthenticated(token_given=True)
        cached = self._cached.get(credential.digest)
        if cached is not None and self._fresh():
            self._seen[cached.id] = time.time()
            return cached
        if not self._fresh():
            await self.check(self._devices)  # the watch skips its checks while nothing is cached
        generation = self._generation
        try:
            device, key_digest = await self._devices.get_with_key(credential.device_id)
        except DeviceNotFound:
            raise Unauthenticated(token_given=True) from None
        if device.state is not DeviceState.ACTIVE or key_digest != credential.digest:
            raise DeviceRevoked()
        # Only if no roll or revocation was seen while it was read: else it may be stale already.
        if generation is not None and generation == self._generation:
            if len(self._cached) >= MAX_CACHED:
                self._cached.clear()
            self._cached[credential.digest] = device
        self._seen[device.id] = time.time()
        return device

    async def check(self, devices: DeviceStore | None = None) -> None:
        """Drop the cache if the generation moved, or cannot be read."""
        try:
            generation = await (devices or self.background).generation()
        except StoreError:
            if self._generation is not None:
                log.warning("devices' generation unreadable: device keys are read from Redis until it is")
            self._generation = None
            self._cached.clear()
            return
        if generation != self._generation:
            self._cached.clear()
            self._generation = generation
        self._checked_at = time.monotonic()

    async def flush_seen(self) -> None:
        """Write when this worker's devices were last seen; kept for the next flush if Redis
        does not take it."""
        seen, self._seen = self._seen, {}
        self._flushed_at = time.monotonic()
        try:
            await self.background.seen(seen)
        except StoreError:
            self._seen = {**seen, **self._seen}

    async def watch(self) -> None:
        """Check while anything is cached (a worker that never saw a device key asks nothing:
        an API key's request stays one round trip), and flush last_seen."""
        while True:
            try:
                if self._cached:
                    await self.check()
                if time.monotonic() - self._flushed_at >= SEEN_FLUSH_S:
                    await self.flush_seen()
            except Exception:  # a defect: never leave a cache that nothing checks
                log.exception("checking the devices' generation")
                self._generation = None
                self._cached.clear()
            await asyncio.sleep(self.check_s)


def device_cache_ctx(key: web.AppKey[DeviceCache]) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that runs a cache's watch for the app's life."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(app[key].watch())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await app[key].flush_seen()  # before the Redis client closes (its context is older)

    return ctx
