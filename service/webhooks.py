"""Webhooks: what a subscription is, which changes it is sent, what a delivery's body is,
when a failed delivery is tried again, and which addresses may receive one.

Deliveries follow the Standard Webhooks specification (standardwebhooks.com): the headers
`webhook-id` (the delivery's id, the same on every attempt), `webhook-timestamp` and
`webhook-signature` (`v1,` HMAC-SHA256 of `<id>.<timestamp>.<body>` with each secret), and a
body `{type, timestamp, data}`.

Must change together: WebhookType and TYPE_OF_CHANGE, the `webhooks` section of
api/openapi.yaml and docs/webhooks.md; a delivery's record here, store/webhooks.py and
lua/deliver_*.lua.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import random
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .models import Change, ChangeType

SECRET_PREFIX = "whsec_"
# 32 random bytes: the specification asks for 24 to 64.
SECRET_BYTES = 32
DELIVERY_ID_PREFIX = "msg_"
# What an attempt's record keeps of the answer's body.
ANSWER_EXCERPT_BYTES = 256
# The attempts a delivery's log keeps: its first ones and its last ones.
LOG_ATTEMPTS = 24


class WebhookType(StrEnum):
    TICKET_ISSUED = "ticket.issued"
    TICKET_INVALIDATED = "ticket.invalidated"
    TICKET_VALIDATED = "ticket.validated"
    TICKET_REVOKED = "ticket.revoked"
    TICKET_REFUSED = "ticket.refused"
    TICKET_REMOVED = "ticket.removed"
    CHECKIN_SCANNED = "checkin.scanned"
    CHECKIN_REFUSED = "checkin.refused"
    CHECKIN_ANNULLED = "checkin.annulled"
    CHECKIN_CONFLICT = "checkin.conflict"


TYPE_OF_CHANGE: dict[ChangeType, WebhookType] = {
    ChangeType.CREATED: WebhookType.TICKET_ISSUED,
    ChangeType.INVALIDATED: WebhookType.TICKET_INVALIDATED,
    ChangeType.VALIDATED: WebhookType.TICKET_VALIDATED,
    ChangeType.REVOKED: WebhookType.TICKET_REVOKED,
    # A transition the ticket's state refused (a used ticket invalidated again: what fraud
    # checks look for); the change's own type says which.
    ChangeType.INVALIDATE_REFUSED: WebhookType.TICKET_REFUSED,
    ChangeType.VALIDATE_REFUSED: WebhookType.TICKET_REFUSED,
    ChangeType.REVOKE_REFUSED: WebhookType.TICKET_REFUSED,
    # An imported ticket never scanned, removed with its source.
    ChangeType.REMOVED: WebhookType.TICKET_REMOVED,
    ChangeType.CHECKIN: WebhookType.CHECKIN_SCANNED,
    ChangeType.CHECKIN_REFUSED: WebhookType.CHECKIN_REFUSED,
    ChangeType.CHECKIN_ANNULLED: WebhookType.CHECKIN_ANNULLED,
    ChangeType.CHECKIN_CONFLICT: WebhookType.CHECKIN_CONFLICT,
}


class WebhookState(StrEnum):
    ACTIVE = "active"
    # By an endpoint's 410, or by deliveries that failed for WEBHOOK_RETRY_FOR_S.
    DISABLED = "disabled"


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    # Given up: its retries ran out, or its endpoint answered 410.
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Webhook:
    id: str
    url: str
    types: tuple[WebhookType, ...]  # empty: every type
    event: str | None
    description: str
    state: WebhookState
    created_at: float
    disabled_reason: str | None = None
    # The secrets that sign its deliveries, newest first: two for a grace period after a roll.
    secrets: tuple[str, ...] = ()
    secret_rolled_at: float | None = None

    def wants(self, change: Change) -> bool:
        """Whether this change is one of its types, of its event, and made after it was."""
        if self.types and TYPE_OF_CHANGE[change.type] not in self.types:
            return False
        # A scan is its list's event's (a refused scan may name another event's ticket, or none).
        of_event = change.list[:8] if change.list else change.ticket_id[:8]
        if self.event is not None and of_event != self.event:
            return False
        return change.timestamp >= self.created_at

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "url": self.url, "types": [t.value for t in self.types], "event": self.event,
                "description": self.description, "state": self.state.value, "created_at": self.created_at,
                "disabled_reason": self.disabled_reason, "secret_rolled_at": self.secret_rolled_at}


@dataclass(frozen=True, slots=True)
class Attempt:
    at: float
    # The endpoint's status; None when no answer came (refused, timed out, not allowed).
    status: int | None
    duration_ms: float
    error: str | None = None
    answer: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "status": self.status, "duration_ms": self.duration_ms, "error": self.error,
                "answer": self.answer}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Attempt:
        return cls(raw["at"], raw.get("status"), raw.get("duration_ms", 0.0), raw.get("error"), raw.get("answer"))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One change to send to one webhook, until it is delivered or given up."""

    id: str
    webhook_id: str
    type: WebhookType
    change_id: str
    created_at: float
    body: str
    state: DeliveryState = DeliveryState.PENDING
    attempts: int = 0
    next_at: float | None = None
    log: tuple[Attempt, ...] = ()

    def record(self) -> str:
        """As store/webhooks.py keeps it (lua/deliver_*.lua update its state fields)."""
        return json.dumps({"id": self.id, "webhook": self.webhook_id, "type": self.type.value,
                           "change": self.change_id, "created_ms": round(self.created_at * 1000),
                           "body": self.body, "state": self.state.value, "attempts": self.attempts,
                           "next_ms": round((self.next_at or self.created_at) * 1000), "log": []},
                          separators=(",", ":"))

    @classmethod
    def from_record(cls, raw: str | bytes) -> Delivery:
        r = json.loads(raw)
        # Redis's cjson writes an empty list as {}.
        log = r.get("log") or []
        return cls(r["id"], r["webhook"], WebhookType(r["type"]), r["change"], r["created_ms"] / 1000, r["body"],
                   DeliveryState(r["state"]), int(r["attempts"]),
                   r["next_ms"] / 1000 if r["state"] == DeliveryState.PENDING else None,
                   tuple(Attempt.from_json(a) for a in (log if isinstance(log, list) else [])))

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "webhook": self.webhook_id, "type": self.type.value, "change": self.change_id,
                "created_at": self.created_at, "state": self.state.value, "attempts": self.attempts,
                "next_attempt_at": self.next_at, "log": [a.to_json() for a in self.log]}


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def delivery_of(webhook: Webhook, shard: str, change: Change) -> Delivery:
    """A change's delivery to a webhook: its id is the same however often the change is
    read again (a processor killed before it acknowledged), so a receiver sees one id."""
    named = f"{webhook.id}\n{shard}\n{change.id}".encode()
    delivery_id = DELIVERY_ID_PREFIX + hashlib.sha256(named).hexdigest()[:26]
    kind = TYPE_OF_CHANGE[change.type]
    at = dt.datetime.fromtimestamp(change.timestamp, dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    body = json.dumps({"type": kind.value, "timestamp": at, "data": change.to_json()}, separators=(",", ":"))
    return Delivery(delivery_id, webhook.id, kind, change.id, change.timestamp, body)


def retry_delay_s(failed_attempts: int, first_s: float, cap_s: float, rng: random.Random | None = None) -> float:
    """Exponential back-off with jitter: the n-th retry waits between half and all of
    first_s * 2^(n-1), at most cap_s; so the first comes within first_s of the failure."""
    ceiling = min(cap_s, first_s * 2 ** max(0, failed_attempts - 1))
    return float(ceiling / 2 + (rng or random).random() * ceiling / 2)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class TargetPolicy:
    """Which addresses a delivery may connect to: public ones, except the service's own, and
    whatever the operator allows (WEBHOOK_ALLOWED_NETWORKS). Checked on the address a
    connection is made to, so that a name that resolves to another address later (DNS
    rebinding) gains nothing."""

    allowed: tuple[Network, ...] = ()
    own: frozenset[Address] = frozenset()

    @classmethod
    def of(cls, allowed_networks: Sequence[str], own: Iterable[str] = ()) -> TargetPolicy:
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in allowed_networks if n.strip()),
                   frozenset(ipaddress.ip_address(a) for a in own))

    @classmethod
    def here(cls, allowed_networks: Sequence[str]) -> TargetPolicy:
        """The policy of this host: its own addresses refused, read now."""
        return cls.of(allowed_networks, own_addresses())

    def refusal(self, host: str) -> str | None:
        """Why a delivery may not connect to this address; None if it may."""
        address = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in network for network in self.allowed):
            return None
        if address in self.own:
            return f"{address} is this service's own address"
        if not address.is_global or address.is_multicast:
            return f"{address} is not a public address"
        return None


def own_addresses(proc: Path = Path("/proc/net")) -> set[str]:
    """This host's addresses, from the kernel's tables (Linux): the IPv4 addresses its routes
    call local and its interfaces' IPv6 ones. Empty where there are none to read."""
    found: set[str] = set()
    try:
        lines = (proc / "fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for before, line in zip(lines, lines[1:], strict=False):
        if "/32 host LOCAL" in line:
            found.add(before.strip().split()[-1])
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    return found
