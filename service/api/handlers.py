"""HTTP handlers: parse the request (inputs.py), call the store, shape the response."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from .. import SERVER_HEADER, SERVICE_NAME, __version__, metrics
from ..api_keys import Permission
from ..errors import BadTicketToken, InvalidInput
from ..models import (
    Direction,
    EventSpec,
    ListSpec,
    Refusal,
    TicketSpec,
    Transition,
    is_list_id,
)
from ..store import WriteResult
from ..store.checkin import event_of_list
from . import inputs, tokens
from .answers import json_answer
from .appkeys import API_KEYS, BOUND_EVENT, CHECKIN, CONSUMER, DEVICES, FEED, IMPORTS, OPENAPI_BODY, SETTINGS, TICKETS
from .auth import (
    all_events,
    by_handler,
    check_device_binding,
    check_event_binding,
    event_in_path,
    event_in_query,
    requires,
    ticket_event_in_path,
    ticket_event_in_query,
)
from .bodies import AnnulBody, BatchBody, CheckinBody, EventBody, ListBody, RevokeBody, TicketBody
from .budget import STATS_COST, fixed, page_cost
from .devices import setup_device_routes
from .export import export_scans
from .imports import setup_import_routes
from .live import setup_live_routes
from .observability import metrics_handler
from .problems import problem
from .webhooks import setup_webhook_routes

# The seed's `curl -X UPDATE` reaches the replicas as PATCH: nginx translates it (aiohttp's
# C parser refuses the token), so UPDATE exists at nginx only and no Allow here names it.
TRANSITION_METHODS = ("POST", "PATCH")

def _write_headers(result: WriteResult, **extra: str) -> dict[str, str]:
    return {**extra, "Idempotent-Replayed": "true"} if result.replayed else extra


async def index(request: web.Request) -> web.Response:
    auth = "on" if request.app[API_KEYS].enabled else "off"
    return json_answer({"service": SERVICE_NAME, "version": __version__, "auth": auth})


async def healthz(request: web.Request) -> web.Response:
    return json_answer({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await request.app[TICKETS].ready()  # a write would succeed: not just a PING answered
    return json_answer({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BODY], content_type="application/json")


_TICKET_BODY = msgspec.json.Decoder(TicketBody)
_EVENT_BODY = msgspec.json.Decoder(EventBody)
_REVOKE_BODY = msgspec.json.Decoder(RevokeBody)


@requires(Permission.CREATE, scope=by_handler)
async def create_ticket(request: web.Request) -> web.Response:
    """The seed's POST /ticket (no body: a ticket of the default event), or a ticket of an
    event, with a type, a holder, a seat and a validity window."""
    inputs.reject_unknown_params(request, ())
    body, canonical = await inputs.decode_body(request, _TICKET_BODY)
    check_event_binding(request, body.event)
    spec = TicketSpec(body.event, body.type, body.holder, body.seat, body.valid_from, body.valid_until)
    operation = "create\n" + canonical
    idem = inputs.idempotency_key(request, operation)
    result = await request.app[TICKETS].create(spec=spec, origin=inputs.origin(request, operation), idempotency=idem)
    headers = _write_headers(result, Location=f"/ticket/{result.ticket.id}")
    return json_answer(result.ticket.to_json(), status=201, headers=headers)


_BATCH_BODY = msgspec.json.Decoder(BatchBody)
MAX_BATCH = 1000


@requires(Permission.CREATE, scope=by_handler)
async def create_batch(request: web.Request) -> web.Response:
    """Up to 1,000 tickets of one event in one request, all or nothing: a bad item issues
    nothing, and the answer names every bad item."""
    inputs.reject_unknown_params(request, ())
    batch, canonical = await inputs.decode_body(request, _BATCH_BODY, request.app[SETTINGS].max_batch_body_bytes)
    items, errors = _batch_items(batch.tickets)
    if errors:  # an item too deep is the body too deep, as any other body is told
        inputs.check_depth(canonical.encode())
    event = items[0].event if items else "default"
    errors += [{"index": i, "detail": f"every ticket of a batch is of one event: {event}, not {item.event}"}
               for i, item in enumerate(items) if item.event != event and not errors]
    if errors:
        raise InvalidInput(f"{len(errors)} of {len(batch.tickets)} tickets are not valid; none was issued",
                           slug="malformed-body", extra={"errors": errors})
    check_event_binding(request, event)
    made: dict[tuple[Any, ...], TicketSpec] = {}  # one spec for each kind of item, not each item
    specs = []
    for b in items:
        fields = (b.event, b.type, b.holder, b.seat, b.valid_from, b.valid_until)
        spec = made.get(fields)
        if spec is None:
            spec = made[fields] = TicketSpec(*fields)
        specs.append(spec)
    operation = "batch\n" + canonical
    idem = inputs.idempotency_key(request, operation)
    tickets, replayed = await request.app[TICKETS].issue_batch(
        specs, origin=inputs.origin(request, operation), idempotency=idem)
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return json_answer({"tickets": [t.to_json() for t in tickets]}, status=201, headers=headers)


def _batch_items(raws: list[msgspec.Raw]) -> tuple[list[TicketBody], list[dict[str, object]]]:
    """Each item decoded on its own, so that the answer names every bad one: (items, errors).
    (Decoding them all as one list costs more: 1.72 against 1.40 us an item.)"""
    items: list[TicketBody] = []
    errors: list[dict[str, object]] = []
    for index, raw in enumerate(raws):
        try:
            items.append(_TICKET_BODY.decode(raw))
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError) as exc:
            errors.append({"index": index, "detail": str(exc)})
    return items, errors


@requires(Permission.MANAGE_EVENTS, scope=all_events)
async def create_event(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    body, canonical = await inputs.decode_body(request, _EVENT_BODY)
    spec = EventSpec(body.name, body.starts_at, body.ends_at, body.capacity)
    event = await request.app[TICKETS].create_event(spec, origin=inputs.origin(request, "event\n" + canonical))
    return json_answer(event.to_json(), status=201, headers={"Location": f"/event/{event.id}"})


@requires(Permission.READ_EVENT, scope=event_in_path)
async def get_event(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    event = await request.app[TICKETS].get_event(inputs.event_id(request.match_info["event"]))
    return json_answer(event.to_json())


@requires(Permission.READ_EVENT, scope=by_handler, cost=page_cost(inputs.DEFAULT_PAGE_SIZE))
async def list_events(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ("limit", "cursor"))
    limit = inputs.bounded_int(request.query.get("limit"), "limit", inputs.DEFAULT_PAGE_SIZE, inputs.MAX_PAGE_SIZE)
    bound = request[BOUND_EVENT]
    if bound:  # a bound key sees its own event only
        if "cursor" in request.query:
            await request.app[FEED].page_cursor(request.query["cursor"])
        return json_answer([(await request.app[TICKETS].get_event(bound)).to_json()])
    page = await request.app[FEED].event_page(request.query.get("cursor"), limit)
    headers = {}
    if page.next_cursor is not None:
        nxt = request.rel_url.update_query(limit=limit, cursor=page.next_cursor)
        headers["Link"] = f'<{nxt}>; rel="next"'
    return json_answer([e.to_json() for e in page.events], headers=headers)


_LIST_BODY = msgspec.json.Decoder(ListBody)
_CHECKIN_BODY = msgspec.json.Decoder(CheckinBody)
_ANNUL_BODY = msgspec.json.Decoder(AnnulBody)


@requires(Permission.MANAGE_LISTS, scope=event_in_path)
async def create_list(request: web.Request) -> web.Response:
    """A check-in list of an event: a gate or an area."""
    inputs.reject_unknown_params(request, ())
    event_id = inputs.event_id(request.match_info["event"])
    body, canonical = await inputs.decode_body(request, _LIST_BODY)
    spec = ListSpec(body.name, tuple(body.types or ()), body.reentry, body.capacity, tuple(body.leaves))
    origin = inputs.origin(request, f"list\n{event_id}\n{canonical}")
    made = await request.app[CHECKIN].create_list(event_id, spec, origin=origin)
    return json_answer(made.to_json(), status=201, headers={"Location": f"/event/{event_id}/list/{made.id}"})


@requires(Permission.READ_EVENT, scope=event_in_path)
async def event_lists(request: web.Request) -> web.Response:
    """Every check-in list of an event, with its live counters: what a gate picks from."""
    inputs.reject_unknown_params(request, ())
    event_id = inputs.event_id(request.match_info["event"])
    return json_answer([info.to_json() for info in await request.app[CHECKIN].lists(event_id)])


@requires(Permission.READ_EVENT, scope=event_in_path)
async def get_list(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    event_id = inputs.event_id(request.match_info["event"])
    list_id = request.match_info["list"]
    if not is_list_id(list_id):
        raise InvalidInput("the list id is not one (its event's 8 hex digits, a dash and 4 more)",
                           slug="malformed-list-id")
    return json_answer((await request.app[CHECKIN].get_list(event_id, list_id)).to_json())


@requires(Permission.CHECKIN, scope=event_in_path, cost=page_cost(inputs.MAX_PAGE_SIZE))
async def list_book(request: web.Request) -> web.Response:
    """An offline gate's book of the event for its list, from the tickets themselves."""
    inputs.reject_unknown_params(request, ("limit", "cursor"))
    event_id = inputs.event_id(request.match_info["event"])
    list_id = request.match_info["list"]
    if not is_list_id(list_id):
        raise InvalidInput("the list id is not one (its event's 8 hex digits, a dash and 4 more)",
                           slug="malformed-list-id")
    limit = inputs.bounded_int(request.query.get("limit"), "limit", inputs.MAX_PAGE_SIZE, inputs.MAX_PAGE_SIZE)
    await request.app[CHECKIN].get_list(event_id, list_id)  # 404 for a list the event lacks
    page = await request.app[FEED].book_page(event_id, list_id, request.query.get("cursor"), limit)
    headers = {}
    if page.next_cursor is not None:
        headers["Link"] = f'<{request.rel_url.update_query(limit=limit, cursor=page.next_cursor)}>; rel="next"'
    tickets = [{"id": e.ticket_id, "status": e.state.value, "plain_used": e.plain_used,
                "used_at": None if e.used_at_us is None else e.used_at_us / 1e6, "inside": e.inside,
                "imported": None if e.imported is None else e.imported.to_json()}
               for e in page.entries]
    return json_answer({"tickets": tickets, "changes_after": page.changes_after, "next": page.next_cursor},
                 headers=headers)


@requires(Permission.CHECKIN, scope=by_handler)
async def checkin(request: web.Request) -> web.Response:
    """One scan at a gate: 200 whether or not the holder is admitted (a refusal is the
    gate's answer, with its reason), 4xx only for a malformed request or an unknown list."""
    inputs.reject_unknown_params(request, ())
    body, canonical = await inputs.decode_body(request, _CHECKIN_BODY)
    refusal: Refusal | None = None
    event = event_of_list(body.list)
    code_id = None
    try:
        ticket_id, code = inputs.scanned(request, body.ticket, event)
    except BadTicketToken as exc:  # a forged or altered code is the gate's refusal, counted
        ticket_id, code, refusal = "", None, exc.reason
    if code is not None:  # an imported ticket's code: its id is known without a read
        code_id = await request.app[IMPORTS].ticket_id_of(event, code)
    check_event_binding(request, event)
    check_device_binding(request, body.list, body.direction)
    scanned_at_us = None if body.scanned_at is None else round(body.scanned_at * 1e6)
    operation = "checkin\n" + canonical
    idem = inputs.idempotency_key(request, operation)
    result, replayed = await request.app[CHECKIN].checkin(
        ticket_id or code_id or "", body.list, Direction(body.direction), origin=inputs.origin(request, operation),
        scanned_at_us=scanned_at_us, idempotency=idem, refusal=refusal, offline=body.offline,
        code_id=code_id if ticket_id else None,
    )
    if not replayed:
        outcome = "admitted" if result.admitted else "conflict" if result.conflict else "refused"
        reason = result.reason.value if result.reason else ""
        metrics.scan_counter(body.direction, outcome, reason).inc()
    return json_answer(result.to_json(), headers={"Idempotent-Replayed": "true"} if replayed else None)


@requires(Permission.CHECKIN, scope=by_handler)
async def annul_checkin(request: web.Request) -> web.Response:
    """Undo this key's own last scan of the ticket on the list, within ANNUL_WINDOW_S."""
    inputs.reject_unknown_params(request, ())
    body, _ = await inputs.decode_body(request, _ANNUL_BODY)
    event = event_of_list(body.list)
    ticket_id, code = inputs.scanned(request, body.ticket, event)
    if ticket_id is None or code is not None:  # a code, or another event's id: as this event's code
        ticket_id = await request.app[IMPORTS].ticket_id_of(event, body.ticket)
    check_event_binding(request, event)
    check_device_binding(request, body.list, None)
    inside = await request.app[CHECKIN].annul(
        ticket_id, body.list, origin=inputs.origin(request), window_s=request.app[SETTINGS].annul_window_s
    )
    return json_answer({"annulled": True, "ticket": ticket_id, "list": body.list, "inside": inside})


@requires(Permission.REVOKE, scope=ticket_event_in_path)
async def revoke_ticket(request: web.Request) -> web.Response:
    """A refunded or cancelled ticket: refused for ever, never valid again."""
    inputs.reject_unknown_params(request, ())
    ticket_id = inputs.ticket_id(request, request.match_info["id"])
    body, canonical = await inputs.decode_body(request, _REVOKE_BODY)
    operation = f"revoke\n{ticket_id}\n{canonical}"
    idem = inputs.idempotency_key(request, operation)
    result = await request.app[TICKETS].transition(
        ticket_id, Transition.REVOKE, origin=inputs.origin(request, operation), idempotency=idem, reason=body.reason
    )
    return json_answer(result.ticket.to_json(), headers=_write_headers(result))


def _get_tickets_permission(request: web.Request) -> Permission:
    return Permission.READ if "id" in request.query else Permission.LIST


def _get_tickets_cost(request: web.Request) -> int:
    return 1 if "id" in request.query else page_cost(inputs.DEFAULT_PAGE_SIZE)(request)


def _get_tickets_scope(request: web.Request) -> str | None:
    return ticket_event_in_query(request) if "id" in request.query else all_events(request)


@requires(_get_tickets_permission, scope=_get_tickets_scope, cost=_get_tickets_cost)
async def get_tickets(request: web.Request) -> web.Response:
    """The seed's GET /ticket: one ticket (as a list) with ?id=, else a page of all."""
    inputs.reject_unknown_params(request, ("id", "limit", "cursor"))
    if "id" in request.query:
        # limit and cursor mean nothing beside an id, but a bad one is refused all the same.
        inputs.bounded_int(request.query.get("limit"), "limit", inputs.DEFAULT_PAGE_SIZE, inputs.MAX_PAGE_SIZE)
        if "cursor" in request.query:
            await request.app[FEED].page_cursor(request.query["cursor"])
        ticket = await request.app[TICKETS].get(inputs.ticket_id(request, request.query["id"]))
        return json_answer([ticket.to_json()])
    return await _list_page(request)


async def _list_page(request: web.Request) -> web.Response:
    feed = request.app[FEED]
    limit = inputs.bounded_int(request.query.get("limit"), "limit", inputs.DEFAULT_PAGE_SIZE, inputs.MAX_PAGE_SIZE)
    page = await feed.list_page(request.query.get("cursor"), limit)
    headers = {}
    if page.next_cursor is not None:
        nxt = request.rel_url.update_query(limit=limit, cursor=page.next_cursor)
        headers["Link"] = f'<{nxt}>; rel="next"'
    return json_answer([t.to_json() for t in page.tickets], headers=headers)


@requires(Permission.HISTORY, scope=ticket_event_in_path)
async def ticket_history(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    changes = await request.app[TICKETS].history(inputs.ticket_id(request, request.match_info["id"]))
    return json_answer([c.to_json() for c in changes])


@requires(Permission.STATS, scope=all_events, cost=fixed(STATS_COST))
async def stats(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    s = await request.app[TICKETS].stats()
    lag = await request.app[CONSUMER].lag()
    events = await request.app[CHECKIN].event_figures()
    devices = await request.app[DEVICES].scan_counts()
    return json_answer({
        "total": s.total, "valid": s.valid, "invalid": s.invalid, "revoked": s.revoked, "refused": s.refused,
        "processed": s.processed, "processor_lag": lag, "events": events, "devices": devices,
    })


# /events was the change feed's first name; it answers as /changes does while deprecated
# (RFC 9745's Deprecation header, RFC 8594's Sunset, a successor-version link).
EVENTS_SUNSET = "Tue, 01 Jun 2027 00:00:00 GMT"


def _changes_permission(request: web.Request) -> Permission:
    # One event's feed is what its gates keep their offline copy of used tickets from.
    return Permission.READ_EVENT if "event" in request.query else Permission.EVENTS


def _changes_scope(request: web.Request) -> str | None:
    return event_in_query(request) if "event" in request.query else all_events(request)


@requires(_changes_permission, scope=_changes_scope, cost=page_cost(inputs.DEFAULT_PAGE_SIZE))
async def changes(request: web.Request) -> web.Response:
    """The change feed: every change of every ticket, in order, paged by an opaque cursor;
    with ?event=, that event's only."""
    inputs.reject_unknown_params(request, ("after", "limit", "event"))
    feed = request.app[FEED]
    limit = inputs.bounded_int(request.query.get("limit"), "limit", inputs.DEFAULT_PAGE_SIZE, inputs.MAX_PAGE_SIZE)
    if "event" in request.query:
        event_id = inputs.event_id(request.query["event"])
        page = await feed.event_changes(request.query.get("after") or None, event_id, limit)
    else:
        page = await feed.changes_page(request.query.get("after") or None, limit)
    nxt = request.rel_url.update_query(limit=limit, after=page.next_cursor)
    return json_answer([e.to_json() for e in page.changes], headers={"Link": f'<{nxt}>; rel="next"'})


async def deprecated_events(request: web.Request) -> web.StreamResponse:
    response: web.StreamResponse = await changes(request)
    response.headers["Deprecation"] = "@1796083200"  # 2026-12-01
    response.headers["Sunset"] = EVENTS_SUNSET
    successor = request.rel_url.with_path("/changes")
    link = response.headers.get("Link")
    response.headers["Link"] = f'<{successor}>; rel="successor-version"' + (f", {link}" if link else "")
    return response


deprecated_events.event_scope = changes.event_scope  # type: ignore[attr-defined]  # it is /changes


@requires(Permission.READ, scope=ticket_event_in_path)
async def get_ticket(request: web.Request) -> web.Response:
    inputs.reject_unknown_params(request, ())
    ticket = await request.app[TICKETS].get(inputs.ticket_id(request, request.match_info["id"]))
    return json_answer(ticket.to_json())


async def _transition(request: web.Request, ticket_id: str, transition: Transition) -> web.Response:
    await inputs.empty_body(request)
    operation = f"{transition.value}\n{ticket_id}"
    idem = inputs.idempotency_key(request, operation)
    result = await request.app[TICKETS].transition(
        ticket_id, transition, origin=inputs.origin(request, operation), idempotency=idem
    )
    return json_answer(result.ticket.to_json(), headers=_write_headers(result))


_TRANSITION_PERMISSION = {Transition.INVALIDATE: Permission.INVALIDATE, Transition.VALIDATE: Permission.VALIDATE}


def _by_query(transition: Transition) -> Any:
    @requires(_TRANSITION_PERMISSION[transition], scope=ticket_event_in_query)
    async def handler(request: web.Request) -> web.Response:
        inputs.reject_unknown_params(request, ("id",))
        return await _transition(request, inputs.ticket_id(request, request.query.get("id")), transition)

    return handler


def _by_path(transition: Transition) -> Any:
    @requires(_TRANSITION_PERMISSION[transition], scope=ticket_event_in_path)
    async def handler(request: web.Request) -> web.Response:
        inputs.reject_unknown_params(request, ())
        return await _transition(request, inputs.ticket_id(request, request.match_info["id"]), transition)

    return handler


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """`Expect: 100-continue` as aiohttp does it; any other expectation is a 417 problem
    (aiohttp's own answer to it is text, and comes before any middleware)."""
    expect = request.headers.get("Expect", "")
    if expect.lower() == "100-continue":
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0
        return None
    refused = problem(417, "expectation-failed", "Expectation Failed", "only Expect: 100-continue is understood")
    refused.headers["Server"] = SERVER_HEADER  # this answer bypasses the middleware
    return refused


class _Router:
    """Adds routes with the service's expect handler."""

    def __init__(self, app: web.Application) -> None:
        self._router = app.router

    def add_route(self, method: str, path: str, handler: Any) -> None:
        self._router.add_route(method, path, handler, expect_handler=expect_handler)

    def add_get(self, path: str, handler: Any) -> None:
        self._router.add_get(path, handler, expect_handler=expect_handler)

    def add_post(self, path: str, handler: Any) -> None:
        self.add_route("POST", path, handler)

    def add_delete(self, path: str, handler: Any) -> None:
        self.add_route("DELETE", path, handler)


def setup_routes(app: web.Application) -> None:
    r = _Router(app)
    r.add_get("/", index)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/openapi.json", openapi)
    r.add_get("/metrics", metrics_handler)
    r.add_get("/stats", stats)
    r.add_get("/changes", changes)
    r.add_get("/events", deprecated_events)
    r.add_post("/ticket", create_ticket)
    r.add_get("/ticket", get_tickets)
    r.add_post("/ticket/batch", create_batch)
    # The seed's two transitions; a revocation has a body and a route of its own.
    for transition in (Transition.INVALIDATE, Transition.VALIDATE):
        query_handler = _by_query(transition)
        for method in TRANSITION_METHODS:
            r.add_route(method, f"/ticket/{transition.value}", query_handler)
        r.add_post(f"/ticket/{{id}}/{transition.value}", _by_path(transition))
    r.add_get("/ticket/{id}/history", ticket_history)
    r.add_get("/ticket/{id}/token", tokens.ticket_token)
    r.add_get("/ticket/{id}/qr.svg", tokens.ticket_qr_svg)
    r.add_get("/ticket/{id}/qr.png", tokens.ticket_qr_png)
    r.add_get("/keys", tokens.public_keys)
    r.add_post("/ticket/{id}/revoke", revoke_ticket)
    r.add_post("/event", create_event)
    r.add_get("/event", list_events)
    r.add_get("/event/{event}", get_event)
    r.add_post("/event/{event}/list", create_list)
    r.add_get("/event/{event}/list", event_lists)
    r.add_get("/event/{event}/list/{list}", get_list)
    r.add_get("/event/{event}/list/{list}/book", list_book)
    r.add_get("/event/{event}/scans", export_scans)
    r.add_post("/checkin", checkin)
    r.add_post("/checkin/annul", annul_checkin)
    setup_device_routes(r)
    setup_webhook_routes(r)
    setup_import_routes(r)
    setup_live_routes(r)
    # The id pattern leaves out the words of the routes above, so `GET /ticket/invalidate` is
    # a 405 from its resource rather than a malformed-id 400 from this one.
    r.add_get(r"/ticket/{id:(?!(?:(?:in)?validate|batch)$)[^/]+}", get_ticket)
