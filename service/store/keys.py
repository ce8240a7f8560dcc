"""Every Redis key the service uses, spelled in one place.

A ticket's shard is the top 6 bits of its id's first byte (uuid4 spreads them evenly; an
event's tickets share the event's), and the shard's tag is the key's hash tag: all keys of one
ticket, and the per-shard index, counters and stream that its scripts touch, share one Redis
Cluster slot.

There are 64 shards. Each tag was chosen so that its slot lies at the centre of its 64th of
the 16384 slots, in shard order: a Cluster whose masters own equal runs of slots (what
`redis-cli --cluster create` and `rebalance` make) gets shards spread as evenly as 64 divides,
with one to 64 masters useful (bench/ measures the spread). `tests/test_store.py` checks every
tag's slot. Changing this table moves every key: see `service/store/migrate.py`.
"""

from __future__ import annotations

import hashlib

SHARDS: tuple[str, ...] = (
    "mm", "6q", "9i", "e8", "29", "21", "ap", "ax", "0j", "kv", "dn", "df", "3g", "o6", "gc", "xw",
    "8g", "d6", "lc", "02", "g3", "4c", "on", "4r", "99", "91", "1d", "m5", "fm", "yy", "2i", "iu",
    "7a", "k0", "ce", "8y", "4l", "op", "x9", "x1", "jf", "1z", "zj", "b3", "ik", "2w", "yg", "fs",
    "bk", "9w", "6o", "ms", "af", "an", "5b", "i3", "c5", "dp", "kh", "0t", "xi", "xa", "he", "44",
)
SHARD_INDEX: dict[str, int] = {tag: i for i, tag in enumerate(SHARDS)}
# How many bits of the first byte pick the shard: 64 shards, the byte's top 6 bits.
_SHARD_SHIFT = 2
# The tickets processor's consumer group on every shard's stream.
PROCESSOR_GROUP = "processor"
# The deployment's shared secret (ticket ids derived from request ids, signed cursors).
DEPLOYMENT_SECRET_KEY = "config:ticket-id-key"


def digest(*parts: str) -> str:
    """A fixed-length name for caller-given text (any length, any character)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def shard_of(ticket_id: str) -> str:
    """The shard of an id whose first two characters are hex: a ticket, an event, a list, a
    digest."""
    return SHARDS[int(ticket_id[:2], 16) >> _SHARD_SHIFT]


def in_shard(ticket_id: str, shard: str) -> str:
    """The same id with its first byte moved into `shard` (its low bits kept)."""
    low = int(ticket_id[:2], 16) & ((1 << _SHARD_SHIFT) - 1)
    return f"{SHARD_INDEX[shard] << _SHARD_SHIFT | low:02x}" + ticket_id[2:]


def place_in_shard(raw: bytearray, shard: str, stride: int) -> None:
    """in_shard for ids still in bytes: the first byte of every `stride` bytes moved into
    `shard` (its low bits kept), before they are formatted."""
    top, low_mask = SHARD_INDEX[shard] << _SHARD_SHIFT, (1 << _SHARD_SHIFT) - 1
    for at in range(0, len(raw), stride):
        raw[at] = top | (raw[at] & low_mask)


# A ticket hash's key kind. One letter: its key, `t:{<shard>}:<36-character id>`, is 43
# characters and fits a smaller allocation than the 45 of the former `tkt:`, 16 bytes a ticket
# (`make bench-memory`); service/store/migrate.py renames keys of the former prefix.
TICKET = "t"


def ticket_prefix(shard: str) -> str:
    return f"{TICKET}:{{{shard}}}:"


def ticket(ticket_id: str) -> str:
    return ticket_prefix(shard_of(ticket_id)) + ticket_id


def index(shard: str) -> str:
    return f"tickets:{{{shard}}}"


def stats(shard: str) -> str:
    return f"stats:{{{shard}}}"


def stream(shard: str) -> str:
    return f"events:{{{shard}}}"


def batches(shard: str) -> str:
    """The shard's stream entries that hold a batch's tickets, oldest first, with how many
    changes each holds beyond one: the stream's cap counts changes (batch.lua)."""
    return f"batches:{{{shard}}}"


def shard_of_stream(stream_key: str) -> str:
    return stream_key[stream_key.index("{") + 1: stream_key.index("}")]


def unowned(shard: str) -> str:
    """Entry ids of the shard's stream whose ticket has no history in the shard."""
    return f"unowned:{{{shard}}}"


def ready_probe(shard: str) -> str:
    """What /readyz writes (and lets expire) to learn that a write on the shard's master
    would succeed now."""
    return f"ready:{{{shard}}}"


def history(ticket_id: str) -> str:
    return history_prefix(shard_of(ticket_id)) + ticket_id


def history_prefix(shard: str) -> str:
    return f"history:{{{shard}}}:"


def first_bytes(shard: str) -> frozenset[str]:
    """The first two characters of every id of the shard."""
    top = SHARD_INDEX[shard] << _SHARD_SHIFT
    return frozenset(f"{top | low:02x}" for low in range(1 << _SHARD_SHIFT))


def processed(shard: str) -> str:
    return f"processed:{{{shard}}}"


def replay(ticket_id: str, actor: str, replay_id: str, shard: str | None = None) -> str:
    """A write's first answer under nginx's request id and what the request asks
    (Origin.replay_id), scoped to the caller too: a request id alone, if it ever leaked, must
    not hand one caller another's answer. In the ticket's shard, unless told (a scan of
    another event's ticket is answered in the list's)."""
    return f"replay:{{{shard or shard_of(ticket_id)}}}:{ticket_id}:{digest(actor, replay_id)}"


def idempotency_shard(actor: str, key: str) -> str:
    return shard_of(digest(actor, key))


def idempotency(actor: str, key: str) -> str:
    """The claim of a caller's Idempotency-Key: which request first used it (and, for a
    create, its answer). One per caller and key, whatever the request."""
    return f"idem:{{{idempotency_shard(actor, key)}}}:{digest(actor, key)}"


def idempotency_answer(actor: str, key: str, ticket_id: str, shard: str | None = None) -> str:
    """A write's first answer under an Idempotency-Key, in the ticket's slot (unless told)."""
    return f"idem:{{{shard or shard_of(ticket_id)}}}:{digest(actor, key, ticket_id)}:answer"


def event(event_id: str) -> str:
    """An event lives in the shard of its id, with all of its tickets."""
    return f"evt:{{{shard_of(event_id)}}}:{event_id}"


def event_index(shard: str) -> str:
    return f"evts:{{{shard}}}"


def check_in_list(list_id: str) -> str:
    """A list id is its event's id, a dash and 4 hex digits: it lives with its event."""
    return f"lst:{{{shard_of(list_id)}}}:{list_id}"


def list_index(event_id: str) -> str:
    return f"lsts:{{{shard_of(event_id)}}}:{event_id}"


def imported(event_id: str, source: str) -> str:
    """The ids of the tickets a source imported into the event (a set), with the event's
    tickets. A source's name is letters, digits, '.', '_' and '-' (bodies.SourceName)."""
    return f"imp:{{{shard_of(event_id)}}}:{event_id}:{source}"


def scan_log(event_id: str) -> str:
    """Every scan at the event's lists, as the tickets processor recorded it (never trimmed:
    GET /event/{id}/scans exports it)."""
    return f"scans:{{{shard_of(event_id)}}}:{event_id}"


def device_scans(shard: str) -> str:
    """The processor's count of the shard's scans by device and outcome (`<device id>:<type>`)."""
    return f"devscans:{{{shard}}}"


# Devices: few (a venue's phones and scanners), read by every replica, changed rarely. They
# share one slot, so that a device and the generation its changes move are one script's.
DEVICES_TAG = "devices"


def device(device_id: str) -> str:
    return f"dev:{{{DEVICES_TAG}}}:{device_id}"


def device_index() -> str:
    return f"devs:{{{DEVICES_TAG}}}"


def device_generation() -> str:
    """Moved on at every roll and revocation: replicas drop their cached devices when it moves."""
    return f"devgen:{{{DEVICES_TAG}}}"


# Webhooks: few, read by the tickets processor, changed rarely; one slot, with the generation
# every change moves on (the processor reloads them when it moves).
WEBHOOKS_TAG = "webhooks"


def webhook(webhook_id: str) -> str:
    return f"wh:{{{WEBHOOKS_TAG}}}:{webhook_id}"


def webhook_index() -> str:
    return f"whs:{{{WEBHOOKS_TAG}}}"


def webhook_generation() -> str:
    return f"whgen:{{{WEBHOOKS_TAG}}}"


# A webhook's deliveries live in a slot of their own ({wh-<id>}): one busy or failing endpoint's
# queue is one script's, and another endpoint's never waits behind it.
def delivery_queue(webhook_id: str) -> str:
    """Its pending deliveries, scored by when each is next due (ms)."""
    return f"whq:{{wh-{webhook_id}}}"


def delivery_records(webhook_id: str) -> str:
    """Its deliveries, delivery id -> record (webhooks.Delivery.record)."""
    return f"whd:{{wh-{webhook_id}}}"


def delivery_log(webhook_id: str) -> str:
    """Its deliveries by when they were made (ms): the log's order, and what ages out."""
    return f"whl:{{wh-{webhook_id}}}"
