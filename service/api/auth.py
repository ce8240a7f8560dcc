"""Each handler declares the permission it needs, and the event whose data it touches;
`requires` checks the caller's API key against both before the handler runs. A decorator
rather than a middleware: it wraps the handler once, at start, instead of adding a layer to
every request.

The event rule, one for every route: a key bound to an event (a scanner key today) reads and
writes that event's data only, and nothing that belongs to no event of its own (the default
event's tickets). A route names its event with `scope=`: from its path or query here;
`by_handler` when only the body says or the answer is filtered (the handler then calls
`check_event_binding` itself); `all_events` for a route no bound key may use.
tests/test_auth.py walks every route of the app with an unbound key, a key bound to the
route's event and one bound to another, so a route added without a scope fails there."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ..api_keys import DEVICE_KEY_PREFIX, ROLE_PERMISSIONS, Permission, Role
from ..errors import Forbidden, Unauthenticated
from ..models import ANONYMOUS, event_of, parse_ticket_id
from ..signing import token_ticket_id
from .appkeys import ACTOR, API_KEYS, BOUND_EVENT, BUDGET, DEVICE, DEVICE_CACHE
from .budget import Cost
from .middleware import Handler

PermissionRule = Permission | Callable[[web.Request], Permission]
# The event a request touches, from its path or query; None when it names none (a malformed
# id is the handler's 400, not a 403 here).
EventScope = Callable[[web.Request], str | None]


def by_handler(request: web.Request) -> str | None:
    """The route's event is in its body, or its answer is filtered to the bound event: the
    handler applies the rule itself (check_event_binding)."""
    return None


# What a route that spans every event names as its event: no bound key may use it.
ALL_EVENTS = "*"


def all_events(request: web.Request) -> str | None:
    """The route reads or writes across events (the whole feed, every ticket, /stats)."""
    return ALL_EVENTS


def requires(
    rule: PermissionRule, *, scope: EventScope | None = None, cost: Cost | None = None
) -> Callable[[Handler], Handler]:
    """Guard a handler with a permission (or a function of the request that names one),
    with `scope`, the event rule, and with `cost`, the caller's budget of expensive work
    (service/api/budget.py). The acting key's name is left in request[ACTOR] ("anonymous" with
    auth off)."""

    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> Any:
            await _authorize(request, rule)
            if scope is not None and request[BOUND_EVENT]:
                event = scope(request)
                if event is not None:
                    check_event_binding(request, event)
            if cost is None:
                return await handler(request)
            async with request.app[BUDGET].hold(request[ACTOR], cost(request)):
                return await handler(request)

        guarded.event_scope = scope  # type: ignore[attr-defined]  # read by the route table's test
        return guarded

    return guard


def event_in_path(request: web.Request) -> str | None:
    return request.match_info.get("event")


def event_in_query(request: web.Request) -> str | None:
    return request.query.get("event")


def ticket_event_in_path(request: web.Request) -> str | None:
    return _ticket_event(request.match_info.get("id"))


def ticket_event_in_query(request: web.Request) -> str | None:
    return _ticket_event(request.query.get("id"))


def _ticket_event(raw: str | None) -> str | None:
    """The event of a ticket id or token as given, before it is verified: a forged token
    names any event, but it is refused as forged right after, whatever it names."""
    if raw is None:
        return None
    ticket_id = parse_ticket_id(raw) or token_ticket_id(raw)
    return event_of(ticket_id) if ticket_id else None


async def _authorize(request: web.Request, rule: PermissionRule) -> None:
    """Leave the caller's name in request[ACTOR] (a refused known key too, for the log),
    or raise. A device's key is found through this worker's cache: no Redis round trip but
    the first on this worker, and after a roll or revocation anywhere."""
    api_keys = request.app[API_KEYS]
    if not api_keys.enabled:
        request[ACTOR], request[BOUND_EVENT] = ANONYMOUS, ""
        return
    secret = _bearer(request)
    if secret is not None and secret.startswith(DEVICE_KEY_PREFIX):
        device = await request.app[DEVICE_CACHE].resolve(secret)
        request[ACTOR], request[BOUND_EVENT], request[DEVICE] = device.actor, device.event or "", device
        role = Role(device.role)
    else:
        key = api_keys.authenticate(secret) if secret else None
        if key is None:
            raise Unauthenticated(token_given=secret is not None)
        request[ACTOR], request[BOUND_EVENT] = key.name, key.event or ""
        role = key.role
    permission = rule if isinstance(rule, Permission) else rule(request)
    if permission not in ROLE_PERMISSIONS[role]:
        raise Forbidden(request[ACTOR], permission.value)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_device_binding(request: web.Request, list_id: str, direction: str | None) -> None:
    """A device bound to lists scans at those only, and one with a fixed direction (a
    turnstile) only in that direction."""
    device = request.get(DEVICE)
    if device is None:
        return
    if device.lists and list_id not in device.lists:
        raise Forbidden(device.actor, f"scan at list {list_id} (bound to {', '.join(device.lists)})")
    if direction is not None and device.direction is not None and direction != device.direction.value:
        raise Forbidden(device.actor, f"scan {direction} (fixed to {device.direction.value})")


def check_event_binding(request: web.Request, event: str) -> None:
    """A key bound to one event may not read or act on another's tickets, lists or feed."""
    bound = request.get(BOUND_EVENT, "")
    if bound and bound != event:
        raise Forbidden(request[ACTOR], f"touch event {event}'s data (bound to {bound})")
