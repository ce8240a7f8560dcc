"""One typed adaptor per Lua script: its KEYS and its ARGV as named structures, in the order
of the script's header, and (where the reply is more than a word) its reply decoded once.

Must change together: a script's header (`-- KEYS[n] name ...`, `-- ARGV[n] name ...`), its
adaptor here (the same names, in the same order; a tuple field for a `[n..]` tail) and the
store module that fills it. tests/test_lua.py reads every header against its adaptor.

Values go to Redis as they are (str, int): where a script reads '' as "none" or '1' as
"yes", the adaptor's field says so and the caller writes it, so that nothing is guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from .link import Arg


class _Flat:
    """A script's KEYS or ARGV: its fields in order, a tuple's items in place, None left out
    (an optional key at the end)."""

    __slots__ = ()
    __match_args__: ClassVar[tuple[str, ...]]

    def flat(self) -> list[Any]:
        out: list[Any] = []
        for name in self.__match_args__:
            value = getattr(self, name)
            if isinstance(value, tuple):
                out.extend(value)
            elif value is not None:
                out.append(value)
        return out


class Keys(_Flat):
    __slots__ = ()

    def flat(self) -> list[str]:
        return super().flat()


class Argv(_Flat):
    __slots__ = ()

    def flat(self) -> list[Arg]:
        return super().flat()


def _us(value: str | int | None) -> int | None:
    return int(value) if value not in (None, "") else None


# --- create.lua ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CreateKeys(Keys):
    ticket: str
    index: str
    stats: str
    stream: str
    optional: tuple[str, ...]  # the claim and the event's hash, where claim_at/event_at say


@dataclass(frozen=True, slots=True)
class CreateArgv(Argv):
    ticket_id: str
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    fingerprint: str  # '' without a claim
    ttl_s: int
    claim_at: int  # 1-based position in KEYS, 0 for none
    event_at: int
    fields: tuple[Arg, ...]  # name, value pairs


class CreateReply(NamedTuple):
    outcome: str  # 'created', 'replayed', 'mismatch', 'no_event', 'sold_out'
    ticket_id: str
    replayed: bool
    values: list[Any]  # the ticket's TICKET_FIELDS

    @classmethod
    def of(cls, raw: list[Any]) -> CreateReply:
        outcome, ticket_id, replayed, *values = raw
        return cls(outcome, ticket_id, bool(replayed), values)


# --- batch.lua -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class BatchKeys(Keys):
    index: str
    stats: str
    stream: str
    batches: str
    event: str | None
    tickets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class BatchArgv(Argv):
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    has_event: str  # '1' or '0'
    first: int
    kinds: int
    per_kind: tuple[Arg, ...]  # 5 values a kind
    per_ticket: tuple[Arg, ...]  # id and kind, a ticket


class BatchReply(NamedTuple):
    outcome: str  # 'created', 'replayed', 'no_event', 'sold_out'
    replayed: bool
    flat: list[Any]  # one creation time, or (ts, valid) per ticket

    @classmethod
    def of(cls, raw: list[Any]) -> BatchReply:
        outcome, replayed, *flat = raw
        return cls(outcome, bool(replayed), flat)


# --- import_codes.lua ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ImportKeys(Keys):
    index: str
    stats: str
    stream: str
    event: str
    source: str
    tickets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ImportArgv(Argv):
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    source: str
    mark: str
    kinds: int
    per_kind: tuple[Arg, ...]  # 5 values a kind
    per_ticket: tuple[Arg, ...]  # id, code, code digest and kind, a ticket


class ImportReply(NamedTuple):
    outcome: str  # 'imported', 'duplicate', 'no_event', 'sold_out'
    replayed: bool
    flat: list[Any]  # (ts, valid) per ticket; for 'duplicate', the 1-based positions

    @classmethod
    def of(cls, raw: list[Any]) -> ImportReply:
        outcome, *rest = raw
        if outcome == "imported":
            return cls(outcome, bool(rest[0]), rest[1:])
        return cls(outcome, False, rest)


# --- withdraw.lua ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class WithdrawArgv(Argv):
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    source: str
    ids: tuple[Arg, ...]


class WithdrawReply(NamedTuple):
    removed: int
    kept: list[tuple[str, str]]  # (ticket id, code) of each ticket kept: it was scanned

    @classmethod
    def of(cls, raw: list[Any]) -> WithdrawReply:
        removed, *flat = raw
        return cls(int(removed), list(zip(flat[::2], flat[1::2], strict=True)))


# --- transition.lua --------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class TransitionKeys(Keys):
    ticket: str
    record: str
    stats: str
    stream: str


@dataclass(frozen=True, slots=True)
class TransitionArgv(Argv):
    target: str  # the `valid` code after
    ttl_s: int
    transition: str
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    ticket_id: str
    reason: str


class TransitionReply(NamedTuple):
    outcome: str  # 'ok', 'conflict', 'missing', 'mismatch'
    replayed: bool
    values: list[Any]

    @classmethod
    def of(cls, raw: list[Any]) -> TransitionReply:
        outcome, replayed, *values = raw
        return cls(outcome, bool(replayed), values)


# --- claim.lua -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ClaimKeys(Keys):
    claim: str


@dataclass(frozen=True, slots=True)
class ClaimArgv(Argv):
    fingerprint: str
    ttl_s: int


# --- event.lua -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class EventKeys(Keys):
    event: str
    event_index: str


@dataclass(frozen=True, slots=True)
class EventArgv(Argv):
    event_id: str
    name: str
    starts_at: int | str  # µs, '' for none
    ends_at: int | str
    capacity: int | str  # '' for no limit
    mark: str


# --- list.lua --------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ListKeys(Keys):
    event: str
    list: str
    list_index: str
    left: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ListArgv(Argv):
    list_id: str
    name: str
    types: str
    reentry: str  # '1' or '0'
    capacity: int | str
    leaves: str
    mark: str
    left: tuple[str, ...]


# --- checkin.lua -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CheckinKeys(Keys):
    list: str
    event: str
    stats: str
    stream: str
    record: str
    ticket: str | None  # None: a ticket of another event, or a refusal decided before Redis
    left: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CheckinArgv(Argv):
    list_id: str
    direction: str
    scanned_at: int | str  # µs, '' for none
    actor: str
    request_id: str
    client_ip: str
    events_maxlen: int
    ticket_id: str
    ttl_s: int
    refusal: str  # '' for none
    offline: str  # '1' or ''
    offline_max_age_us: int


class CheckinReply(NamedTuple):
    admitted: bool
    replayed: bool
    reason: str  # a Refusal's value, 'no_list', or ''
    inside: int
    used_at_us: int | None
    used_list: str | None
    values: list[Any]  # the ticket's TICKET_FIELDS, or nothing

    @classmethod
    def of(cls, raw: list[Any]) -> CheckinReply:
        admitted, reason, *rest = raw
        inside, used_at, used_list, *values = rest or (0, None, None)  # {0, 'no_list'}: no such list
        text = str(admitted)
        return cls(text.removeprefix("replayed:") == "1", text.startswith("replayed:"), reason or "",
                   int(inside), _us(used_at), used_list or None, values)


# --- annul.lua -------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class AnnulKeys(Keys):
    list: str
    stats: str
    stream: str
    ticket: str
    left: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AnnulArgv(Argv):
    list_id: str
    actor: str
    window_us: int
    request_id: str
    client_ip: str
    events_maxlen: int
    ticket_id: str
    left: tuple[str, ...]


class AnnulReply(NamedTuple):
    outcome: str  # 'annulled', 'nothing', 'too_late', 'superseded', 'area_full'
    inside: int

    @classmethod
    def of(cls, raw: list[Any]) -> AnnulReply:
        outcome, inside = raw
        return cls(outcome, int(inside))


# --- process.lua -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ProcessKeys(Keys):
    processed: str
    stream: str
    unowned: str
    device_scans: str
    tail: tuple[str, ...]  # the histories and the scan logs the changes name by position


@dataclass(frozen=True, slots=True)
class ProcessArgv(Argv):
    group: str
    m: int
    entry_ids: tuple[str, ...]
    per_change: tuple[Arg, ...]  # 6 a change: id, type, fields, history's position, device, scan log's position


# --- scan.lua, read_many.lua, feed.lua, history.lua ------------------------------------

@dataclass(frozen=True, slots=True)
class ScanKeys(Keys):
    index: str


@dataclass(frozen=True, slots=True)
class ScanArgv(Argv):
    cursor: int | str
    after: str
    limit: int
    max_batches: int
    scan_count: int


@dataclass(frozen=True, slots=True)
class ReadManyKeys(Keys):
    tickets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FeedKeys(Keys):
    stream: str


@dataclass(frozen=True, slots=True)
class FeedArgv(Argv):
    start: str
    want: int


@dataclass(frozen=True, slots=True)
class HistoryKeys(Keys):
    ticket: str
    history: str


# --- device.lua, enrol.lua, device_state.lua ---------------------------------------------

@dataclass(frozen=True, slots=True)
class DeviceKeys(Keys):
    device: str
    index: str


@dataclass(frozen=True, slots=True)
class DeviceArgv(Argv):
    device_id: str
    name: str
    role: str
    event: str  # '' for none
    lists: str  # comma-separated, '' for all
    direction: str  # '' for either
    enrol_digest: str
    enrol_ttl_us: int
    mark: str


@dataclass(frozen=True, slots=True)
class EnrolKeys(Keys):
    device: str


@dataclass(frozen=True, slots=True)
class EnrolArgv(Argv):
    enrol_digest: str
    key_digest: str
    software: str
    hardware: str


@dataclass(frozen=True, slots=True)
class DeviceStateKeys(Keys):
    device: str
    generation: str


@dataclass(frozen=True, slots=True)
class DeviceStateArgv(Argv):
    action: str  # 'roll' or 'revoke'
    key_digest: str


@dataclass(frozen=True, slots=True)
class SeenKeys(Keys):
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SeenArgv(Argv):
    seen_us: tuple[int, ...]


# --- webhook.lua, webhook_state.lua, deliver_*.lua -----------------------------------------

@dataclass(frozen=True, slots=True)
class WebhookKeys(Keys):
    webhook: str
    index: str
    generation: str


@dataclass(frozen=True, slots=True)
class WebhookArgv(Argv):
    webhook_id: str
    url: str
    types: str  # comma-separated, '' for every type
    event: str  # '' for every event
    description: str
    secret: str
    mark: str  # '' for none


@dataclass(frozen=True, slots=True)
class WebhookStateArgv(Argv):
    webhook_id: str
    action: str  # 'roll', 'disable', 'enable' or 'delete'
    value: str
    grace_us: int


@dataclass(frozen=True, slots=True)
class EnqueueKeys(Keys):
    queue: str
    records: str
    log: str


@dataclass(frozen=True, slots=True)
class EnqueueArgv(Argv):
    keep_ms: int
    deliveries: tuple[Arg, ...]  # per delivery: id, created_ms, record


@dataclass(frozen=True, slots=True)
class DeliveryKeys(Keys):
    queue: str
    records: str


@dataclass(frozen=True, slots=True)
class ClaimDueArgv(Argv):
    limit: int
    lease_ms: int


@dataclass(frozen=True, slots=True)
class SettleArgv(Argv):
    delivery_id: str
    outcome: str  # 'delivered', 'failed' or 'retry'
    retry_in_ms: int
    attempt: str
    log_attempts: int


@dataclass(frozen=True, slots=True)
class RetryArgv(Argv):
    delivery_id: str


@dataclass(frozen=True, slots=True)
class NoArgv(Argv):
    pass


NO_ARGV = NoArgv()

# Each script's adaptor, by the script's name: the header test walks this.
ADAPTORS: dict[str, tuple[type[Keys], type[Argv]]] = {
    "create": (CreateKeys, CreateArgv), "batch": (BatchKeys, BatchArgv),
    "import_codes": (ImportKeys, ImportArgv), "withdraw": (ImportKeys, WithdrawArgv),
    "transition": (TransitionKeys, TransitionArgv), "claim": (ClaimKeys, ClaimArgv),
    "event": (EventKeys, EventArgv), "list": (ListKeys, ListArgv), "checkin": (CheckinKeys, CheckinArgv),
    "annul": (AnnulKeys, AnnulArgv), "process": (ProcessKeys, ProcessArgv), "scan": (ScanKeys, ScanArgv),
    "read_many": (ReadManyKeys, NoArgv), "feed": (FeedKeys, FeedArgv), "history": (HistoryKeys, NoArgv),
    "device": (DeviceKeys, DeviceArgv), "enrol": (EnrolKeys, EnrolArgv),
    "device_state": (DeviceStateKeys, DeviceStateArgv), "seen": (SeenKeys, SeenArgv),
    "webhook": (WebhookKeys, WebhookArgv), "webhook_state": (WebhookKeys, WebhookStateArgv),
    "deliver_enqueue": (EnqueueKeys, EnqueueArgv), "deliver_claim": (DeliveryKeys, ClaimDueArgv),
    "deliver_settle": (DeliveryKeys, SettleArgv), "deliver_retry": (DeliveryKeys, RetryArgv),
}
