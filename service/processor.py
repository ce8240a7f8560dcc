"""The tickets processor (`python -m service.processor`): the diagram's consumer.

It reads every shard's change stream as one consumer of the `processor` group, records each
change in its ticket's history and counts it, queues the webhooks' deliveries of it
(service/deliverer.py, which also sends them), then acknowledges it. Entries that a dead
consumer left unacknowledged are claimed (XAUTOCLAIM) after PROCESSOR_CLAIM_IDLE_MS. Each
step is idempotent per entry, so redelivery never counts twice. Run as many as you like.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, Gauge

from . import SERVER_HEADER, metrics
from .deliverer import Deliverer, DeliverySettings, Outbox, Webhooks
from .errors import StoreError
from .settings import Settings, env_int
from .store import SHARDS, CheckinStore, Store, StoreConfig, StreamConsumer, StreamEntry
from .store.client import close_client, redis_from_settings
from .store.entries import entry_size

log = logging.getLogger("service.processor")


@dataclass(frozen=True, slots=True)
class ProcessorSettings:
    consumer: str
    batch_size: int = 200
    # With nothing new on any shard, wait this long before looking again, twice as long
    # after each empty look, up to idle_max_ms: an idle processor costs 64 reads (one per
    # shard, one round trip per node) a second, not 640.
    poll_ms: int = 100
    idle_max_ms: int = 1000
    claim_idle_ms: int = 30_000
    # How often to look for abandoned entries; never less often than they can become so.
    claim_every_s: float = 5.0
    metrics_port: int = 9100
    # Loopback unless told otherwise: metrics are for the local Prometheus, not the network.
    metrics_host: str = "127.0.0.1"
    retry_s: float = 1.0
    # After a batch smaller than batch_size, wait this long before reading again, so that a
    # steady trickle is handled in batches: far less CPU per change for a few ms of delay.
    linger_ms: int = 100

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProcessorSettings:
        env = os.environ if env is None else env
        d = cls(consumer="")
        return cls(
            consumer=env.get("PROCESSOR_CONSUMER") or f"{socket.gethostname()}-{os.getpid()}",
            batch_size=env_int(env, "PROCESSOR_BATCH_SIZE", d.batch_size, 1),
            poll_ms=env_int(env, "PROCESSOR_POLL_MS", d.poll_ms, 1),
            idle_max_ms=env_int(env, "PROCESSOR_IDLE_MAX_MS", d.idle_max_ms, 1),
            claim_idle_ms=env_int(env, "PROCESSOR_CLAIM_IDLE_MS", d.claim_idle_ms, 1),
            metrics_port=env_int(env, "PROCESSOR_PORT", d.metrics_port, 0),
            metrics_host=env.get("PROCESSOR_HOST", "").strip() or d.metrics_host,
            linger_ms=env_int(env, "PROCESSOR_LINGER_MS", d.linger_ms, 0),
        )


class Processor:
    def __init__(self, consumer: StreamConsumer, cfg: ProcessorSettings, outbox: Outbox | None = None) -> None:
        self.consumer, self.cfg, self.outbox = consumer, cfg, outbox
        self._next_claim_at = 0.0
        self._last_batch = 0
        self._idle_s = cfg.poll_ms / 1000
        # Shards whose last read gave entries: read every step. The rest are swept every
        # poll_ms. A rush at one event (one shard) costs one XREADGROUP a step, not 64.
        self._hot: tuple[str, ...] = ()
        self._next_sweep_at = 0.0

    async def run(self, stop: asyncio.Event) -> None:
        """Process until `stop` is set; a Redis failure pauses it, never ends it."""
        resumed = False
        while not stop.is_set():
            try:
                if not resumed:
                    await self.consumer.ensure_group()
                    await self._drain_own_pending()
                    resumed = True
                await self.step()
                await _wait(stop, self._pause_s())
            except StoreError as exc:
                # A batch read but not applied is pending under this name: take it up first
                # when Redis is back, not when the claim timeout hands it over.
                resumed = False
                log.warning("redis %s (%s); retrying in %.1fs", exc.kind, exc, self.cfg.retry_s)
                await _wait(stop, self.cfg.retry_s)
        log.info("stopped cleanly")

    def _pause_s(self) -> float:
        """Idle: poll_ms, doubling up to idle_max_ms while it stays idle. A short batch:
        linger_ms, so a trickle is read in batches. A full batch: none, there is more."""
        if self._last_batch == 0:
            pause_s = self._idle_s
            self._idle_s = min(pause_s * 2, max(self.cfg.idle_max_ms, self.cfg.poll_ms) / 1000)
            return pause_s
        self._idle_s = self.cfg.poll_ms / 1000
        if self._last_batch < self.cfg.batch_size:
            return self.cfg.linger_ms / 1000
        return 0.0

    async def _drain_own_pending(self) -> None:
        """After a restart under the same consumer name, finish what this name had begun."""
        while entries := await self.consumer.read_own_pending(self.cfg.consumer, self.cfg.batch_size):
            await self._apply(entries)

    async def step(self) -> int:
        """One batch: claimed entries of dead consumers if it is time, else new ones."""
        entries: list[StreamEntry] = []
        if time.monotonic() >= self._next_claim_at:
            every_s = min(self.cfg.claim_every_s, self.cfg.claim_idle_ms / 2000)
            self._next_claim_at = time.monotonic() + every_s
            entries = await self.consumer.claim_stale(
                self.cfg.consumer, self.cfg.claim_idle_ms, self.cfg.batch_size
            )
            if entries:
                log.info("claimed %d entries left by other consumers", len(entries))
            metrics.PROCESSOR_LAG.set(await self.consumer.lag())
        if not entries:
            entries = await self._read_new()
        self._last_batch = len(entries)
        return await self._apply(entries) if entries else 0

    async def _read_new(self) -> list[StreamEntry]:
        """From the hot shards; from every shard when none is hot or a sweep is due."""
        now = time.monotonic()
        shards: tuple[str, ...] = self._hot
        if not shards or now >= self._next_sweep_at:
            shards, self._next_sweep_at = SHARDS, now + self.cfg.poll_ms / 1000
        entries = await self.consumer.read_new(self.cfg.consumer, self.cfg.batch_size, shards)
        self._hot = tuple(sorted({e.shard for e in entries}))
        return entries

    async def _apply(self, entries: list[StreamEntry]) -> int:
        if self.outbox is not None:
            # Before the acknowledgement: a crash between the two reads the batch again,
            # and queues no delivery twice (service/deliverer.py).
            await self.outbox.enqueue(entries)
        new = await self.consumer.apply(entries)
        metrics.PROCESSED.labels("new").inc(new)
        metrics.PROCESSED.labels("duplicate").inc(sum(entry_size(e.fields) for e in entries) - new)
        return new


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


# The venue as Redis counts it, read at each scrape: one process (this one) exports it, so
# that the replicas' metrics stay per request and nothing is counted twice.
EVENT_ISSUED = Gauge("tickets_event_issued", "Tickets an event has issued", ["event"])
LIST_INSIDE = Gauge("tickets_list_inside", "Holders inside a check-in list's area now", ["event", "list", "name"])
LIST_ADMITTED = Gauge("tickets_list_admitted", "Admissions at a check-in list, all time", ["event", "list", "name"])
LIST_REFUSED = Gauge("tickets_list_refused", "Refused scans at a check-in list, all time, by reason",
                     ["event", "list", "name", "reason"])
VENUE_READ_OK = Gauge("tickets_venue_figures_ok", "1 when the last scrape read the venue's figures from Redis")
VENUE_READ_TIMEOUT_S = 2.0


async def _venue_figures(checkin: CheckinStore) -> None:
    try:
        figures = await asyncio.wait_for(checkin.event_figures(), VENUE_READ_TIMEOUT_S)
    except (StoreError, TimeoutError):
        VENUE_READ_OK.set(0)  # the last figures stay: a gap in Redis is not an empty venue
        return
    for gauge in (EVENT_ISSUED, LIST_INSIDE, LIST_ADMITTED, LIST_REFUSED):
        gauge.clear()  # an event or list that is gone is no longer reported
    for event_id, event in figures.items():
        EVENT_ISSUED.labels(event_id).set(event["issued"])
        for list_id, figure in event["lists"].items():
            labels = (event_id, list_id, figure["name"] or "")
            LIST_INSIDE.labels(*labels).set(figure["inside"])
            LIST_ADMITTED.labels(*labels).set(figure["admitted"])
            for reason, count in figure["refused"].items():
                LIST_REFUSED.labels(*labels, reason).set(count)
    VENUE_READ_OK.set(1)


# The processor's metrics app holds the store's check-in part (not the API's app keys).
CHECKIN = web.AppKey("checkin", CheckinStore)


async def _metrics(request: web.Request) -> web.Response:
    await _venue_figures(request.app[CHECKIN])
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _name_server(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["Server"] = SERVER_HEADER


async def _serve_metrics(host: str, port: int, checkin: CheckinStore) -> web.AppRunner:
    app = web.Application()
    app[CHECKIN] = checkin
    app.on_response_prepare.append(_name_server)  # not aiohttp's "Python/3.x aiohttp/3.x"
    app.router.add_get("/metrics", _metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def main() -> None:
    settings, cfg = Settings.from_env(), ProcessorSettings.from_env()
    redis = redis_from_settings(settings, client_name="tickets-processor")
    store = Store(redis, StoreConfig.from_settings(settings))
    webhooks = Webhooks(store.webhooks)
    outbox = Outbox(webhooks, settings.webhook_keep_s)
    processor = Processor(store.consumer, cfg, outbox)
    deliverer = Deliverer(webhooks, outbox, DeliverySettings.of(settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    runner = await _serve_metrics(cfg.metrics_host, cfg.metrics_port, store.checkin)
    log.info("consumer %s of group %s; metrics on %s:%d", cfg.consumer, processor.consumer.group,
             cfg.metrics_host, cfg.metrics_port)
    try:
        await asyncio.gather(processor.run(stop), deliverer.run(stop))
    finally:
        await runner.cleanup()
        await close_client(redis)


if __name__ == "__main__":
    name = os.environ.get("LOG_NAME", "processor")
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {name} %(levelname)s %(name)s: %(message)s")
    asyncio.run(main())
