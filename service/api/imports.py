"""Tickets sold elsewhere: POST /event/{event}/import makes a ticket of the event for each
outside code (all or nothing, 1,000 at most), DELETE /event/{event}/import/{source} removes a
source's tickets never scanned. A gate scans the code itself (POST /checkin's `ticket`).

Must change together: bodies.ImportBody, store/imports.py, openapi.yaml (the two paths, the
Import schemas), nginx's allow map and body size (deploy/nginx), docs/imports.md."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from ..api_keys import Permission
from ..errors import InvalidInput
from ..models import TicketSpec, event_of, parse_ticket_id
from ..signing import looks_like_token
from ..store import CodeItem
from . import inputs
from .answers import json_answer
from .appkeys import IMPORTS, SETTINGS, TICKETS
from .auth import event_in_path, requires
from .bodies import SOURCE_NAME_RE, CodeBody, ImportBody

_IMPORT_BODY = msgspec.json.Decoder(ImportBody)


@requires(Permission.IMPORT, scope=event_in_path)
async def import_codes(request: web.Request) -> web.Response:
    """201 with a ticket for each code, in the call's order, each with its code and source."""
    inputs.reject_unknown_params(request, ())
    event = inputs.event_id(request.match_info["event"])
    body, canonical = await inputs.decode_body(request, _IMPORT_BODY, request.app[SETTINGS].max_batch_body_bytes)
    _refuse_unscannable(event, body.codes)
    items = [CodeItem(c.code, TicketSpec(event, c.type, c.holder, c.seat, c.valid_from, c.valid_until))
             for c in body.codes]
    operation = f"import\n{event}\n{canonical}"
    tickets, replayed = await request.app[IMPORTS].import_codes(
        event, body.source, items, origin=inputs.origin(request, operation),
        idempotency=inputs.idempotency_key(request, operation))
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_answer({"source": body.source, "tickets": [t.to_json() for t in tickets]}, status=201,
                       headers=headers)


def _refuse_unscannable(event: str, codes: list[CodeBody]) -> None:
    """A code a gate would read as something else cannot be imported: a ticket token, or a
    UUID of this event's own ids' shape (read as the id)."""
    bad = [{"index": i, "code": c.code} for i, c in enumerate(codes) if _reads_as_ours(event, c.code)]
    if bad:
        raise InvalidInput(f"{len(bad)} code(s) would be read at the gate as this service's own ticket ids or "
                           "tokens; nothing was imported", status=422, slug="code-unscannable",
                           extra={"codes": bad})


def _reads_as_ours(event: str, code: str) -> bool:
    parsed = parse_ticket_id(code)
    return looks_like_token(code) or (parsed is not None and event_of(parsed) == event)


@requires(Permission.IMPORT, scope=event_in_path)
async def withdraw_source(request: web.Request) -> web.Response:
    """Remove the source's tickets never scanned; name the ones kept (scanned), with codes."""
    inputs.reject_unknown_params(request, ())
    event = inputs.event_id(request.match_info["event"])
    source = request.match_info["source"]
    if not SOURCE_NAME_RE.fullmatch(source):
        raise InvalidInput("the source is not one (1 to 64 letters, digits, '.', '_' or '-')",
                           slug="malformed-source")
    await request.app[TICKETS].get_event(event)  # 404 for an event that does not exist
    done = await request.app[IMPORTS].withdraw(event, source, origin=inputs.origin(request))
    return json_answer({"source": source, "removed": done.removed,
                        "kept": [{"ticket": tid, "code": code} for tid, code in done.kept]})


def setup_import_routes(r: Any) -> None:
    r.add_post("/event/{event}/import", import_codes)
    r.add_delete("/event/{event}/import/{source}", withdraw_source)
