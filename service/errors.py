"""Domain exceptions. The store raises these; one middleware turns them into problem+json."""

from __future__ import annotations

from .models import Ticket


class ServiceError(Exception):
    """Base class of every error the HTTP layer knows how to explain."""


class InvalidInput(ServiceError):
    """The request itself is malformed: bad id, bad body, bad query parameter."""

    def __init__(self, detail: str, *, status: int = 400, slug: str = "invalid-request") -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.slug = slug


class TicketNotFound(ServiceError):
    def __init__(self, ticket_id: str) -> None:
        super().__init__(f"no ticket with id {ticket_id}")
        self.ticket_id = ticket_id


class TransitionRefused(ServiceError):
    """The ticket is already in the requested state: a second scan, or a second re-enable."""

    def __init__(self, ticket: Ticket, *, replayed: bool = False) -> None:
        super().__init__(f"ticket {ticket.id} is already {ticket.state.value}")
        self.ticket = ticket
        self.replayed = replayed


class StoreUnavailable(ServiceError):
    """Redis did not answer in time; the request changed nothing that was acknowledged."""


class Unauthenticated(ServiceError):
    """No key, or a key that is not configured."""

    def __init__(self, *, token_given: bool) -> None:
        super().__init__("a valid API key is required: Authorization: Bearer <secret>")
        self.token_given = token_given


class Forbidden(ServiceError):
    """A known key whose role does not allow the operation."""

    def __init__(self, key_name: str, permission: str) -> None:
        super().__init__(f"key {key_name!r} may not {permission}")


class IdempotencyKeyReused(ServiceError):
    """The Idempotency-Key was first used for a different request."""

    def __init__(self) -> None:
        super().__init__(
            "this Idempotency-Key was already used for a different request; use a new key"
        )


class FeedCursorExpired(ServiceError):
    """The event streams were trimmed past the cursor: events after it are gone."""

    def __init__(self) -> None:
        super().__init__(
            "events after this cursor were trimmed from the streams (EVENTS_MAXLEN); "
            "start again from the beginning or from a snapshot"
        )
