"""Reading across shards: the paginated ticket list and the change feed, with cursors that
the service signs, so that a cursor it did not issue is refused before it reaches Redis."""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from ..errors import BadCursor, FeedCursorExpired, StoreUnavailable
from ..models import Event, EventInfo, FeedCursor, PageCursor, Ticket, is_event_id, parse_ticket_id, stream_id_key
from . import keys
from .calls import Caller
from .scripts import Scripts
from .secret import DeploymentSecret
from .tickets import EVENT_FIELDS, TICKET_FIELDS, event_from, ticket_from

# SSCAN's COUNT for listing. Part of the cursor's meaning: changing it between the pages of
# one walk can skip ids, so it is a constant, not a setting.
_SCAN_COUNT = 128
_MAC_BYTES = 12
_U64 = 2**64
_STREAM_ID_RE = re.compile(r"^[0-9]{1,20}-[0-9]{1,20}$")
_SCAN_RE = re.compile(r"^[0-9]{1,20}$")
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
    events: list[Event]
    next_cursor: str


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Feed:
    def __init__(self, redis: Redis, caller: Caller, scripts: Scripts, secret: DeploymentSecret) -> None:
        self.redis, self._caller, self._scripts, self._secret = redis, caller, scripts, secret

    # Cursors: base64url(payload) "." base64url(MAC), the MAC keyed by the deployment secret.
    async def _sign(self, kind: str, payload: str) -> str:
        mac = await self._secret.mac(f"cursor:{kind}", payload)
        return f"{_b64(payload.encode())}.{_b64(mac[:_MAC_BYTES])}"

    async def _verify(self, kind: str, token: str) -> str | None:
        body, dot, mac_text = token.partition(".")
        try:
            payload, mac = _unb64(body).decode("ascii"), _unb64(mac_text)
        except (ValueError, binascii.Error, UnicodeDecodeError):
            return None
        expected = (await self._secret.mac(f"cursor:{kind}", payload))[:_MAC_BYTES]
        return payload if dot and hmac.compare_digest(mac, expected) else None

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
        payload = await self._verify("feed", token)
        parts = payload.split(",") if payload else []
        if len(parts) != len(keys.SHARDS) or not all(_valid_stream_id(p) for p in parts):
            raise BadCursor("after")
        return FeedCursor(tuple(parts))

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
        self, kind: str, index: Callable[[str], str], read: Callable[[Sequence[str]], Awaitable[list[T]]],
        cursor: str | None, limit: int,
    ) -> tuple[list[T], str | None]:
        at = PageCursor(shard=0, scan=0, after="") if cursor is None else await self.page_cursor(cursor, kind)
        items: list[T] = []
        while len(items) < limit:
            shard = keys.SHARDS[at.shard]
            room = limit - len(items)
            # Enough SSCAN calls to fill the page from a dense set, bounded for a sparse one.
            max_batches = room // _SCAN_COUNT + 4
            args: list[str | int] = [at.scan, at.after, room, max_batches, _SCAN_COUNT]
            async with self._caller.call("list"):
                scan, after, *ids = await self._scripts.scan(keys=[index(shard)], args=args)
            items.extend(await read(ids))
            nxt = _next_cursor(at.shard, scan, after)
            if nxt is None:
                return items, None
            at = nxt
        return items, await self._sign(kind, f"{at.shard}.{at.scan}.{at.after}")

    async def _read(self, ids: Sequence[str]) -> list[Ticket]:
        if not ids:
            return []
        async with self._caller.call("list_read"):
            flat = await self._scripts.read_many(keys=[keys.ticket(i) for i in ids], args=[])
        width = len(TICKET_FIELDS)
        return [ticket_from(i, flat[width * n: width * n + width]) for n, i in enumerate(ids) if flat[width * n]]

    async def _read_events(self, ids: Sequence[str]) -> list[EventInfo]:
        if not ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for event_id in ids:
                pipe.hmget(keys.event(event_id), EVENT_FIELDS)
            async with self._caller.call("event_read"):
                replies = await pipe.execute()
        return [event_from(i, values) for i, values in zip(ids, replies, strict=True) if values[0] is not None]

    async def events_page(self, after: str | None, limit: int) -> FeedPage:
        """The next `limit` events after cursor `after` (one this service issued), merged
        across shards in stream-id order. Each shard's position moves only past the events
        returned, so no event is skipped or repeated. Raises FeedCursorExpired if the
        streams were trimmed past the cursor."""
        at = FeedCursor.start(len(keys.SHARDS)) if after is None else await self.feed_cursor(after)
        async with self.redis.pipeline(transaction=False) as pipe:
            for shard, pos in zip(keys.SHARDS, at.positions, strict=True):
                pipe.xrange(keys.stream(shard), f"({pos}", "+", count=limit)
                pipe.xinfo_stream(keys.stream(shard))
            async with self._caller.call("events"):
                replies = await pipe.execute(raise_on_error=False)
        merged: list[tuple[tuple[int, int], int, str, dict[str, str]]] = []
        for i, pos in enumerate(at.positions):
            entries, info = replies[2 * i], replies[2 * i + 1]
            _check_not_trimmed(pos, info)
            merged.extend((stream_id_key(eid), i, eid, f) for eid, f in entries)
        merged.sort()
        taken = merged[:limit]
        positions = list(at.positions)
        for _, i, eid, _ in taken:
            positions[i] = eid
        events = [Event.from_fields(eid, f) for _, _, eid, f in taken]
        return FeedPage(events, await self._sign("feed", ",".join(positions)))


def _valid_stream_id(text: str) -> bool:
    if not _STREAM_ID_RE.fullmatch(text):
        return False
    ms, seq = text.split("-")
    return int(ms) < _U64 and int(seq) < _U64


def _next_cursor(shard: int, scan: str, after: str) -> PageCursor | None:
    if scan != "0" or after:
        return PageCursor(shard=shard, scan=int(scan), after=after)
    if shard + 1 < len(keys.SHARDS):
        return PageCursor(shard=shard + 1, scan=0, after="")
    return None


def _check_not_trimmed(pos: str, info: Any) -> None:
    """Refuse a cursor whose own entry was trimmed away: entries after it may have gone too
    (trimming cannot say), and a feed that may skip is no feed."""
    if isinstance(info, ResponseError):  # no such stream yet: nothing was trimmed
        return
    if isinstance(info, Exception):
        raise StoreUnavailable(str(info))
    if pos == "0-0":
        return
    first = info.get("first-entry")
    if first is None:  # empty: anything after pos was trimmed
        trimmed = stream_id_key(info["last-generated-id"]) > stream_id_key(pos)
    else:
        trimmed = stream_id_key(first[0]) > stream_id_key(pos)
    if trimmed:
        raise FeedCursorExpired()
