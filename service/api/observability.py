"""The HTTP side of monitoring: recording each answer, and the /metrics handler."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .. import SERVER_HEADER
from ..metrics import FLUSH_INTERVAL_S, flush, render, request_metrics
from .appkeys import ACTOR


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


def record(request: web.Request, response: web.StreamResponse, started: float) -> None:
    """Count and time one answer, and name the acting API key in `X-Actor`, which nginx
    writes to its JSON access log and strips from the response."""
    headers = response.headers
    headers["Server"] = SERVER_HEADER
    actor = request.get(ACTOR)
    if actor is not None:
        headers["X-Actor"] = actor
    count, latency = request_metrics(_route_label(request), request.method, response.status)
    count.inc()
    latency.observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def metrics_flush_ctx(app: web.Application) -> AsyncIterator[None]:
    """Hands the tallied metrics to prometheus_client every FLUSH_INTERVAL_S, and once more
    when the worker stops."""

    async def every_interval() -> None:
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            flush()

    task = asyncio.create_task(every_interval())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    flush()
