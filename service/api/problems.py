"""RFC 9457 problem details, and the one table that maps each error to its answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from .. import metrics
from ..errors import (
    BadCursor,
    CodesDuplicated,
    DeliveryNotFound,
    DeviceNotFound,
    DeviceRevoked,
    DeviceStateRefused,
    EnrolmentRefused,
    EventNotFound,
    FeedCursorExpired,
    Forbidden,
    IdempotencyKeyReused,
    InvalidInput,
    ListNotFound,
    NothingToAnnul,
    OverBudget,
    SigningOff,
    SoldOut,
    StoreDefect,
    StoreNotReplicated,
    StoreOutOfMemory,
    StoreUnavailable,
    TicketNotFound,
    TicketRevoked,
    TransitionRefused,
    Unauthenticated,
    UnsupportedMediaType,
    WebhookNotFound,
    WebhookTargetRefused,
    WorkerBusy,
)
from .appkeys import SETTINGS

log = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:tickets:problem:"
_REPLAYED = {"Idempotent-Replayed": "true"}


def problem_body(status: int, slug: str, title: str, detail: str, **extra: Any) -> bytes:
    return json.dumps(
        {"type": TYPE_PREFIX + slug, "title": title, "status": status, "detail": detail, **extra}
    ).encode()


def problem(
    status: int, slug: str, title: str, detail: str, *,
    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
) -> web.Response:
    return web.Response(
        status=status, body=problem_body(status, slug, title, detail, **(extra or {})),
        content_type=PROBLEM_CONTENT_TYPE, headers=headers,
    )


def _retry_after(request: web.Request) -> dict[str, str]:
    return {"Retry-After": str(request.app[SETTINGS].retry_after_s)}


def _plain(status: int, slug: str, title: str) -> Callable[[web.Request, Exception], web.Response]:
    """The answer of an error whose message is the whole detail."""

    def mapper(request: web.Request, exc: Exception) -> web.Response:
        return problem(status, slug, title, str(exc))

    return mapper


def _invalid(request: web.Request, exc: InvalidInput) -> web.Response:
    return problem(exc.status, exc.slug, "Invalid request", exc.detail, extra=exc.extra)


def _unsupported(request: web.Request, exc: UnsupportedMediaType) -> web.Response:
    return problem(415, "unsupported-media-type", "Unsupported Media Type", str(exc),
                   headers={"Accept-Encoding": "identity"})


def _refused(request: web.Request, exc: TransitionRefused) -> web.Response:
    return problem(409, "ticket-state-conflict", "Ticket already in that state", str(exc),
                   headers=_REPLAYED if exc.replayed else None, extra={"ticket": exc.ticket.to_json()})


def _duplicated(request: web.Request, exc: CodesDuplicated) -> web.Response:
    return problem(409, "duplicate-codes", "Duplicate codes", str(exc), extra={"duplicates": exc.duplicates})


def _unauthenticated(request: web.Request, exc: Unauthenticated) -> web.Response:
    challenge = 'Bearer realm="tickets"' + (', error="invalid_token"' if exc.token_given else "")
    return problem(401, "unauthenticated", "Unauthorized", str(exc), headers={"WWW-Authenticate": challenge})


def _device_revoked(request: web.Request, exc: DeviceRevoked) -> web.Response:
    return problem(401, "device-revoked", "Device revoked", str(exc),
                   headers={"WWW-Authenticate": 'Bearer realm="tickets", error="invalid_token"'})


def _unavailable(request: web.Request, exc: StoreUnavailable) -> web.Response:
    return problem(
        503, "store-unavailable", "Service unavailable",
        "the ticket store did not answer. A write may or may not have been applied: "
        "retry it with the same X-Request-Id or Idempotency-Key to get its outcome",
        headers=_retry_after(request),
    )


def _not_replicated(request: web.Request, exc: StoreNotReplicated) -> web.Response:
    return problem(
        503, "store-not-replicated", "Service unavailable",
        "the ticket store applied this write but its replicas did not confirm it in time. "
        "Retry it with the same X-Request-Id or Idempotency-Key: the retry returns the stored "
        "answer and applies nothing twice",
        headers=_retry_after(request),
    )


def _over_budget(request: web.Request, exc: OverBudget) -> web.Response:
    return problem(429, "over-budget", "Too Many Requests", str(exc), headers=_retry_after(request))


def _busy(request: web.Request, exc: WorkerBusy) -> web.Response:
    return problem(503, "worker-busy", "Service busy",
                   "this replica is busy with other requests; nothing was sent to the ticket store. Retry it",
                   headers=_retry_after(request))


def _out_of_memory(request: web.Request, exc: StoreOutOfMemory) -> web.Response:
    return problem(507, "store-out-of-memory", "Insufficient Storage",
                   "the ticket store is out of memory (Redis maxmemory): nothing was written. "
                   "Operators must add memory or capacity; a retry will fail until they do")


def _defect(request: web.Request, exc: StoreDefect) -> web.Response:
    # Logged once, where the store saw it (calls.py), without a traceback.
    return problem(500, "internal-error", "Internal Server Error", "an unexpected error")


def _http(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (404 unmatched, 405, 413 over client_max_size)."""
    headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    slug = exc.reason.lower().replace(" ", "-")
    detail = exc.reason
    if exc.status == 405:
        detail = f"{exc.reason}; allowed: {headers.get('Allow', '')}"
    return problem(exc.status, slug, exc.reason, detail, headers=headers)


Mapper = Callable[[web.Request, Any], web.Response]

# Each error the HTTP layer can meet, and its answer. Looked up along the exception's class
# hierarchy, so a subclass gets its parent's answer unless it has its own.
ERROR_TABLE: dict[type[BaseException], Mapper] = {
    InvalidInput: _invalid,
    BadCursor: _plain(400, "bad-cursor", "Invalid request"),
    UnsupportedMediaType: _unsupported,
    TicketNotFound: _plain(404, "ticket-not-found", "Ticket not found"),
    EventNotFound: _plain(404, "event-not-found", "Event not found"),
    SoldOut: _plain(409, "sold-out", "Sold out"),
    CodesDuplicated: _duplicated,
    SigningOff: _plain(501, "signing-off", "Not Implemented"),
    ListNotFound: _plain(404, "list-not-found", "Check-in list not found"),
    NothingToAnnul: _plain(409, "nothing-to-annul", "Nothing to annul"),
    TicketRevoked: _plain(409, "ticket-revoked", "Ticket revoked"),
    OverBudget: _over_budget,
    WorkerBusy: _busy,
    TransitionRefused: _refused,
    Unauthenticated: _unauthenticated,
    DeviceRevoked: _device_revoked,
    DeviceNotFound: _plain(404, "device-not-found", "Device not found"),
    DeviceStateRefused: _plain(409, "device-state-conflict", "Device state conflict"),
    EnrolmentRefused: _plain(403, "enrolment-refused", "Enrolment refused"),
    WebhookNotFound: _plain(404, "webhook-not-found", "Webhook not found"),
    DeliveryNotFound: _plain(404, "delivery-not-found", "Delivery not found"),
    WebhookTargetRefused: _plain(422, "webhook-target-refused", "Webhook target refused"),
    Forbidden: _plain(403, "forbidden", "Forbidden"),
    FeedCursorExpired: _plain(410, "cursor-expired", "Cursor expired"),
    IdempotencyKeyReused: _plain(422, "idempotency-key-reused", "Idempotency-Key reused"),
    StoreNotReplicated: _not_replicated,
    StoreUnavailable: _unavailable,
    StoreOutOfMemory: _out_of_memory,
    StoreDefect: _defect,
    web.HTTPException: _http,
}


def from_exception(request: web.Request, exc: Exception) -> web.Response:
    """The problem+json answer for any exception a handler (or the router) raised."""
    for cls in type(exc).__mro__:
        mapper = ERROR_TABLE.get(cls)
        if mapper is not None:
            return mapper(request, exc)
    metrics.DEFECTS.inc()
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return problem(500, "internal-error", "Internal Server Error", "an unexpected error")
