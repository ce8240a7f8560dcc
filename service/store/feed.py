"""Reading across shards: the paginated ticket list and the change feed, with cursors that
the service signs, so that a cursor it did not issue is refused before it reaches Redis."""

from __future__ import annotations

import base64
import binascii
import heapq
import hmac
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, takewhile
from typing import Any, TypeVar

from ..errors import BadCursor, FeedCursorExpired
from ..models import (
    STATES_BY_CODE,
    Change,
    EventInfo,
    FeedCursor,
    ImportedCode,
    PageCursor,
    Ticket,
    TicketState,
    code_digest,
    event_of,
    is_event_id,
    parse_ticket_id,
)
from . import keys
from .adaptors import NO_ARGV, Argv, FeedArgv, FeedKeys, Keys, ReadManyKeys, ScanArgv, ScanKeys
from .entries import change_of, entry_changes, first_change_key, stream_id_key
from .link import Link
from .scripts import Script
from .secret import DeploymentSecret
from .tickets import EVENT_FIELDS, TICKET_FIELDS, event_from, ticket_from

# SSCAN's COUNT for listing. Part of the cursor's meaning: changing it between the pages of
# one walk can skip ids, so it is a constant, not a setting.
_SCAN_COUNT = 128
_MAC_BYTES = 12
_U64 = 2**64
_SCAN_RE = re.compile(r"^[0-9]{1,20}$")
_ENTRY_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page:
    tickets: list[Ticket]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class EventPage:
    events: list[EventInfo]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class FeedPage:
    changes: list[Change]
    next_cursor: str


@dataclass(frozen=True, slots=True)
class BookEntry:
    """What an offline gate must know of one ticket of its event, for its list."""

    ticket_id: str
    state: TicketState
    plain_used: bool  # used by the seed's plain invalidate: refused at every single-entry list
    used_at_us: int | None  # its first admission at the list
    inside: bool  # inside the list's area now
    # An imported ticket: a gate knows its code only from here (no signed token carries it).
    imported: ImportedCode | None = None


@dataclass(frozen=True, slots=True)
class BookPage:
    entries: list[BookEntry]
    # Where the event's change feed takes over from the tickets read: a position taken before
    # the first page was read, so that no change made meanwhile is missed.
    changes_after: str
    next_cursor: str | None


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Feed:
    def __init__(self, link: Link, secret: DeploymentSecret) -> None:
        self._link, self._secret = link, secret

    # Cursors: base64url(payload) "." base64url(MAC), the MAC keyed by the deployment secret.
    async def _sign(self, kind: str, payload: bytes) -> str:
        mac = await self._secret.mac(f"cursor:{kind}", payload.decode("latin-1"))
        return f"{_b64(payload)}.{_b64(mac[:_MAC_BYTES])}"

    async def _verify_bytes(self, kind: str, token: str) -> bytes | None:
        body, dot, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(body), _unb64(mac_text)
        except (ValueError, binascii.Error):
            return None
        expected = (await self._secret.mac(f"cursor:{kind}", payload.decode("latin-1")))[:_MAC_BYTES]
        return payload if dot and hmac.compare_digest(mac, expected) else None

    async def _verify(self, kind: str, token: str) -> str | None:
        payload = await self._verify_bytes(kind, token)
        try:
            return None if payload is None else payload.decode("ascii")
        except UnicodeDecodeError:
            return None

    async def page_cursor(self, token: str, kind: str = "page") -> PageCursor:
        """The listing position in a cursor this service issued for `kind`; BadCursor otherwise."""
        payload = await self._verify(kind, token)
        parts = payload.split(".", 2) if payload else []
        if len(parts) != 3:
            raise BadCursor("cursor")
        shard_s, scan_s, after = parts
        item_ok = is_event_id if kind == "events" else (lambda a: parse_ticket_id(a) == a)
        if not (shard_s.isascii() and shard_s.isdigit() and int(shard_s) < len(keys.SHARDS)
                and _SCAN_RE.fullmatch(scan_s) and int(scan_s) < _U64
                and (after == "" or item_ok(after))):
            raise BadCursor("cursor")
        return PageCursor(shard=int(shard_s), scan=int(scan_s), after=after)

    async def feed_cursor(self, token: str) -> FeedCursor:
        """The feed position in a cursor this service issued; BadCursor otherwise."""
        payload = await self._verify_bytes("feed", token)
        positions = None if payload is None else _unpack_positions(payload, len(keys.SHARDS))
        if positions is None:
            raise BadCursor("after")
        return FeedCursor(positions)

    async def list_page(self, cursor: str | None, limit: int) -> Page:
        """Up to `limit` tickets from `cursor` (one this service issued) on, and the cursor
        of the rest (None at the end). Walks the shards in order: per shard touched, one
        script call finds the ids and one reads them, both with every key in KEYS."""
        tickets, nxt = await self._walk("page", keys.index, self._read, cursor, limit)
        return Page(tickets, nxt)

    async def event_page(self, cursor: str | None, limit: int) -> EventPage:
        """Up to `limit` events, walked like the tickets (each shard's event index)."""
        events, nxt = await self._walk("events", keys.event_index, self._read_events, cursor, limit)
        return EventPage(events, nxt)

    async def _walk(
        self, kind: str, index: Callable[[str], str], read: Callable[[Sequence[list[str]]], Awaitable[list[T]]],
        cursor: str | None, limit: int,
    ) -> tuple[list[T], str | None]:
        """Shards in order. A round scans the next `span` shards at once (one round trip per
        node) and takes them while they fit the page; `span` doubles while the page is not
        full, so a page over many sparse shards costs a few round trips, not one a shard, and
        a dense shard wastes at most what one round asked of the shards after it."""
        at: PageCursor | None = PageCursor(shard=0, scan=0, after="") if cursor is None \
            else await self.page_cursor(cursor, kind)
        items: list[T] = []
        span = 1
        while at is not None and len(items) < limit:
            room = limit - len(items)
            at, groups = await self._scan_round(index, at, room, span)
            items.extend(await read(groups))
            span = min(span * 2, len(keys.SHARDS))
        if at is None:
            return items, None
        return items, await self._sign(kind, f"{at.shard}.{at.scan}.{at.after}".encode())

    async def _scan_round(
        self, index: Callable[[str], str], at: PageCursor, room: int, span: int
    ) -> tuple[PageCursor | None, list[list[str]]]:
        """Up to `room` ids from `at` on, over at most `span` shards: (where the walk stands
        after them, None at the end; the ids, a list per shard)."""
        shards = range(at.shard, min(at.shard + span, len(keys.SHARDS)))
        calls: list[tuple[Keys, Argv]] = []
        for shard in shards:
            first = shard == at.shard
            # Enough SSCAN calls to fill the page from a dense set, bounded for a sparse one.
            argv = ScanArgv(at.scan if first else 0, at.after if first else "", room, room // _SCAN_COUNT + 4,
                            _SCAN_COUNT)
            calls.append((ScanKeys(index(keys.SHARDS[shard])), argv))
        groups: list[list[str]] = []
        taken = 0
        now: PageCursor | None = at
        for shard, (scan, after, *ids) in zip(shards, await self._scripts_each("list", self._link.scripts.scan, calls),
                                              strict=True):
            if taken + len(ids) > room:  # a later shard that does not fit: next round starts it again
                return PageCursor(shard=shard, scan=0, after=""), groups
            groups.append(ids)
            taken += len(ids)
            now = _next_cursor(shard, scan, after)
            if now is None or now.shard == shard:  # the end, or a shard left part-way
                return now, groups
        return now, groups

    async def _read(self, groups: Sequence[list[str]]) -> list[Ticket]:
        """The tickets of the ids, one script call per shard (its keys in KEYS, one slot)."""
        calls: list[tuple[Keys, Argv]] = [(ReadManyKeys(tuple(keys.ticket(i) for i in ids)), NO_ARGV)
                                          for ids in groups if ids]
        flats = iter(await self._scripts_each("list_read", self._link.scripts.read_many, calls))
        width = len(TICKET_FIELDS)
        out: list[Ticket] = []
        for ids in (g for g in groups if g):
            flat = next(flats)
            out += [ticket_from(i, flat[width * n: width * n + width]) for n, i in enumerate(ids) if flat[width * n]]
        return out

    async def _scripts_each(
        self, op: str, script: Script, calls: Sequence[tuple[Keys, Argv]]
    ) -> list[Any]:
        """The script once per (keys, args): one call alone, several as one batch (a
        pipeline costs the worker more than a single call; most pages need one)."""
        if len(calls) == 1:
            script_keys, argv = calls[0]
            return [await self._link.run(op, script, script_keys.flat(), argv.flat())]
        batch = self._link.batch()
        for script_keys, argv in calls:
            batch.script(script, script_keys.flat(), argv.flat())
        return await batch.run(self._link.call(op))

    async def _read_events(self, groups: Sequence[list[str]]) -> list[EventInfo]:
        ids = [i for g in groups for i in g]
        batch = self._link.batch()
        for event_id in ids:
            batch.cmd.hmget(keys.event(event_id), EVENT_FIELDS)
        replies = await batch.run(self._link.call("event_read"))
        return [event_from(i, values) for i, values in zip(ids, replies, strict=True) if values[0] is not None]

    async def changes_page(self, after: str | None, limit: int) -> FeedPage:
        """The next `limit` changes after cursor `after` (one this service issued), merged
        across shards in change-id order. Each shard's position moves only past the changes
        returned, so no change is skipped or repeated. Raises FeedCursorExpired if the
        streams were trimmed past the cursor.

        Each shard gives about `per_shard` changes (2 * limit spread over the shards, at
        least 4; whole entries, so a batch entry's may add up to 99): a page costs about
        2 * limit + 4 * shards changes read, not limit * shards. A shard that gave all it was
        asked for may hold more, so the page ends at the earliest last change of such a
        shard: what it returns is in order. A batch entry holds many changes
        (entries.entry_changes); only those a page returns are made."""
        at = FeedCursor.start(len(keys.SHARDS)) if after is None else await self.feed_cursor(after)
        per_shard = max(4, -(-2 * limit // len(keys.SHARDS)))
        calls: list[tuple[Keys, Argv]] = [
            (FeedKeys(keys.stream(shard)), FeedArgv(_start(pos), per_shard))
            for shard, pos in zip(keys.SHARDS, at.positions, strict=True)]
        replies = await self._scripts_each("events", self._link.scripts.feed, calls)
        streams: list[Iterator[_Pending]] = []
        horizon: tuple[tuple[int, int], int] | None = None
        for i, (pos, (have, *raw)) in enumerate(zip(at.positions, replies, strict=True)):
            entries = _entries(raw)
            _check_holds(pos, entries)
            if int(have) >= per_shard:
                last = (stream_id_key(entries[-1][0]), i)
                horizon = last if horizon is None else min(horizon, last)
            streams.append(_events_after(pos, entries, i))
        merged = heapq.merge(*streams)
        taken = list(islice(merged if horizon is None else takewhile(lambda m: (m[0], m[1]) <= horizon, merged),
                            limit))
        positions = list(at.positions)
        for _, i, eid, _ in taken:
            positions[i] = eid
        changes = [change_of(eid, f) for _, _, eid, f in taken]
        return FeedPage(changes, await self._sign("feed", _pack_positions(positions)))

    async def event_changes(self, after: str | None, event_id: str, limit: int) -> FeedPage:
        """The change feed of one event: its tickets, and scans at its lists, all in the
        event's shard, so one XRANGE. The shard also holds other events: their entries are
        read past and left out, so a page may hold fewer than `limit` (even none) while more
        follow; the cursor has moved past the `limit` changes read (fewer at the end), and a
        page that read nothing at all returns the cursor it was given."""
        at = FeedCursor.start(len(keys.SHARDS)) if after is None else await self.feed_cursor(after)
        shard = keys.shard_of(event_id)
        i = keys.SHARD_INDEX[shard]
        pos = at.positions[i]
        _, *raw = await self._link.run("events", self._link.scripts.feed, FeedKeys(keys.stream(shard)).flat(),
                                       FeedArgv(_start(pos), limit).flat())
        entries = _entries(raw)
        _check_holds(pos, entries)
        read = list(islice(_events_after(pos, entries, i), limit))
        positions = list(at.positions)
        if read:
            positions[i] = read[-1][2]
        changes = [change_of(eid, f) for _, _, eid, f in read if _of_event(f, event_id)]
        return FeedPage(changes, await self._sign("feed", _pack_positions(positions)))


    async def book_page(self, event_id: str, list_id: str, cursor: str | None, limit: int) -> BookPage:
        """An offline gate's book of the event, read from the tickets themselves rather than
        the change feed (whose entries a busy shard trims: a gate that built its book from
        what is left would miss the revocations trimmed away): every ticket of the event
        that is revoked, used, or admitted at or inside the list. Pages walk the event's
        shard's index (the shard also holds other events' tickets, read past); each answers
        the feed position to read the event's changes from once the book is read, taken
        before its first page."""
        shard = keys.shard_of(event_id)
        if cursor is None:
            scan, after, tail = 0, "", await self._tail(shard)
        else:
            scan, after, tail = await self._book_cursor(cursor)
        argv = ScanArgv(scan, after, limit, limit // _SCAN_COUNT + 4, _SCAN_COUNT)
        next_scan, resume_after, *ids = await self._link.run(
            "book", self._link.scripts.scan, ScanKeys(keys.index(shard)).flat(), argv.flat())
        positions = ["0-0"] * len(keys.SHARDS)
        positions[keys.SHARD_INDEX[shard]] = tail
        changes_after = await self._sign("feed", _pack_positions(positions))
        entries = await self._book_entries(event_id, [i for i in ids if event_of(i) == event_id], list_id)
        done = next_scan == "0" and not resume_after
        nxt = None if done else await self._sign("book", f"{next_scan}.{resume_after}.{tail}".encode())
        return BookPage(entries, changes_after, nxt)

    async def _tail(self, shard: str) -> str:
        async with self._link.call("book_tail"):
            last = await self._link.redis.xrevrange(keys.stream(shard), count=1)
        return str(last[0][0]) if last else "0-0"

    async def _book_cursor(self, token: str) -> tuple[int, str, str]:
        payload = await self._verify("book", token)
        parts = payload.split(".") if payload else []
        if (len(parts) != 3 or not _SCAN_RE.fullmatch(parts[0]) or int(parts[0]) >= _U64
                or not (parts[1] == "" or parse_ticket_id(parts[1]) == parts[1]) or not _ENTRY_RE.fullmatch(parts[2])):
            raise BadCursor("cursor")
        return int(parts[0]), parts[1], parts[2]

    async def _book_entries(self, event_id: str, ids: Sequence[str], list_id: str) -> list[BookEntry]:
        if not ids:
            return []
        batch = self._link.batch()
        for ticket_id in ids:
            batch.cmd.hmget(keys.ticket(ticket_id), ["valid", "p", f"a:{list_id}", f"in:{list_id}", *_IMPORTED])
        out = []
        for ticket_id, (valid, plain, first, inside, code, *fields) in zip(
                ids, await batch.run(self._link.call("book_read")), strict=True):
            imported = None if code is None else _imported(event_id, code, fields)
            if valid is None or (valid == "1" and not first and inside != "1" and imported is None):
                continue  # gone, or nothing a gate needs: ours, valid and never admitted here
            out.append(BookEntry(ticket_id, STATES_BY_CODE[valid], plain == "1", int(first) if first else None,
                                 inside == "1", imported))
        return out


# What a book reads of an imported ticket (import_codes.lua): its code, type and validity.
_IMPORTED = ("code", "ty", "vf", "vu")


def _imported(event_id: str, code: str, fields: Sequence[str | None]) -> ImportedCode:
    ty, vf, vu = fields
    return ImportedCode(code_digest(event_id, code), ty or None, int(vf) / 1e6 if vf else None,
                        int(vu) / 1e6 if vu else None)


# A change not yet returned: (its sort key, its shard's index, its id, its fields).
_Pending = tuple[tuple[int, int], int, str, Mapping[str, str]]


def _start(pos: str) -> str:
    """Where feed.lua reads a shard from: the position itself, inclusive (its entry's
    presence proves nothing was trimmed), or the start."""
    return "-" if pos == "0-0" else pos


def _entries(raw: Sequence[Any]) -> list[tuple[str, dict[str, str]]]:
    """Entries as a script returns them ([id, [field, value, ...]]) as XRANGE's parsed reply."""
    return [(eid, dict(zip(flat[::2], flat[1::2], strict=True))) for eid, flat in raw]


def _check_holds(pos: str, entries: Sequence[tuple[str, Mapping[str, str]]]) -> None:
    """FeedCursorExpired unless the first entry read holds the position's event: otherwise
    it was trimmed away, entries after it may have gone too (trimming cannot say), and a
    feed that may skip is no feed."""
    if pos == "0-0":
        return
    if not entries or first_change_key(*entries[0]) > stream_id_key(pos):
        raise FeedCursorExpired()


def _events_after(pos: str, entries: Iterable[tuple[str, Mapping[str, str]]], i: int) -> Iterator[_Pending]:
    """The changes of the entries, in order, after position `pos`, made one at a time."""
    after = (-1, -1) if pos == "0-0" else stream_id_key(pos)
    for entry_id, fields in entries:
        for eid, f in entry_changes(entry_id, fields):
            key = stream_id_key(eid)
            if key > after:
                yield key, i, eid, f


def _of_event(fields: Mapping[str, str], event_id: str) -> bool:
    """A change of one of the event's tickets, or a scan at one of its lists."""
    ticket_id, list_id = fields.get("t", ""), fields.get("l", "")
    return (len(ticket_id) == 36 and event_of(ticket_id) == event_id) or list_id[:8] == event_id


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(raw: bytes, at: int) -> tuple[int, int]:
    n = shift = 0
    while at < len(raw) and shift < 70:
        byte = raw[at]
        n |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if not byte & 0x80:
            return n, at
    raise ValueError("bad varint")


def _pack_positions(positions: Sequence[str]) -> bytes:
    """A feed position per shard, small enough for a URL: the newest entry's milliseconds,
    then per shard 0 (the start) or 1 + how many ms older it is, and its sequence number."""
    parsed = [stream_id_key(p) for p in positions]
    newest = max(ms for ms, _ in parsed)
    out = bytearray(_varint(newest))
    for pos, (ms, seq) in zip(positions, parsed, strict=True):
        out += b"\0" if pos == "0-0" else _varint(newest - ms + 1) + _varint(seq)
    return bytes(out)


def _unpack_positions(raw: bytes, shards: int) -> tuple[str, ...] | None:
    try:
        newest, at = _read_varint(raw, 0)
        positions: list[str] = []
        for _ in range(shards):
            older, at = _read_varint(raw, at)
            if older == 0:
                positions.append("0-0")
                continue
            seq, at = _read_varint(raw, at)
            ms = newest - (older - 1)
            if ms < 0 or seq >= _U64 or newest >= _U64:
                return None
            positions.append(f"{ms}-{seq}")
    except ValueError:
        return None
    return tuple(positions) if at == len(raw) else None


def _next_cursor(shard: int, scan: str, after: str) -> PageCursor | None:
    if scan != "0" or after:
        return PageCursor(shard=shard, scan=int(scan), after=after)
    if shard + 1 < len(keys.SHARDS):
        return PageCursor(shard=shard + 1, scan=0, after="")
    return None
