"""The request bodies of the API, declared once with their bounds and decoded by msgspec
(pinned in requirements.txt: a maintained decoder that validates while it parses, in C, and
names the offending member in its error). Anything outside these bounds is a 400."""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from ..signing import MAX_TOKEN_CHARS

# Seconds since the epoch, as the seed's `timestamp`: from 1970 to the year 2242.
Seconds = Annotated[float, msgspec.Meta(ge=0, lt=2**33, description="seconds since the epoch")]
# Printable text: no control characters (they would break logs, CSV exports and receipts).
_PRINTABLE = r"^[^\x00-\x1f\x7f]+$"
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
Holder = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
Seat = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=_PRINTABLE)]
TypeName = Annotated[str, msgspec.Meta(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9._-]+$")]
EventRef = Annotated[str, msgspec.Meta(pattern=r"^([0-9a-f]{8}|default)$")]
Reason = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_PRINTABLE)]
Capacity = Annotated[int, msgspec.Meta(ge=1, le=10_000_000)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]").search


def _printable(*texts: str | None) -> None:
    # The patterns say so too, but a regex's `$` also matches before a final newline.
    for text in texts:
        if text is not None and _CONTROL(text):
            raise ValueError("text must not hold control characters")


def _window(start: float | None, end: float | None, names: tuple[str, str]) -> None:
    if start is not None and end is not None and start >= end:
        raise ValueError(f"{names[0]} must come before {names[1]}")


class TicketBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    event: EventRef = "default"
    type: TypeName | None = None
    holder: Holder | None = None
    seat: Seat | None = None
    valid_from: Seconds | None = None
    valid_until: Seconds | None = None

    def __post_init__(self) -> None:
        _printable(self.holder, self.seat)
        _window(self.valid_from, self.valid_until, ("valid_from", "valid_until"))


class EventBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name
    starts_at: Seconds | None = None
    ends_at: Seconds | None = None
    capacity: Capacity | None = None

    def __post_init__(self) -> None:
        _printable(self.name)
        _window(self.starts_at, self.ends_at, ("starts_at", "ends_at"))


class RevokeBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    reason: Reason | None = None

    def __post_init__(self) -> None:
        _printable(self.reason)


ListRef = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}$")]
# Printable, and neither beginning nor ending with a space: a code is matched exactly, and a
# space a scanner or a spreadsheet added would make another code.
_CODE = r"^[^\x00-\x20\x7f]([^\x00-\x1f\x7f]*[^\x00-\x20\x7f])?$"
# A ticket's id, the signed token of its QR code (service/signing.py), or an imported code.
TicketRef = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOKEN_CHARS, pattern=_CODE)]
# An outside barcode's text, as an import gives it and a gate scans it.
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=_CODE)]
# Who sold the imported tickets: a short name, part of a key (store/keys.imported).
SourceName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
SOURCE_NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ListBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: Name
    types: Annotated[list[TypeName], msgspec.Meta(min_length=1, max_length=50)] | None = None
    reentry: bool = False
    capacity: Capacity | None = None
    leaves: Annotated[list[ListRef], msgspec.Meta(max_length=20)] = []

    def __post_init__(self) -> None:
        _printable(self.name)


class CheckinBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    ticket: TicketRef
    list: ListRef
    direction: Literal["entry", "exit"] = "entry"
    scanned_at: Seconds | None = None
    # The device admitted the holder while offline and uploads the scan now (with
    # scanned_at): a refusal then is a conflict, recorded as such.
    offline: bool = False

    def __post_init__(self) -> None:
        if self.offline and self.scanned_at is None:
            raise ValueError("an offline scan says when it was scanned: scanned_at")


class AnnulBody(msgspec.Struct, forbid_unknown_fields=True):
    ticket: TicketRef
    list: ListRef


class CodeBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    code: Code
    type: TypeName | None = None
    holder: Holder | None = None
    seat: Seat | None = None
    valid_from: Seconds | None = None
    valid_until: Seconds | None = None

    def __post_init__(self) -> None:
        _printable(self.code, self.holder, self.seat)
        _window(self.valid_from, self.valid_until, ("valid_from", "valid_until"))


class ImportBody(msgspec.Struct, forbid_unknown_fields=True):
    source: SourceName
    codes: Annotated[list[CodeBody], msgspec.Meta(min_length=1, max_length=1000)]


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    # Each item is decoded on its own (as a TicketBody), so that the answer names every bad one.
    tickets: Annotated[list[msgspec.Raw], msgspec.Meta(min_length=1, max_length=1000)]


DeviceName = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=_PRINTABLE)]
# What a device says it runs on: shown to admins, never trusted.
Platform = Annotated[str, msgspec.Meta(min_length=1, max_length=120, pattern=_PRINTABLE)]


class DeviceBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    name: DeviceName
    role: Literal["scanner", "issuer", "admin"]
    event: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8}$")] | None = None
    lists: Annotated[list[ListRef], msgspec.Meta(min_length=1, max_length=20)] | None = None
    direction: Literal["entry", "exit"] | None = None

    def __post_init__(self) -> None:
        _printable(self.name)
        if self.lists and (self.event is None or any(not lst.startswith(self.event) for lst in self.lists)):
            raise ValueError("lists must be lists of the device's event, which it names")
        if self.role != "scanner" and (self.lists or self.direction):
            raise ValueError("only a scanner is bound to lists or a direction")


class EnrolBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    software: Platform | None = None
    hardware: Platform | None = None

    def __post_init__(self) -> None:
        _printable(self.software, self.hardware)


WebhookTypeName = Literal["ticket.issued", "ticket.invalidated", "ticket.validated", "ticket.revoked", "ticket.refused",
                          "ticket.removed", "checkin.scanned", "checkin.refused", "checkin.annulled",
                          "checkin.conflict"]


class WebhookBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    url: Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://[\x21-\x7e]+$")]
    types: Annotated[list[WebhookTypeName], msgspec.Meta(min_length=1, max_length=20)] | None = None
    event: Annotated[str, msgspec.Meta(pattern=r"^[0-9a-f]{8}$")] | None = None
    description: Annotated[str, msgspec.Meta(max_length=500, pattern=_PRINTABLE)] | None = None
