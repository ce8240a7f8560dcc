"""Each worker's live pictures (service/live.py): one Hub per event that someone watches,
serving all of that event's viewers from one poll of the event's scan log every LIVE_POLL_MS,
its counters re-read when scans came (or every LIVE_REFRESH_MS) and its devices every
LIVE_REFRESH_MS, however many watch. So Redis's work grows with the events watched, not with
the viewers.

A viewer's first message is the whole picture (`snapshot`), then an `update` whenever
something changed, with the parts that did. A viewer slow to read gets its pending updates
folded into one (every value is absolute), never a backlog. Each message's id is the scan log
position counted: a reconnect with `Last-Event-ID` gets what changed since (every counter, the
minutes since), not the hour again, on whichever replica it lands.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

from ..errors import StoreError, WorkerBusy
from ..live import Picture, merge, tick_of, update_message
from ..models import ChangeType
from ..settings import Settings
from ..store import CheckinStore, DeviceStore, ScanLog, TicketStore

log = logging.getLogger(__name__)
# Scans read from an event's log at a time (a picture's first hour is read in such pages).
PAGE = 2000
_SCANS = {ChangeType.CHECKIN, ChangeType.CHECKIN_REFUSED}


class Viewer:
    """One open stream: the update it has not sent yet, folded, and a wake-up."""

    __slots__ = ("pending", "wake", "closed")

    def __init__(self, first: dict[str, Any]) -> None:
        self.pending: dict[str, Any] | None = first
        self.wake = asyncio.Event()
        self.wake.set()
        self.closed = False

    def offer(self, parts: dict[str, Any]) -> None:
        if self.pending is None:
            self.pending = dict(parts)
        else:
            merge(self.pending, parts)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()

    async def next(self, heartbeat_s: float) -> dict[str, Any] | None:
        """The next message, or None for a heartbeat (nothing new within heartbeat_s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.wake.wait(), heartbeat_s)
        self.wake.clear()
        out, self.pending = self.pending, None
        return out


class Hub:
    """One event's picture on this worker, and its viewers."""

    def __init__(self, event_id: str, stores: Stores, settings: Settings) -> None:
        self.event_id, self.stores, self.settings = event_id, stores, settings
        self.picture = Picture(event_id, settings.live_offline_after_s)
        self.viewers: set[Viewer] = set()
        self.ready = asyncio.Event()
        self.failed: BaseException | None = None
        self.task: asyncio.Task[None] | None = None
        self.idle_since: float | None = None

    async def join(self, last_event_id: str | None) -> Viewer:
        await self.ready.wait()
        if self.failed is not None:
            raise self.failed
        now = time.time()
        first = (self.picture.since(last_event_id, now) if last_event_id else None) or self.picture.snapshot(now)
        viewer = Viewer({**first, "position": self.picture.position})
        self.viewers.add(viewer)
        self.idle_since = None
        return viewer

    def leave(self, viewer: Viewer) -> None:
        self.viewers.discard(viewer)
        if not self.viewers:
            self.idle_since = time.monotonic()

    def _send(self, parts: dict[str, Any]) -> None:
        message = {**update_message(parts), "position": self.picture.position}
        for viewer in self.viewers:
            viewer.offer(message)

    async def run(self) -> None:
        """Load the picture (the counters, the devices, the last hour's scans), then keep it."""
        try:
            await self._load()
        except BaseException as exc:  # the viewers waiting are told, and the next join tries again
            self.failed = exc
            self.ready.set()
            raise
        self.ready.set()
        poll_s, refresh_s = self.settings.live_poll_ms / 1000, self.settings.live_refresh_ms / 1000
        next_refresh = time.monotonic() + refresh_s
        while not self._done():
            await asyncio.sleep(poll_s)
            try:
                parts = await self._step(time.monotonic() >= next_refresh)
            except StoreError as exc:  # Redis away: the picture stands still, the streams stay open
                log.warning("live view of event %s: %s", self.event_id, exc)
                continue
            if time.monotonic() >= next_refresh:
                next_refresh = time.monotonic() + refresh_s
            if parts:
                self._send(parts)

    def _done(self) -> bool:
        return (not self.viewers and self.idle_since is not None
                and time.monotonic() - self.idle_since >= self.settings.live_linger_s)

    async def _load(self) -> None:
        self.picture.position = f"{int((time.time() - 3600) * 1000)}-0"
        while (await self._read_page())[0] == PAGE:
            pass
        await self._figures()
        await self._devices()

    async def _read_page(self) -> tuple[int, dict[str, dict[int, list[int]]]]:
        """The next page of the event's scan log, counted: (entries read, buckets touched)."""
        scans = await self.stores.scans.page(self.event_id, self.picture.position, None, PAGE)
        touched = self.picture.count(
            tick_of(s.cursor, s.change.list, s.change.type.value, s.change.direction, s.recorded_at, s.change.actor)
            for s in scans if s.change.type in _SCANS)
        if scans:
            self.picture.position = scans[-1].cursor
        return len(scans), touched

    async def _figures(self) -> dict[str, Any]:
        event = await self.stores.tickets.get_event(self.event_id)
        return self.picture.set_figures(event, await self.stores.checkin.lists(self.event_id))

    async def _devices(self) -> dict[str, Any]:
        return self.picture.set_devices(await self.stores.devices.all(), time.time())

    async def _step(self, refresh: bool) -> dict[str, Any]:
        read, touched = await self._read_page()
        parts: dict[str, Any] = {}
        if touched:
            parts["minutes"] = {lid: {str(m): list(b) for m, b in per.items()} for lid, per in touched.items()}
        if read or refresh:
            parts.update(await self._figures())
        if refresh:
            self.picture.prune(time.time())
            parts.update(await self._devices())
        return parts


class Stores:
    """What a hub reads: the store's parts, as the app holds them."""

    __slots__ = ("tickets", "checkin", "scans", "devices")

    def __init__(self, tickets: TicketStore, checkin: CheckinStore, scans: ScanLog, devices: DeviceStore) -> None:
        self.tickets, self.checkin, self.scans, self.devices = tickets, checkin, scans, devices


class Hubs:
    """This worker's hubs, one per event watched, and its viewers' bound."""

    def __init__(self, stores: Callable[[], Stores], settings: Settings) -> None:
        self._stores, self.settings = stores, settings
        self.hubs: dict[str, Hub] = {}
        self.closing = False

    def viewers(self) -> int:
        return sum(len(h.viewers) for h in self.hubs.values())

    async def join(self, event_id: str, last_event_id: str | None) -> tuple[Hub, Viewer]:
        if self.viewers() >= self.settings.live_max_viewers or self.closing:
            raise WorkerBusy()
        hub = self.hubs.get(event_id)
        if hub is None or (hub.task is not None and hub.task.done()):
            hub = self.hubs[event_id] = Hub(event_id, self._stores(), self.settings)
            hub.task = asyncio.ensure_future(hub.run())
            hub.task.add_done_callback(functools.partial(self._ended, event_id, hub))
        return hub, await hub.join(last_event_id)

    def _ended(self, event_id: str, hub: Hub, task: asyncio.Task[None]) -> None:
        if self.hubs.get(event_id) is hub:
            del self.hubs[event_id]
        if not task.cancelled() and task.exception() is not None:
            log.warning("live view of event %s stopped: %s", event_id, task.exception())
        for viewer in hub.viewers:
            viewer.close()

    async def close(self) -> None:
        """At shutdown: every stream ends (a viewer reconnects to another replica)."""
        self.closing = True
        for hub in list(self.hubs.values()):
            for viewer in list(hub.viewers):
                viewer.close()
            if hub.task is not None:
                hub.task.cancel()
        await asyncio.gather(*(h.task for h in self.hubs.values() if h.task), return_exceptions=True)


