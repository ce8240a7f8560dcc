"""Domain types shared by the store and the HTTP layer."""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

# Canonical textual UUID of any version: the seed's own examples are uuid1 and must still
# be answered (with 404), while new ids are always uuid4.
_ID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


# The event of every ticket issued without one, and of every ticket made before events.
DEFAULT_EVENT = "default"
# The actor of every request while auth is off (no API_KEYS).
ANONYMOUS = "anonymous"
_EVENT_ID_RE = re.compile(r"[0-9a-f]{8}")


class TicketState(StrEnum):
    """A ticket's state; its value is the ticket's `status` in the API. "used" is the seed's
    invalid; "revoked" (refunded, cancelled) is refused for ever."""

    VALID = "valid"
    INVALID = "used"
    REVOKED = "revoked"


# How each state is stored in the ticket hash's `valid` field (the seed's '1' and '0').
STATE_CODES = {TicketState.VALID: "1", TicketState.INVALID: "0", TicketState.REVOKED: "r"}
STATES_BY_CODE = {code: state for state, code in STATE_CODES.items()}


class Transition(StrEnum):
    INVALIDATE = "invalidate"
    VALIDATE = "validate"
    REVOKE = "revoke"

    @property
    def target(self) -> TicketState:
        return _TARGETS[self]


_TARGETS = {Transition.INVALIDATE: TicketState.INVALID, Transition.VALIDATE: TicketState.VALID,
            Transition.REVOKE: TicketState.REVOKED}


def event_of(ticket_id: str) -> str:
    """A ticket's event, from its id: an event's tickets are UUIDv8 whose first 8 hex digits
    are the event id; a uuid4 (or any older id) belongs to the default event."""
    return ticket_id[:8] if ticket_id[14] == "8" else DEFAULT_EVENT


def is_event_id(text: str) -> bool:
    return bool(_EVENT_ID_RE.fullmatch(text))


class Ticket(NamedTuple):
    """Immutable like a frozen dataclass, and built several times faster: a page of 100
    tickets builds 100 of them. Times are seconds since the epoch."""

    id: str
    timestamp: float
    state: TicketState
    type: str | None = None
    holder: str | None = None
    seat: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    # An imported ticket's source and outside code (POST /event/{id}/import); None for ours.
    source: str | None = None
    code: str | None = None

    @property
    def valid(self) -> bool:
        return self.state is TicketState.VALID

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id, "timestamp": self.timestamp, "valid": self.state is TicketState.VALID,
            "event": event_of(self.id), "type": self.type, "holder": self.holder, "seat": self.seat,
            "valid_from": self.valid_from, "valid_until": self.valid_until, "status": self.state.value,
        }
        if self.source is not None:
            out["source"], out["code"] = self.source, self.code
        return out


@dataclass(frozen=True, slots=True)
class TicketSpec:
    """What the box office asks for: all optional; validated by the HTTP layer."""

    event: str = DEFAULT_EVENT
    type: str | None = None
    holder: str | None = None
    seat: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None


@dataclass(frozen=True, slots=True)
class EventSpec:
    name: str
    starts_at: float | None = None
    ends_at: float | None = None
    capacity: int | None = None


@dataclass(frozen=True, slots=True)
class ListSpec:
    name: str
    types: tuple[str, ...] = ()
    reentry: bool = False
    capacity: int | None = None
    leaves: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ListInfo:
    """A check-in list with its live occupancy and its totals, refusals by reason."""

    id: str
    event: str
    spec: ListSpec
    inside: int = 0
    admitted: int = 0
    exits: int = 0
    refused: dict[str, int] | None = None
    # Offline admissions that the list refused when they were uploaded.
    conflicts: int = 0

    def to_json(self) -> dict[str, Any]:
        s = self.spec
        return {"id": self.id, "event": self.event, "name": s.name, "types": list(s.types) or None,
                "reentry": s.reentry, "capacity": s.capacity, "leaves": list(s.leaves), "inside": self.inside,
                "admitted": self.admitted, "exits": self.exits,
                "refused": {r.value: (self.refused or {}).get(r.value, 0) for r in Refusal},
                "conflicts": self.conflicts}


@dataclass(frozen=True, slots=True)
class CheckinResult:
    admitted: bool
    reason: Refusal | None
    ticket: Ticket | None
    list: str
    direction: Direction
    inside: int
    used_at: float | None = None
    used_list: str | None = None
    # An offline admission that this list refused when it was uploaded: the holder is in.
    conflict: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"admitted": self.admitted, "reason": self.reason.value if self.reason else None,
                "message": self.reason.message if self.reason else "Admitted.",
                "ticket": self.ticket.to_json() if self.ticket else None, "list": self.list,
                "direction": self.direction.value, "inside": self.inside,
                "used_at": self.used_at, "used_list": self.used_list, "conflict": self.conflict}


@dataclass(frozen=True, slots=True)
class EventInfo:
    """An event as the API shows it; `issued` counts its tickets, exactly."""

    id: str
    name: str
    starts_at: float | None
    ends_at: float | None
    capacity: int | None
    issued: int

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "starts_at": self.starts_at, "ends_at": self.ends_at,
                "capacity": self.capacity, "issued": self.issued}


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
    """Who made a request, for the trail of changes."""

    actor: str = ANONYMOUS
    request_id: str = ""
    client_ip: str = ""
    # True when nginx gave the request id: only then can the same request arrive twice.
    forwarded: bool = False
    # What the request asks, canonically: its operation, target and body.
    request: str = ""

    @property
    def replay_id(self) -> str:
        """What a write's stored answer, and any id derived from the request, are keyed by:
        the request id *and* what the request asks. The same X-Request-Id on another request
        (another list, another direction, another body, another event) is another request,
        never answered with the first one's answer nor given ids that share its bits."""
        return f"{self.request_id}\n{self.request}"


class ChangeType(StrEnum):
    CREATED = "created"
    INVALIDATED = "invalidated"
    VALIDATED = "validated"
    REVOKED = "revoked"
    INVALIDATE_REFUSED = "invalidate_refused"
    VALIDATE_REFUSED = "validate_refused"
    REVOKE_REFUSED = "revoke_refused"
    CHECKIN = "checkin"
    CHECKIN_REFUSED = "checkin_refused"
    CHECKIN_ANNULLED = "checkin_annulled"
    # An offline device admitted the holder, and the scan, uploaded later, was refused.
    CHECKIN_CONFLICT = "checkin_conflict"
    # An imported ticket never scanned, removed with its source (DELETE /event/{id}/import/{source}).
    REMOVED = "removed"


class Direction(StrEnum):
    ENTRY = "entry"
    EXIT = "exit"


class Refusal(StrEnum):
    """Why a gate refused a scan: exactly these codes, each with the sentence a steward reads.

    Must change together: the sentences below and web/gate/book.js (MESSAGES, the same
    sentences offline); a new code, service/lua/checkin.lua (decide_entry), book.js (decide)
    and tests/cases/checkin.json, whose cases run against both."""

    UNKNOWN_TICKET = "unknown_ticket"
    WRONG_EVENT = "wrong_event"
    TYPE_NOT_ALLOWED = "type_not_allowed"
    TOO_EARLY = "too_early"
    EXPIRED = "expired"
    REVOKED = "revoked"
    ALREADY_USED = "already_used"
    ALREADY_INSIDE = "already_inside"
    NOT_INSIDE = "not_inside"
    AREA_FULL = "area_full"
    # The ticket's token (its QR code) did not verify: a copy altered, or a forgery.
    MALFORMED_TOKEN = "malformed_token"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"

    @property
    def message(self) -> str:
        return _REFUSAL_MESSAGES[self]


_REFUSAL_MESSAGES = {
    Refusal.UNKNOWN_TICKET: "No such ticket.",
    Refusal.WRONG_EVENT: "This ticket is for another event.",
    Refusal.TYPE_NOT_ALLOWED: "This ticket's type is not admitted here.",
    Refusal.TOO_EARLY: "This ticket is not valid yet.",
    Refusal.EXPIRED: "This ticket is no longer valid.",
    Refusal.REVOKED: "This ticket was cancelled or refunded.",
    Refusal.ALREADY_USED: "This ticket was already used.",
    Refusal.ALREADY_INSIDE: "This ticket is already inside.",
    Refusal.NOT_INSIDE: "This ticket did not enter here.",
    Refusal.AREA_FULL: "This area is full.",
    Refusal.MALFORMED_TOKEN: "This code is not a ticket of this service.",
    Refusal.UNKNOWN_KEY: "This ticket was signed by a key this service does not know.",
    Refusal.BAD_SIGNATURE: "This ticket's signature does not match: it was altered or forged.",
}

@dataclass(frozen=True, slots=True)
class Change:
    """One change of a ticket (or refused attempt), as its shard's stream records it."""

    id: str  # its stream id, "<ms>-<seq>": its entry's, or one of a batch entry's (store/entries.py)
    ticket_id: str
    type: ChangeType
    timestamp: float
    actor: str
    request_id: str
    client_ip: str
    reason: str | None = None
    list: str | None = None
    direction: str | None = None
    # When an offline device scanned it, if it said.
    scanned_at: float | None = None
    # The device had admitted the holder offline before it uploaded the scan.
    offline: bool = False
    # An imported ticket's creation: what a gate needs to judge its code offline.
    imported: ImportedCode | None = None
    # The source of an imported ticket's creation or removal.
    source: str | None = None

    def to_json(self) -> dict[str, Any]:
        device = device_of(self.actor)
        return {
            "event_id": self.id, "ticket_id": self.ticket_id, "type": self.type.value,
            "timestamp": self.timestamp, "actor": self.actor, "request_id": self.request_id,
            "client_ip": self.client_ip, "reason": self.reason, "list": self.list,
            "direction": self.direction, "scanned_at": self.scanned_at, "offline": self.offline,
            "device": None if device is None else {"id": device[0], "name": device[1]},
            "source": self.source, "imported": None if self.imported is None else self.imported.to_json(),
        }


@dataclass(frozen=True, slots=True)
class ImportedCode:
    """What a gate must know of an imported ticket to judge its code offline, as no signed
    token carries it: the code's digest (never the code), the ticket's type and validity."""

    code_digest: str
    type: str | None = None
    valid_from: float | None = None
    valid_until: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"code_digest": self.code_digest, "type": self.type, "valid_from": self.valid_from,
                "valid_until": self.valid_until}


def code_digest(event: str, code: str) -> str:
    """How a gate's book names an imported code without holding it: SHA-256 of the event id, a
    newline and the code, its first 128 bits in hex. Must change together: web/gate/book.js
    (codeDigest) computes the same."""
    return hashlib.sha256(f"{event}\n{code}".encode()).hexdigest()[:32]


def device_of(actor: str) -> tuple[str, str] | None:
    """The (id, name) of the device an actor is (`<name>#<id>`, Device.actor); None for an API
    key's, whose names hold no '#' (api_keys._NAME_RE)."""
    name, sep, device_id = actor.rpartition("#")
    return (device_id, name) if sep and name and device_id else None


def new_ticket_id(event: str = DEFAULT_EVENT, random16: bytes | bytearray | None = None) -> str:
    """A random, unguessable id: knowing one ticket tells nothing about another. A ticket of
    an event is a UUIDv8 (RFC 9562) whose first 8 hex digits are the event id, so that its
    event (and so its shard) is known from the id alone; 90 bits stay random. `random16`
    gives the random bytes (a keyed hash, for ids derived from a request)."""
    raw = bytearray(random16 or os.urandom(16))
    raw[8] = (raw[8] & 0x3F) | 0x80  # the RFC's variant
    if event == DEFAULT_EVENT:
        raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    else:
        raw[:4] = bytes.fromhex(event)
        raw[6] = (raw[6] & 0x0F) | 0x80  # version 8
    h = raw.hex()  # str(uuid.UUID(bytes=raw)), at a third of the cost (a batch makes 1,000)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_VARIANT = bytes((b & 0x3F) | 0x80 for b in range(256))  # byte 8 of each id, through bytes.translate
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))  # byte 6
_VERSION_8 = bytes((b & 0x0F) | 0x80 for b in range(256))


def new_ticket_ids(event: str, random: bytes | bytearray) -> list[str]:
    """new_ticket_id for each 16 bytes of `random`, for a batch: the bits are set in every id
    at once (a slice of every 16th byte) and the bytes turned to hex once, at 0.8 against 1.4
    (default event) and 2.0 us an id."""
    raw = bytearray(random)
    n = len(raw) // 16
    raw[8::16] = raw[8::16].translate(_VARIANT)
    if event == DEFAULT_EVENT:
        raw[6::16] = raw[6::16].translate(_VERSION_4)
    else:
        raw[6::16] = raw[6::16].translate(_VERSION_8)
        for at, byte in enumerate(bytes.fromhex(event)):
            raw[at::16] = bytes((byte,)) * n
    h = raw.hex()
    return [f"{h[i:i + 8]}-{h[i + 8:i + 12]}-{h[i + 12:i + 16]}-{h[i + 16:i + 20]}-{h[i + 20:i + 32]}"
            for i in range(0, 32 * n, 32)]


def new_event_id() -> str:
    return uuid.uuid4().hex[:8]


_LIST_ID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}")


def new_list_id(event: str) -> str:
    """A check-in list's id names its event: `<event id>-<4 hex digits>`."""
    return f"{event}-{uuid.uuid4().hex[:4]}"


def is_list_id(text: str) -> bool:
    return bool(_LIST_ID_RE.fullmatch(text))


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


class DeviceState(StrEnum):
    """A device's life: made and waiting for its enrolment code, enrolled, or revoked for good."""

    PENDING = "pending"
    ACTIVE = "active"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class Device:
    """A phone or scanner with a key of its own, its role and its bindings."""

    id: str
    name: str
    role: str  # an api_keys.Role's value
    event: str | None
    lists: tuple[str, ...]
    direction: Direction | None
    state: DeviceState
    created_at: float
    enrolled_at: float | None = None
    last_seen: float | None = None
    software: str | None = None
    hardware: str | None = None

    @property
    def actor(self) -> str:
        """Its name in histories, logs and budgets: readable, and unique by its id."""
        return f"{self.name}#{self.id}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "role": self.role, "event": self.event, "lists": list(self.lists),
                "direction": self.direction.value if self.direction else None, "state": self.state.value,
                "created_at": self.created_at, "enrolled_at": self.enrolled_at, "last_seen": self.last_seen,
                "software": self.software, "hardware": self.hardware}
