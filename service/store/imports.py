"""Tickets sold elsewhere: an outside shop's codes imported into an event as tickets, found by
their code at a scan, and removed by source while never scanned.

An imported ticket's id derives from the event and its code (a keyed hash under the
deployment secret, as a UUIDv8 of the event): a scan of the code knows the ticket's id, and
so its key, without a read; the same code imported twice into an event is the same id, found
by EXISTS. The code is kept in the ticket (`code`), and in a gate's book only as its digest
(models.code_digest).

Must change together: import_codes.lua and withdraw.lua (KEYS, ARGV), the checkin handler
(a scanned code's id, `ticket_id_of`), feed.py (the book's imported codes), web/gate/book.js.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import CodesDuplicated, EventNotFound, SoldOut
from ..models import IdempotencyKey, Origin, Ticket, TicketSpec, code_digest, new_ticket_id
from . import keys
from .adaptors import ImportArgv, ImportKeys, ImportReply, WithdrawArgv, WithdrawReply
from .config import StoreConfig
from .idempotency import bind
from .link import Arg, Link
from .secret import DeploymentSecret
from .tickets import ticket_from

# Tickets a withdraw call removes in one script: a call blocks Redis while it runs.
WITHDRAW_PAGE = 500


@dataclass(frozen=True, slots=True)
class CodeItem:
    """One code to import, with its ticket's fields (spec.event is the import's event)."""

    code: str
    spec: TicketSpec


@dataclass(frozen=True, slots=True)
class Withdrawal:
    removed: int
    kept: list[tuple[str, str]]  # (ticket id, code) of each ticket kept because it was scanned


class ImportStore:
    def __init__(self, link: Link, secret: DeploymentSecret, cfg: StoreConfig) -> None:
        self._link, self._secret, self.cfg = link, secret, cfg

    async def ticket_id_of(self, event: str, code: str) -> str:
        """The id the code's ticket has in the event, imported or not (no read)."""
        return new_ticket_id(event, (await self._secret.mac("imported-code", f"{event}\n{code}"))[:16])

    async def import_codes(
        self, event: str, source: str, items: Sequence[CodeItem], *, origin: Origin,
        idempotency: IdempotencyKey | None = None,
    ) -> tuple[list[Ticket], bool]:
        """Make a ticket of the event for each code, all or nothing, in one script call (two
        with an Idempotency-Key: the key is bound first): (tickets, replayed). A code given
        twice, or already imported into the event by another call, raises CodesDuplicated
        naming every one; the same request again gets its tickets back."""
        seen: dict[str, int] = {}
        twice = [(i, item.code) for i, item in enumerate(items) if seen.setdefault(item.code, i) != i]
        if twice:
            raise CodesDuplicated([{"index": i, "code": code, "where": "call"} for i, code in twice])
        mark = await self._mark(origin, idempotency)
        ids = [await self.ticket_id_of(event, item.code) for item in items]
        script_keys = ImportKeys(keys.index(keys.shard_of(event)), keys.stats(keys.shard_of(event)),
                                 keys.stream(keys.shard_of(event)), keys.event(event), keys.imported(event, source),
                                 tuple(keys.ticket(tid) for tid in ids))
        kinds, per_ticket = _kinds(event, items, ids)
        argv = ImportArgv(origin.actor, origin.request_id, origin.client_ip, self.cfg.events_maxlen, source, mark,
                          len(kinds) // 5, tuple(kinds), tuple(per_ticket))
        reply = ImportReply.of(await self._link.run(
            "import", self._link.scripts.import_codes, script_keys.flat(), argv.flat(), write=True,
            extra_s=len(items) / 5_000))
        if reply.outcome == "no_event":
            raise EventNotFound(event)
        if reply.outcome == "sold_out":
            raise SoldOut(event)
        if reply.outcome == "duplicate":
            raise CodesDuplicated([{"index": int(p) - 1, "code": items[int(p) - 1].code, "where": "stored",
                                    "ticket": ids[int(p) - 1]} for p in reply.flat])
        flat = reply.flat
        tickets = [ticket_from(tid, [flat[2 * i], flat[2 * i + 1], *_spec_values(item.spec)])._replace(
            source=source, code=item.code) for i, (tid, item) in enumerate(zip(ids, items, strict=True))]
        return tickets, reply.replayed

    async def _mark(self, origin: Origin, idempotency: IdempotencyKey | None) -> str:
        """What makes a retry of this call its own: its Idempotency-Key, else nginx's request
        id and what the request asks; a call with neither is never a retry."""
        if idempotency is not None:
            await bind(self._link, idempotency, self.cfg.idempotency_ttl_s)
            return keys.digest("key", idempotency.actor, idempotency.key)[:16]
        if origin.forwarded:
            return keys.digest("request", origin.actor, origin.replay_id)[:16]
        return secrets.token_hex(8)

    async def withdraw(self, event: str, source: str, *, origin: Origin) -> Withdrawal:
        """Remove the source's tickets of the event that were never scanned, a page at a time
        (each page one script: a ticket is removed or kept atomically against its scans)."""
        members = keys.imported(event, source)
        shard = keys.shard_of(event)
        removed, cursor = 0, 0
        kept: dict[str, str] = {}
        while True:
            async with self._link.call("withdraw_scan"):
                cursor, page = await self._link.redis.sscan(members, cursor, count=WITHDRAW_PAGE)
            ids = sorted({str(tid) for tid in page})
            if ids:
                script_keys = ImportKeys(keys.index(shard), keys.stats(shard), keys.stream(shard), keys.event(event),
                                         members, tuple(keys.ticket(tid) for tid in ids))
                argv = WithdrawArgv(origin.actor, origin.request_id, origin.client_ip, self.cfg.events_maxlen,
                                    source, tuple(ids))
                reply = WithdrawReply.of(await self._link.run(
                    "withdraw", self._link.scripts.withdraw, script_keys.flat(), argv.flat(), write=True))
                removed += reply.removed
                kept.update(reply.kept)
            if int(cursor) == 0:
                return Withdrawal(removed, sorted(kept.items(), key=lambda kv: kv[1]))


def _spec_values(spec: TicketSpec) -> list[str]:
    """A spec's ty, h, st, vf, vu as a ticket hash holds them ('' for none)."""
    return [spec.type or "", spec.holder or "", spec.seat or "", _us(spec.valid_from), _us(spec.valid_until)]


def _us(seconds: float | None) -> str:
    return "" if seconds is None else str(round(seconds * 1e6))


def _kinds(event: str, items: Sequence[CodeItem], ids: Sequence[str]) -> tuple[list[Arg], list[Arg]]:
    """import_codes.lua's per_kind (each kind of ticket's fields, sent once) and per_ticket."""
    kind_of: dict[TicketSpec, int] = {}
    kinds: list[Arg] = []
    per_ticket: list[Arg] = []
    for tid, item in zip(ids, items, strict=True):
        kind = kind_of.get(item.spec)
        if kind is None:
            kind = kind_of[item.spec] = len(kind_of) + 1
            kinds += _spec_values(item.spec)
        per_ticket += (tid, item.code, code_digest(event, item.code), kind)
    return kinds, per_ticket
