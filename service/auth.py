"""The middleware that checks API keys against the permission each route needs."""

from __future__ import annotations

from typing import Any, Callable

from aiohttp import web

from .apikeys import ROLE_PERMISSIONS, Permission
from .appkeys import ACTOR, KEYRING
from .errors import Forbidden, Unauthenticated

ANONYMOUS = "anonymous"

PermissionRule = Permission | Callable[[web.Request], Permission]
Handler = Callable[[web.Request], Any]


def requires(rule: PermissionRule) -> Callable[[Handler], Handler]:
    """Mark a handler with the permission it needs (or a function of the request that says)."""

    def mark(handler: Handler) -> Handler:
        handler.permission = rule  # type: ignore[attr-defined]
        return handler

    return mark


def _required(request: web.Request) -> Permission | None:
    rule: PermissionRule | None = getattr(request.match_info.route.handler, "permission", None)
    if rule is None or isinstance(rule, Permission):
        return rule
    return rule(request)


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    keyring = request.app[KEYRING]
    permission = _required(request)
    if not keyring.enabled or permission is None:
        request[ACTOR] = ANONYMOUS
        return await handler(request)  # type: ignore[no-any-return]
    secret = _bearer(request)
    key = keyring.authenticate(secret) if secret else None
    if key is None:
        raise Unauthenticated(token_given=secret is not None)
    if permission not in ROLE_PERMISSIONS[key.role]:
        raise Forbidden(key.name, permission.value)
    request[ACTOR] = key.name
    return await handler(request)  # type: ignore[no-any-return]
