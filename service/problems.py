"""RFC 9457 problem details, and the one middleware that turns errors into them."""

from __future__ import annotations

import json
import logging
from typing import Any

from aiohttp import web

from .appkeys import SETTINGS
from .errors import (
    FeedCursorExpired,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    ServiceError,
    StoreUnavailable,
    TicketNotFound,
    TransitionRefused,
    Unauthenticated,
)

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_PREFIX = "urn:tickets:problem:"
_REPLAYED = {"Idempotent-Replayed": "true"}


def problem(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    body = {"type": _TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail}
    body.update(extra or {})
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_CONTENT_TYPE,
        headers=headers,
    )


def _from_service_error(request: web.Request, exc: ServiceError) -> web.Response:
    if isinstance(exc, InvalidInput):
        return problem(exc.status, exc.slug, "Invalid request", exc.detail)
    if isinstance(exc, TicketNotFound):
        return problem(404, "ticket-not-found", "Ticket not found", str(exc))
    if isinstance(exc, TransitionRefused):
        return problem(
            409, "ticket-state-conflict", "Ticket already in that state", str(exc),
            headers=_REPLAYED if exc.replayed else None, extra={"ticket": exc.ticket.to_json()},
        )
    if isinstance(exc, Unauthenticated):
        challenge = 'Bearer realm="tickets"' + (', error="invalid_token"' if exc.token_given else "")
        return problem(401, "unauthenticated", "Unauthorized", str(exc),
                       headers={"WWW-Authenticate": challenge})
    if isinstance(exc, Forbidden):
        return problem(403, "forbidden", "Forbidden", str(exc))
    if isinstance(exc, FeedCursorExpired):
        return problem(410, "cursor-expired", "Cursor expired", str(exc))
    if isinstance(exc, IdempotencyKeyReused):
        return problem(422, "idempotency-key-reused", "Idempotency-Key reused", str(exc))
    if isinstance(exc, StoreUnavailable):
        retry_after = str(request.app[SETTINGS].retry_after_s)
        return problem(
            503, "store-unavailable", "Service unavailable",
            "the ticket store did not answer. A write may or may not have been applied: "
            "retry it with the same Idempotency-Key to get its outcome",
            headers={"Retry-After": retry_after},
        )
    log.error("no problem mapping for %s", type(exc).__name__)
    return problem(500, "internal-error", "Internal Server Error", "an unexpected error")


def _from_http_exception(exc: web.HTTPException) -> web.Response:
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    slug = exc.reason.lower().replace(" ", "-")
    detail = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
    if exc.status == 405:
        detail = f"{exc.reason}; allowed: {headers.get('Allow', '')}"
    return problem(exc.status, slug, exc.reason, detail, headers=headers)


def from_exception(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json answer for any exception a handler (or the router) raised."""
    if isinstance(exc, ServiceError):
        return _from_service_error(request, exc)
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(exc)
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem(500, "internal-error", "Internal Server Error", "an unexpected error")
