"""Every Redis key the service uses, spelled in one place.

A ticket's shard is the first hex digit of its id (uuid4 spreads them evenly), and the shard
is the hash tag: all keys of one ticket, and the per-shard index, counters and stream that its
scripts touch, share one Redis Cluster slot.
"""

from __future__ import annotations

import hashlib

SHARDS: tuple[str, ...] = tuple("0123456789abcdef")
# The tickets processor's consumer group on every shard's stream.
PROCESSOR_GROUP = "processor"
# The deployment's shared secret (ticket ids derived from request ids, signed cursors).
DEPLOYMENT_SECRET_KEY = "config:ticket-id-key"


def digest(*parts: str) -> str:
    """A fixed-length name for caller-given text (any length, any character)."""
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


def shard_of(ticket_id: str) -> str:
    return ticket_id[0]


def ticket_prefix(shard: str) -> str:
    return f"tkt:{{{shard}}}:"


def ticket(ticket_id: str) -> str:
    return ticket_prefix(shard_of(ticket_id)) + ticket_id


def index(shard: str) -> str:
    return f"tickets:{{{shard}}}"


def stats(shard: str) -> str:
    return f"stats:{{{shard}}}"


def stream(shard: str) -> str:
    return f"events:{{{shard}}}"


def shard_of_stream(stream_key: str) -> str:
    return stream_key[stream_key.index("{") + 1]


def history(ticket_id: str) -> str:
    return f"history:{{{shard_of(ticket_id)}}}:{ticket_id}"


def processed(shard: str) -> str:
    return f"processed:{{{shard}}}"


def replay(ticket_id: str, actor: str, request_id: str, shard: str | None = None) -> str:
    """A write's first answer under nginx's request id, scoped to the caller too: a request
    id alone, if it ever leaked, must not hand one caller another's answer. In the ticket's
    shard, unless told (a scan of another event's ticket is answered in the list's)."""
    return f"replay:{{{shard or shard_of(ticket_id)}}}:{ticket_id}:{digest(actor, request_id)}"


def idempotency_shard(actor: str, key: str) -> str:
    return digest(actor, key)[0]


def idempotency(actor: str, key: str) -> str:
    """The claim of a caller's Idempotency-Key: which request first used it (and, for a
    create, its answer). One per caller and key, whatever the request."""
    return f"idem:{{{idempotency_shard(actor, key)}}}:{digest(actor, key)}"


def idempotency_answer(actor: str, key: str, ticket_id: str, shard: str | None = None) -> str:
    """A write's first answer under an Idempotency-Key, in the ticket's slot (unless told)."""
    return f"idem:{{{shard or shard_of(ticket_id)}}}:{digest(actor, key, ticket_id)}:answer"


def event(event_id: str) -> str:
    """An event lives in the shard of its id's first hex digit, with all of its tickets."""
    return f"evt:{{{event_id[0]}}}:{event_id}"


def event_index(shard: str) -> str:
    return f"evts:{{{shard}}}"


def check_in_list(list_id: str) -> str:
    """A list id is its event's id, a dash and 4 hex digits: it lives with its event."""
    return f"lst:{{{list_id[0]}}}:{list_id}"


def list_index(event_id: str) -> str:
    return f"lsts:{{{event_id[0]}}}:{event_id}"
