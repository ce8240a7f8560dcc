"""API keys and roles: the operators' keys parsed from API_KEYS, compared in constant time,
and the credentials of devices enrolled at run time (a device key, an enrolment code)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MIN_SECRET_CHARS = 16
_EVENT_RE = re.compile(r"^[0-9a-f]{8}$")


class Role(StrEnum):
    ISSUER = "issuer"
    SCANNER = "scanner"
    # Watches doors: reads events, lists, stats, devices and the live view; writes nothing.
    SUPERVISOR = "supervisor"
    ADMIN = "admin"


class Permission(StrEnum):
    CREATE = "create"
    READ = "read"
    INVALIDATE = "invalidate"
    VALIDATE = "validate"
    LIST = "list"
    HISTORY = "history"
    STATS = "stats"
    EVENTS = "events"
    REVOKE = "revoke"
    CHECKIN = "checkin"
    MANAGE_LISTS = "manage_lists"
    READ_EVENT = "read_event"
    MANAGE_EVENTS = "manage_events"
    # A ticket's signed token and QR code: what a box office prints, never a gate's need.
    PRINT = "print"
    # Make, list, roll and revoke devices: an admin's alone.
    MANAGE_DEVICES = "manage_devices"
    # Register, read, roll and delete webhooks, read and retry their deliveries: an admin's.
    MANAGE_WEBHOOKS = "manage_webhooks"
    # Every scan of an event, exported (GET /event/{id}/scans): an admin's.
    EXPORT = "export"
    # Tickets sold elsewhere, imported into an event and removed by source: a box office's too.
    IMPORT = "import"
    # Read the devices (GET /device, /device/{id}): an admin's and a supervisor's.
    READ_DEVICES = "read_devices"
    # The live view of an event (GET /event/{id}/live): a supervisor's and an admin's.
    LIVE = "live"


ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.ISSUER: frozenset({Permission.CREATE, Permission.READ, Permission.REVOKE, Permission.READ_EVENT,
                            Permission.PRINT, Permission.IMPORT}),
    Role.SCANNER: frozenset({Permission.READ, Permission.INVALIDATE, Permission.HISTORY, Permission.READ_EVENT,
                             Permission.CHECKIN}),
    Role.SUPERVISOR: frozenset({Permission.READ_EVENT, Permission.STATS, Permission.READ_DEVICES, Permission.LIVE}),
    Role.ADMIN: frozenset(Permission),
}


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A configured key. Only the secret's SHA-256 is kept, so no repr or log can leak it."""

    name: str
    role: Role
    digest: bytes
    # A scanner key may be bound to one event: it scans that event's tickets only; a
    # supervisor's watches that event only.
    event: str | None = None


@dataclass(frozen=True, slots=True)
class ApiKeys:
    keys: tuple[ApiKey, ...] = ()

    @property
    def enabled(self) -> bool:
        return bool(self.keys)

    @classmethod
    def parse(cls, text: str) -> ApiKeys:
        """Parse `name:role:secret` entries separated by commas or newlines."""
        keys = [_parse_entry(e.strip()) for e in re.split(r"[,\n]", text) if e.strip()]
        names = [k.name for k in keys]
        if len(set(names)) != len(names):
            raise ValueError("API_KEYS: key names must be unique")
        if len({k.digest for k in keys}) != len(keys):
            raise ValueError("API_KEYS: two keys share a secret")
        return cls(tuple(keys))

    def authenticate(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, compared in constant time over every key."""
        presented = _digest(secret)
        found = None
        for key in self.keys:
            if hmac.compare_digest(presented, key.digest):
                found = key
        return found


def _parse_entry(entry: str) -> ApiKey:
    """`name:role:secret`, or `name:scanner:secret:<event id>` for a scanner (or a supervisor)
    bound to one event (8 hex digits; a secret may hold colons, so the event is the last part)."""
    parts = entry.split(":", 2)
    if len(parts) != 3:
        raise ValueError("API_KEYS: each entry is name:role:secret")
    name, role, secret = parts
    event = None
    head, _, last = secret.rpartition(":")
    if role in (Role.SCANNER.value, Role.SUPERVISOR.value) and head and _EVENT_RE.fullmatch(last):
        secret, event = head, last
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"API_KEYS: bad key name {name!r}")
    if role not in {r.value for r in Role}:
        raise ValueError(f"API_KEYS: key {name!r} has unknown role {role!r}")
    if len(secret) < _MIN_SECRET_CHARS or any(c.isspace() for c in secret):
        raise ValueError(f"API_KEYS: key {name!r} needs a secret of {_MIN_SECRET_CHARS}+ non-blank characters")
    return ApiKey(name=name, role=Role(role), digest=_digest(secret), event=event)


def describe(keys: Iterable[ApiKey]) -> str:
    """For the startup log: names and roles, never secrets."""
    return ", ".join(f"{k.name} ({k.role.value}{', event ' + k.event if k.event else ''})" for k in keys) or "none"


# A device's credentials name the device they belong to, so that a replica finds it with one
# read, and carry 256 random bits; only their SHA-256 is stored. `tkd_` a key, `tke_` a code.
DEVICE_KEY_PREFIX = "tkd_"
ENROLMENT_PREFIX = "tke_"
_DEVICE_ID_RE = re.compile(r"^[0-9a-f]{16}$")
_CREDENTIAL_RE = re.compile(r"^(tkd_|tke_)([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


def new_device_id() -> str:
    return secrets.token_hex(8)


def is_device_id(text: str) -> bool:
    return bool(_DEVICE_ID_RE.fullmatch(text))


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """A device key or enrolment code as presented: the device it names, and its digest."""

    device_id: str
    digest: str

    @classmethod
    def new(cls, prefix: str, device_id: str) -> tuple[str, DeviceCredential]:
        text = f"{prefix}{device_id}.{secrets.token_urlsafe(32)}"
        return text, cls(device_id, credential_digest(text))

    @classmethod
    def parse(cls, prefix: str, text: str) -> DeviceCredential | None:
        match = _CREDENTIAL_RE.fullmatch(text)
        if match is None or match.group(1) != prefix:
            return None
        return cls(match.group(2), credential_digest(text))


def credential_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
