"""HTTP handlers: parse the request, call the store, shape the response."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Iterable

from aiohttp import web

from . import SERVICE_NAME, __version__
from .appkeys import OPENAPI_BODY, STORE
from .errors import InvalidInput
from .models import PageCursor, Transition, new_ticket_id, parse_ticket_id
from .store import SHARDS

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
TRANSITION_METHODS = ("POST", "PATCH", "UPDATE")
# nginx's $request_id is 32 hex digits; accept any short token of that alphabet.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status,
        content_type="application/json", headers=headers,
    )


def _require_id(raw: str | None) -> str:
    if raw is None or raw == "":
        raise InvalidInput("the ticket id is missing: pass ?id=<ticket id>", slug="missing-id")
    ticket_id = parse_ticket_id(raw)
    if ticket_id is None:
        raise InvalidInput(f"{raw[:64]!r} is not a ticket id (a UUID)", slug="malformed-id")
    return ticket_id


def _reject_unknown_params(request: web.Request, allowed: Iterable[str]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}", slug="unknown-parameter")


def request_id(request: web.Request) -> str:
    """The id nginx gave this request (the same on nginx's retries), else a fresh one."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID_RE.fullmatch(given) else uuid.uuid4().hex


async def _read_empty_body(request: web.Request) -> None:
    raw = await request.read()
    if not raw.strip():
        return
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body is not valid JSON", slug="malformed-body") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object, or empty", slug="malformed-body")
    if body:
        raise InvalidInput(f"unknown member(s): {', '.join(sorted(body))}", slug="malformed-body")


async def index(request: web.Request) -> web.Response:
    return _json({"service": SERVICE_NAME, "version": __version__})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await request.app[STORE].ping()
    return _json({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BODY], content_type="application/json")


async def create_ticket(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    await _read_empty_body(request)
    ticket = await request.app[STORE].create(new_ticket_id())
    return _json(ticket.to_json(), status=201, headers={"Location": f"/ticket/{ticket.id}"})


async def get_tickets(request: web.Request) -> web.Response:
    """The seed's GET /ticket: one ticket (as a list) with ?id=, else a page of all."""
    _reject_unknown_params(request, ("id", "limit", "cursor"))
    if "id" in request.query:
        ticket = await request.app[STORE].get(_require_id(request.query["id"]))
        return _json([ticket.to_json()])
    return await _list_page(request)


async def _list_page(request: web.Request) -> web.Response:
    limit = _page_limit(request.query.get("limit"))
    cursor = _page_cursor(request.query.get("cursor"))
    page = await request.app[STORE].list_page(cursor, limit)
    headers = {}
    if page.next_cursor is not None:
        nxt = request.rel_url.update_query(limit=limit, cursor=page.next_cursor.encode())
        headers["Link"] = f'<{nxt}>; rel="next"'
    return _json([t.to_json() for t in page.tickets], headers=headers)


def _page_limit(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE_SIZE
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_PAGE_SIZE:
        raise InvalidInput(f"limit must be an integer from 1 to {MAX_PAGE_SIZE}", slug="bad-limit")
    return int(raw)


def _page_cursor(raw: str | None) -> PageCursor | None:
    if raw is None:
        return None
    cursor = PageCursor.decode(raw, len(SHARDS))
    if cursor is None:
        raise InvalidInput("cursor is not one this service issued", slug="bad-cursor")
    return cursor


async def get_ticket(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    ticket = await request.app[STORE].get(_require_id(request.match_info["id"]))
    return _json(ticket.to_json())


async def _transition(request: web.Request, ticket_id: str, transition: Transition) -> web.Response:
    result = await request.app[STORE].transition(ticket_id, transition, request_id(request))
    headers = {"Idempotent-Replayed": "true"} if result.replayed else None
    return _json(result.ticket.to_json(), headers=headers)


def _by_query(transition: Transition) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _reject_unknown_params(request, ("id",))
        return await _transition(request, _require_id(request.query.get("id")), transition)

    return handler


def _by_path(transition: Transition) -> Any:
    async def handler(request: web.Request) -> web.Response:
        _reject_unknown_params(request, ())
        return await _transition(request, _require_id(request.match_info["id"]), transition)

    return handler


def setup_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/", index)
    r.add_get("/healthz", healthz)
    r.add_get("/readyz", readyz)
    r.add_get("/openapi.json", openapi)
    r.add_post("/ticket", create_ticket)
    r.add_get("/ticket", get_tickets)
    for transition in Transition:
        query_handler = _by_query(transition)
        for method in TRANSITION_METHODS:
            r.add_route(method, f"/ticket/{transition.value}", query_handler)
        r.add_post(f"/ticket/{{id}}/{transition.value}", _by_path(transition))
    # The id pattern leaves out the transition words, so `GET /ticket/invalidate` is a 405
    # from the resource above rather than a malformed-id 400 from this one.
    r.add_get(r"/ticket/{id:(?!(?:in)?validate$)[^/]+}", get_ticket)

