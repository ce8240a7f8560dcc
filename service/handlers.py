"""HTTP handlers: parse the request, call the store, shape the response."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Iterable

from aiohttp import web

from . import SERVICE_NAME, __version__
from .apikeys import Permission
from .appkeys import ACTOR, KEYRING, OPENAPI_BODY, STORE
from .auth import requires
from .errors import InvalidInput
from .observability import metrics_handler
from .models import FeedCursor, IdempotencyKey, Origin, PageCursor, Transition, parse_ticket_id
from .store import SHARDS, WriteResult

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
PROCESSOR_GROUP = "processor"
TRANSITION_METHODS = ("POST", "PATCH", "UPDATE")
# nginx's $request_id is 32 hex digits; accept any short token of that alphabet.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Visible ASCII, as the IETF draft's sf-string allows; optionally sent quoted.
_IDEMPOTENCY_KEY_RE = re.compile(r'^[\x20-\x7e]{1,255}$')


_encode = json.JSONEncoder(ensure_ascii=True, check_circular=False).encode


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_encode(data).encode(), status=status, content_type="application/json", headers=headers,
    )


def _require_id(raw: str | None) -> str:
    if raw is None or raw == "":
        raise InvalidInput("the ticket id is missing: pass ?id=<ticket id>", slug="missing-id")
    ticket_id = parse_ticket_id(raw)
    if ticket_id is None:
        raise InvalidInput(f"{raw[:64]!r} is not a ticket id (a UUID)", slug="malformed-id")
    return ticket_id


def _reject_unknown_params(request: web.Request, allowed: Iterable[str]) -> None:
    if not request.query_string:  # the common case, without parsing a query
        return
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)}", slug="unknown-parameter")


def forwarded_request_id(request: web.Request) -> str | None:
    """The id nginx gave this request: the same when nginx re-sends it to another replica."""
    given = request.headers.get("X-Request-Id", "")
    return given if _REQUEST_ID_RE.fullmatch(given) else None


def origin(request: web.Request) -> Origin:
    """Who is asking: the API key's name, nginx's request id (else a fresh one, which a
    retry by the Redis client reuses) and the client address nginx saw."""
    forwarded = forwarded_request_id(request)
    client_ip = request.headers.get("X-Real-IP") or request.remote or ""
    return Origin(
        actor=request[ACTOR], request_id=forwarded or uuid.uuid4().hex,
        client_ip=client_ip[:64], forwarded=forwarded is not None,
    )


def idempotency_key(request: web.Request) -> IdempotencyKey | None:
    """The caller's Idempotency-Key header, scoped to the caller; None when absent."""
    raw = request.headers.get("Idempotency-Key")
    if raw is None:
        return None
    key = raw.strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = key[1:-1]
    if not _IDEMPOTENCY_KEY_RE.fullmatch(key) or '"' in key:
        raise InvalidInput("Idempotency-Key must be 1 to 255 visible ASCII characters",
                           slug="bad-idempotency-key")
    return IdempotencyKey(actor=request[ACTOR], key=key)


def _write_headers(result: WriteResult, **extra: str) -> dict[str, str]:
    return {**extra, "Idempotent-Replayed": "true"} if result.replayed else extra


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
    auth = "on" if request.app[KEYRING].enabled else "off"
    return _json({"service": SERVICE_NAME, "version": __version__, "auth": auth})


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    await request.app[STORE].ping()
    return _json({"status": "ready"})


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[OPENAPI_BODY], content_type="application/json")


@requires(Permission.CREATE)
async def create_ticket(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    await _read_empty_body(request)
    result = await request.app[STORE].create(origin=origin(request), idempotency=idempotency_key(request))
    headers = _write_headers(result, Location=f"/ticket/{result.ticket.id}")
    return _json(result.ticket.to_json(), status=201, headers=headers)


def _get_tickets_permission(request: web.Request) -> Permission:
    return Permission.READ if "id" in request.query else Permission.LIST


@requires(_get_tickets_permission)
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


@requires(Permission.HISTORY)
async def ticket_history(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    events = await request.app[STORE].history(_require_id(request.match_info["id"]))
    return _json([e.to_json() for e in events])


@requires(Permission.STATS)
async def stats(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    s = await request.app[STORE].stats(PROCESSOR_GROUP)
    return _json({
        "total": s.total, "valid": s.valid, "invalid": s.invalid, "refused": s.refused,
        "processed": s.processed, "processor_lag": s.processor_lag,
    })


@requires(Permission.EVENTS)
async def events(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ("after", "limit"))
    limit = _page_limit(request.query.get("limit"))
    after = request.query.get("after")
    cursor = None if after is None else FeedCursor.decode(after, len(SHARDS))
    if after is not None and cursor is None:
        raise InvalidInput("after is not a cursor this service issued", slug="bad-cursor")
    page = await request.app[STORE].events_page(cursor, limit)
    nxt = request.rel_url.update_query(limit=limit, after=page.next_cursor.encode())
    return _json([e.to_json() for e in page.events], headers={"Link": f'<{nxt}>; rel="next"'})


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


@requires(Permission.READ)
async def get_ticket(request: web.Request) -> web.Response:
    _reject_unknown_params(request, ())
    ticket = await request.app[STORE].get(_require_id(request.match_info["id"]))
    return _json(ticket.to_json())


async def _transition(request: web.Request, ticket_id: str, transition: Transition) -> web.Response:
    result = await request.app[STORE].transition(
        ticket_id, transition, origin=origin(request), idempotency=idempotency_key(request)
    )
    return _json(result.ticket.to_json(), headers=_write_headers(result))


_TRANSITION_PERMISSION = {Transition.INVALIDATE: Permission.INVALIDATE, Transition.VALIDATE: Permission.VALIDATE}


def _by_query(transition: Transition) -> Any:
    @requires(_TRANSITION_PERMISSION[transition])
    async def handler(request: web.Request) -> web.Response:
        _reject_unknown_params(request, ("id",))
        return await _transition(request, _require_id(request.query.get("id")), transition)

    return handler


def _by_path(transition: Transition) -> Any:
    @requires(_TRANSITION_PERMISSION[transition])
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
    r.add_get("/metrics", metrics_handler)
    r.add_get("/stats", stats)
    r.add_get("/events", events)
    r.add_post("/ticket", create_ticket)
    r.add_get("/ticket", get_tickets)
    for transition in Transition:
        query_handler = _by_query(transition)
        for method in TRANSITION_METHODS:
            r.add_route(method, f"/ticket/{transition.value}", query_handler)
        r.add_post(f"/ticket/{{id}}/{transition.value}", _by_path(transition))
    r.add_get("/ticket/{id}/history", ticket_history)
    # The id pattern leaves out the transition words, so `GET /ticket/invalidate` is a 405
    # from the resource above rather than a malformed-id 400 from this one.
    r.add_get(r"/ticket/{id:(?!(?:in)?validate$)[^/]+}", get_ticket)

