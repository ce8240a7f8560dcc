"""The application's one middleware. Every layer costs each request a wrapper and a
coroutine (aiohttp adds one of its own to any app with middlewares), so there is one: it
turns every error into problem+json and records every answer in the metrics."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .observability import record
from .problems import from_exception

Handler = Callable[[web.Request], Any]


@web.middleware
async def edge_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:  # a redirect is an answer, not an error
            raise
        response = from_exception(request, exc)
    except Exception as exc:
        response = from_exception(request, exc)
    record(request, response, started)
    return response
