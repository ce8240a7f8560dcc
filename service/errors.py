"""Domain exceptions. The store raises these; one middleware turns them into problem+json."""

from __future__ import annotations

from .models import Refusal, Ticket


class ServiceError(Exception):
    """Base class of every error the HTTP layer knows how to explain."""


class InvalidInput(ServiceError):
    """The request itself is malformed: bad id, bad body, bad query parameter."""

    def __init__(
        self, detail: str, *, status: int = 400, slug: str = "invalid-request", extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.slug = slug
        self.extra = extra


class BadTicketToken(InvalidInput):
    """A ticket token with a bad signature, an unknown key or a broken layout. At a gate's
    check-in it is a refused scan instead, counted under its reason."""

    def __init__(self, reason: Refusal) -> None:
        super().__init__(reason.message, slug="ticket-token-refused", extra={"reason": reason.value})
        self.reason = reason


class SigningOff(ServiceError):
    """No ticket signing key is configured, so no token or QR code can be made."""

    def __init__(self) -> None:
        super().__init__("this service has no ticket signing key: set TICKET_SIGNING_KEYS or "
                         "TICKET_SIGNING_KEYS_FILE (docs/checkin.md#signed-tickets)")


class TicketNotFound(ServiceError):
    def __init__(self, ticket_id: str) -> None:
        super().__init__(f"no ticket with id {ticket_id}")
        self.ticket_id = ticket_id


class EventNotFound(ServiceError):
    def __init__(self, event_id: str) -> None:
        super().__init__(f"no event with id {event_id}")
        self.event_id = event_id


class ListNotFound(ServiceError):
    def __init__(self, event_id: str, list_id: str) -> None:
        super().__init__(f"event {event_id} has no check-in list {list_id}")


class TicketRevoked(ServiceError):
    """A revoked ticket gets no token nor QR code: it would be refused at every gate."""

    def __init__(self, ticket_id: str) -> None:
        super().__init__(f"ticket {ticket_id} is revoked: it gets no token or QR code")


class OverBudget(ServiceError):
    """A key with as much expensive work in flight on this worker as its budget allows."""

    def __init__(self, key_name: str, budget: int) -> None:
        super().__init__(f"key {key_name!r} has expensive requests in flight up to this worker's budget "
                         f"({budget} items); retry when they are answered")


class WorkerBusy(ServiceError):
    """A Redis call that timed out waiting for one of this worker's connections: the worker is
    busy with its own work, and Redis may be fine."""


class NothingToAnnul(ServiceError):
    """No scan of this caller's on that list and ticket to undo, or it is too late to."""


class SoldOut(ServiceError):
    """The event has issued as many tickets as its capacity."""

    def __init__(self, event_id: str) -> None:
        super().__init__(f"event {event_id} is sold out: its capacity is issued")
        self.event_id = event_id


class TransitionRefused(ServiceError):
    """The ticket is already in the requested state: a second scan, or a second re-enable."""

    def __init__(self, ticket: Ticket, *, replayed: bool = False) -> None:
        state = ticket.state.value
        super().__init__(f"ticket {ticket.id} is {state}" if state == "revoked" else
                         f"ticket {ticket.id} is already {state}")
        self.ticket = ticket
        self.replayed = replayed


class StoreError(ServiceError):
    """Redis failed the call. `kind` labels the metric and the log line."""

    kind = "error"


class StoreUnavailable(StoreError):
    """Redis did not answer in time, or said "not now" (loading, failing over): an outage.
    A write may or may not have been applied; a retry with the same key finds out."""

    kind = "unavailable"


class StoreNotReplicated(StoreUnavailable):
    """Redis applied a write but fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed it in
    time: neither a success (a failover now could lose it) nor a failure (it may survive).
    The retry of the same request returns the stored answer once it is replicated."""

    kind = "unreplicated"


class StoreOutOfMemory(StoreError):
    """Redis reached maxmemory and refuses writes: nothing was written."""

    kind = "out_of_memory"


class StoreDefect(StoreError):
    """Redis refused a call as wrong (a script error, a bad argument): a bug of ours."""

    kind = "defect"


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
    """The change streams were trimmed past the cursor: changes after it are gone."""

    def __init__(self) -> None:
        super().__init__(
            "events after this cursor were trimmed from the streams (EVENTS_MAXLEN); "
            "start again from the beginning or from a snapshot"
        )


class BadCursor(ServiceError):
    """A page or feed cursor that this service did not issue."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not a cursor this service issued")


class UnsupportedMediaType(ServiceError):
    """A request body in an encoding or type the service does not take."""


class DeviceNotFound(ServiceError):
    def __init__(self, device_id: str) -> None:
        super().__init__(f"no device {device_id}")


class DeviceStateRefused(ServiceError):
    """A roll or revocation the device's state does not allow."""

    def __init__(self, device_id: str, why: str) -> None:
        super().__init__(f"device {device_id} cannot be changed so: {why}")


class EnrolmentRefused(ServiceError):
    """An enrolment code that is unknown, already used or too late: the answer does not say
    which, so that codes cannot be probed."""

    def __init__(self) -> None:
        super().__init__("this enrolment code is unknown, already used or expired: ask for a new one")


class DeviceRevoked(Unauthenticated):
    """A device key that was its device's once: the device was revoked, or its key rolled."""

    def __init__(self) -> None:
        ServiceError.__init__(self, "this device's key was revoked or replaced: enrol the device again")
        self.token_given = True


class WebhookNotFound(ServiceError):
    def __init__(self, webhook_id: str) -> None:
        super().__init__(f"no webhook {webhook_id}")


class DeliveryNotFound(ServiceError):
    def __init__(self, webhook_id: str, delivery_id: str) -> None:
        super().__init__(f"webhook {webhook_id} has no delivery {delivery_id}")


class WebhookTargetRefused(ServiceError):
    """A webhook URL that deliveries may not go to: not http(s), or a name that resolves to an
    address the service does not send to (loopback, private, its own) unless allowed."""


class CodesDuplicated(ServiceError):
    """An import naming a code twice, or a code the event already has from another import:
    nothing was imported. Each duplicate: its index in the call, its code, where the other is
    ("call" or "stored") and, when stored, that ticket's id."""

    def __init__(self, duplicates: list[dict[str, object]]) -> None:
        super().__init__(f"{len(duplicates)} code(s) would be in two tickets; nothing was imported")
        self.duplicates = duplicates
