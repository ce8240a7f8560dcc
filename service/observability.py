"""The HTTP side of monitoring: the request metrics middleware and the /metrics handler."""

from __future__ import annotations

import time
from typing import Any, Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .appkeys import ACTOR
from .metrics import render, request_metrics

Handler = Callable[[web.Request], Any]


def _route_label(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request. It also names the acting API key in `X-Actor`, which
    nginx writes to its JSON access log and strips from the response."""
    started = time.perf_counter()
    response: web.StreamResponse = await handler(request)
    actor = request.get(ACTOR)
    if actor is not None:
        response.headers["X-Actor"] = actor
    count, latency = request_metrics(_route_label(request), request.method, response.status)
    count.inc()
    latency.observe(time.perf_counter() - started)
    return response


async def metrics_handler(request: web.Request) -> web.Response:
    return web.Response(body=render(), headers={"Content-Type": CONTENT_TYPE_LATEST})
