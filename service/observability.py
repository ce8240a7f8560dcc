"""The HTTP side of monitoring: recording each answer, and the /metrics handler."""

from __future__ import annotations

import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from .appkeys import ACTOR
from .metrics import render, request_metrics

# Sent instead of aiohttp's "Python/3.x aiohttp/3.y": versions help only an attacker.
SERVER_HEADER = "tickets"


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
