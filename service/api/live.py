"""GET /event/{event}/live: the live view of an event (service/live.py), as Server-Sent
Events, from this worker's hub of the event (live_hub.py).

Must change together: service/live.py (the messages), live_hub.py, openapi.yaml, nginx's live
location (deploy/nginx/server.conf: unbuffered), web/live/live.js.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from ..api_keys import Permission
from ..errors import InvalidInput
from . import inputs
from .appkeys import LIVE, TICKETS
from .auth import event_in_path, requires


def _event_stream(parts: dict[str, Any]) -> bytes:
    return f"id: {parts['position']}\nevent: {parts['type']}\ndata: {json.dumps(parts, separators=(',', ':'))}\n\n" \
        .encode()


@requires(Permission.LIVE, scope=event_in_path)
async def live(request: web.Request) -> web.StreamResponse:
    """The live view as Server-Sent Events: a snapshot, then updates; resumable."""
    inputs.reject_unknown_params(request, ())
    event_id = inputs.event_id(request.match_info["event"])
    await request.app[TICKETS].get_event(event_id)  # 404 for an event that does not exist
    last_event_id = request.headers.get("Last-Event-ID")
    if last_event_id is not None and len(last_event_id) > 64:
        raise InvalidInput("Last-Event-ID is at most 64 characters: a message's id", slug="bad-last-event-id")
    hubs = request.app[LIVE]
    hub, viewer = await hubs.join(event_id, last_event_id)
    try:
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        await response.prepare(request)
        await response.write(f"retry: 2000\n: live view of event {event_id}\n\n".encode())
        while not viewer.closed:
            message = await viewer.next(hubs.settings.live_heartbeat_s)
            await response.write(b": still here\n\n" if message is None else _event_stream(message))
    except ConnectionResetError:
        pass  # the viewer went away
    finally:
        hub.leave(viewer)
    return response


async def close_streams(app: web.Application) -> None:
    """At shutdown, before aiohttp waits for the handlers: every stream ends, and its viewer
    reconnects (to another replica)."""
    await app[LIVE].close()


def setup_live_routes(r: Any) -> None:
    r.add_get("/event/{event}/live", live)
