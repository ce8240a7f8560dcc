"""A change entry in a shard's stream (`events:{s}`): its field names, written down once, and
its decoding for the consumer, the feed and a ticket's history.

Must change together: the Lua scripts that append entries (create.lua, batch.lua,
import_codes.lua, withdraw.lua, transition.lua, checkin.lua, annul.lua: each names these
fields in its XADD), feed.lua (which
reads `ids` first), `Field` below and `change_of`. `tests/test_lua.py` checks that every field a
script appends is one of `Field`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from enum import StrEnum

from ..models import Change, ChangeType, ImportedCode


class Field(StrEnum):
    """The field names of a change entry: short, because every change is stored with them."""

    TICKET = "t"  # the ticket id (absent from a batch entry, which has IDS)
    TYPE = "e"  # the ChangeType: the stored name predates the word "change"
    TIMESTAMP_US = "ts"  # when Redis recorded it, µs since the epoch
    ACTOR = "a"
    REQUEST_ID = "r"
    CLIENT_IP = "ip"
    REASON = "why"  # a refusal's Refusal, or an invalidation's reason
    LIST = "l"
    DIRECTION = "d"
    SCANNED_AT_US = "at"  # when an offline device scanned it, µs
    OFFLINE = "off"  # "1": the device had admitted the holder offline
    IDS = "ids"  # a batch entry: its tickets' ids, comma-separated, one `created` each
    # An imported ticket's creation (import_codes.lua) or removal (withdraw.lua):
    SOURCE = "src"
    CODE_DIGEST = "cd"  # models.code_digest of its code
    TICKET_TYPE = "ty"
    VALID_FROM_US = "vf"
    VALID_UNTIL_US = "vu"


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """Sort key of a stream entry id."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_size(fields: Mapping[str, str]) -> int:
    """How many changes a stream entry holds: one, or a batch entry's tickets (`ids`)."""
    ids = fields.get(Field.IDS)
    return 1 if ids is None else ids.count(",") + 1


def first_change_key(entry_id: str, fields: Mapping[str, str]) -> tuple[int, int]:
    """Sort key of the first change of an entry: a batch entry of n tickets holds the n
    consecutive ids that end at its own (batch.lua)."""
    ms, seq = stream_id_key(entry_id)
    return ms, seq - entry_size(fields) + 1


def entry_changes(entry_id: str, fields: Mapping[str, str]) -> Iterator[tuple[str, Mapping[str, str]]]:
    """The changes of one stream entry, each (change id, fields): the entry itself, or each
    ticket of a batch entry as its own `created`, in order, under its own id."""
    ids = fields.get(Field.IDS)
    if ids is None:
        yield entry_id, fields
        return
    ms, seq = first_change_key(entry_id, fields)
    common = {k: v for k, v in fields.items() if k != Field.IDS}
    for n, ticket_id in enumerate(ids.split(",")):
        yield f"{ms}-{seq + n}", {Field.TICKET.value: ticket_id, **common}


def change_of(entry_id: str, f: Mapping[str, str]) -> Change:
    """The Change one entry (or one ticket of a batch entry) records."""
    at = f.get(Field.SCANNED_AT_US)
    return Change(
        entry_id, f[Field.TICKET], ChangeType(f[Field.TYPE]), int(f[Field.TIMESTAMP_US]) / 1e6,
        f[Field.ACTOR], f[Field.REQUEST_ID], f[Field.CLIENT_IP], f.get(Field.REASON), f.get(Field.LIST),
        f.get(Field.DIRECTION), int(at) / 1e6 if at else None, f.get(Field.OFFLINE) == "1",
        _imported(f), f.get(Field.SOURCE),
    )


def _imported(f: Mapping[str, str]) -> ImportedCode | None:
    digest = f.get(Field.CODE_DIGEST)
    if digest is None:
        return None
    vf, vu = f.get(Field.VALID_FROM_US), f.get(Field.VALID_UNTIL_US)
    return ImportedCode(digest, f.get(Field.TICKET_TYPE), int(vf) / 1e6 if vf else None, int(vu) / 1e6 if vu else None)
