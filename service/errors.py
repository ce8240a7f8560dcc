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

    def __init__(self, ticket: Ticket) -> None:
        super().__init__(f"ticket {ticket.id} is already {ticket.state.value}")
        self.ticket = ticket


class StoreUnavailable(ServiceError):
    """Redis did not answer in time; the request changed nothing that was acknowledged."""
