"""Domain types shared by the store and the HTTP layer."""

from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

# Canonical textual UUID of any version: the seed's own examples are uuid1 and must still
# be answered (with 404), while new ids are always uuid4.
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class TicketState(StrEnum):
    VALID = "valid"
    INVALID = "invalid"


class Transition(StrEnum):
    INVALIDATE = "invalidate"
    VALIDATE = "validate"

    @property
    def target(self) -> TicketState:
        return TicketState.INVALID if self is Transition.INVALIDATE else TicketState.VALID


class Ticket(NamedTuple):
    """Immutable like a frozen dataclass, and built several times faster: a page of 100
    tickets builds 100 of them."""

    id: str
    timestamp: float
    state: TicketState

    @property
    def valid(self) -> bool:
        return self.state is TicketState.VALID

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "timestamp": self.timestamp, "valid": self.state is TicketState.VALID}


@dataclass(frozen=True, slots=True)
class IdempotencyKey:
    """A client's Idempotency-Key, scoped to the caller that sent it, with the request it
    was sent on: the operation, its target and its body, canonically. The same key on any
    other request is refused."""

    actor: str
    key: str
    request: str = ""

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.request.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Origin:
    """Who made a request, for the event trail."""

    actor: str = "anonymous"
    request_id: str = ""
    client_ip: str = ""
    # True when nginx gave the request id: only then can the same request arrive twice.
    forwarded: bool = False


class EventType(StrEnum):
    CREATED = "created"
    INVALIDATED = "invalidated"
    VALIDATED = "validated"
    INVALIDATE_REFUSED = "invalidate_refused"
    VALIDATE_REFUSED = "validate_refused"


@dataclass(frozen=True, slots=True)
class Event:
    """One change of a ticket (or refused attempt), as the event stream records it."""

    id: str  # the stream entry id, "<ms>-<seq>"
    ticket_id: str
    type: EventType
    timestamp: float
    actor: str
    request_id: str
    client_ip: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.id, "ticket_id": self.ticket_id, "type": self.type.value,
            "timestamp": self.timestamp, "actor": self.actor, "request_id": self.request_id,
            "client_ip": self.client_ip,
        }

    @classmethod
    def from_fields(cls, entry_id: str, f: dict[str, str]) -> Event:
        return cls(entry_id, f["t"], EventType(f["e"]), int(f["ts"]) / 1e6, f["a"], f["r"], f["ip"])


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def new_ticket_id() -> str:
    """A random, unguessable id: knowing one ticket tells nothing about another."""
    return str(uuid.uuid4())


def parse_ticket_id(raw: str | None) -> str | None:
    """Return the canonical (lower-case) id, or None when `raw` is not a UUID. Surrounding
    white space is not stripped: an id with it is not an id."""
    if raw is None:
        return None
    candidate = raw.lower()
    return candidate if _ID_RE.fullmatch(candidate) else None


@dataclass(frozen=True, slots=True)
class PageCursor:
    """Where a listing walk stands: shard index, SSCAN cursor, and the last id returned
    from the SSCAN batch at that cursor. The feed module signs and checks its text form."""

    shard: int
    scan: int
    after: str


@dataclass(frozen=True, slots=True)
class FeedCursor:
    """Where a change-feed reader stands: the last entry id it has seen in each shard."""

    positions: tuple[str, ...]

    @classmethod
    def start(cls, shard_count: int) -> FeedCursor:
        return cls(("0-0",) * shard_count)
