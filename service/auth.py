"""Each handler declares the permission it needs; `requires` checks the caller's API key
against it before the handler runs. A decorator rather than a middleware: it wraps the
handler once, at start, instead of adding a layer to every request."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .appkeys import ACTOR, BOUND_EVENT, KEYRING
from .errors import Forbidden, Unauthenticated
from .keyring import ROLE_PERMISSIONS, Permission

ANONYMOUS = "anonymous"

PermissionRule = Permission | Callable[[web.Request], Permission]
Handler = Callable[[web.Request], Any]


def requires(rule: PermissionRule) -> Callable[[Handler], Handler]:
    """Guard a handler with a permission, or with a function of the request that names one.
    The acting key's name is left in request[ACTOR] ("anonymous" with auth off)."""

    def guard(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def guarded(request: web.Request) -> Any:
            _authorize(request, rule)
            return await handler(request)

        return guarded

    return guard


def _authorize(request: web.Request, rule: PermissionRule) -> None:
    """Leave the caller's name in request[ACTOR] (a refused known key too, for the log),
    or raise."""
    keyring = request.app[KEYRING]
    if not keyring.enabled:
        request[ACTOR], request[BOUND_EVENT] = ANONYMOUS, ""
        return
    secret = _bearer(request)
    key = keyring.authenticate(secret) if secret else None
    if key is None:
        raise Unauthenticated(token_given=secret is not None)
    request[ACTOR], request[BOUND_EVENT] = key.name, key.event or ""
    permission = rule if isinstance(rule, Permission) else rule(request)
    if permission not in ROLE_PERMISSIONS[key.role]:
        raise Forbidden(key.name, permission.value)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def check_event_binding(request: web.Request, event: str) -> None:
    """A scanner key bound to one event may not act on another's tickets or lists."""
    bound = request.get(BOUND_EVENT, "")
    if bound and bound != event:
        raise Forbidden(request[ACTOR], f"scan at event {event} (bound to {bound})")
