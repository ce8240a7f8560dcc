"""Check-in: the lists of an event (gates and areas), scans at them, and annulments. Every
scan is one script call in the event's shard that decides and records everything."""

from __future__ import annotations

from typing import Any

from ..errors import EventNotFound, InvalidInput, ListNotFound, NothingToAnnul
from ..models import (
    CheckinResult,
    Direction,
    IdempotencyKey,
    ListInfo,
    ListSpec,
    Origin,
    Refusal,
    event_of,
    new_list_id,
)
from . import keys
from .adaptors import AnnulArgv, AnnulKeys, AnnulReply, CheckinArgv, CheckinKeys, CheckinReply, ListArgv, ListKeys
from .config import StoreConfig
from .idempotency import bind
from .link import Link
from .tickets import ticket_from

_LIST_FIELDS = ("name", "types", "reentry", "capacity", "leaves", "inside", "admitted", "exits")


def _split(text: Any) -> tuple[str, ...]:
    return tuple(x for x in str(text or "").split(",") if x)


class CheckinStore:
    def __init__(self, link: Link, cfg: StoreConfig) -> None:
        self._link, self.cfg = link, cfg
        self.redis = link.redis
        # A list's `leaves` never change once it is made (no call changes a list), so each
        # worker reads them once per list: a scan stays one round trip.
        self._leaves_of: dict[str, tuple[str, ...]] = {}

    async def create_list(self, event_id: str, spec: ListSpec, origin: Origin = Origin()) -> ListInfo:
        """A new list. Through nginx its id derives from the caller and request id, so the
        same request again (a retry after a 503) gets the list it made, not a second one."""
        mark, list_id = "", new_list_id(event_id)
        if origin.forwarded:
            mark = keys.digest(origin.actor, origin.replay_id)[:16]
            list_id = f"{event_id}-{keys.digest('list', origin.actor, origin.replay_id)[:4]}"
        leaves = list(spec.leaves)
        for other in leaves:  # a list of another event lives in another slot: never sent
            if event_of_list(other) != event_id:
                raise InvalidInput(f"leaves: {other} is not a list of event {event_id}", slug="malformed-body")
        script_keys = ListKeys(keys.event(event_id), keys.check_in_list(list_id), keys.list_index(event_id),
                               tuple(keys.check_in_list(lid) for lid in leaves))
        argv = ListArgv(list_id, spec.name, ",".join(spec.types), "1" if spec.reentry else "0",
                        "" if spec.capacity is None else spec.capacity, ",".join(leaves), mark, tuple(leaves))
        outcome = await self._link.run("list_create", self._link.scripts.list, script_keys.flat(), argv.flat(),
                                       write=True)
        if outcome == "no_event":
            raise EventNotFound(event_id)
        if outcome == "replayed":
            return await self.get_list(event_id, list_id)
        if outcome == "exists":  # the id is another's: draw a random one
            return await self.create_list(event_id, spec)
        if outcome != "created":
            raise InvalidInput(f"leaves: {outcome.removeprefix('no_list:')} is not a list of event {event_id}",
                               slug="malformed-body")
        return ListInfo(list_id, event_id, spec)

    async def get_list(self, event_id: str, list_id: str) -> ListInfo:
        if event_of_list(list_id) != event_id:
            raise ListNotFound(event_id, list_id)
        async with self._link.call("list_get"):
            flat: dict[str, str] = await self.redis.hgetall(keys.check_in_list(list_id))  # type: ignore[assignment]
        if not flat:
            raise ListNotFound(event_id, list_id)
        return _list_info(event_id, list_id, flat)

    async def lists(self, event_id: str) -> list[ListInfo]:
        """Every list of the event, by id, with its counters: two round trips (the index,
        then the lists), all in the event's shard."""
        async with self._link.call("list_index"):
            members: set[str] = await self.redis.smembers(keys.list_index(event_id))  # type: ignore[assignment]
        list_ids = sorted(members)
        if not list_ids:
            return []
        batch = self._link.batch()
        for list_id in list_ids:
            batch.cmd.hgetall(keys.check_in_list(list_id))
        flats = await batch.run(self._link.call("list_get"))
        return [_list_info(event_id, lid, flat) for lid, flat in zip(list_ids, flats, strict=True) if flat]

    async def event_figures(self) -> dict[str, dict[str, Any]]:
        """Per event: tickets issued, and per list its admitted, inside, exits and refusals
        by reason. Three pipelined round trips, whatever the number of events: the event
        ids of every shard, then each event's count and lists, then each list."""
        batch = self._link.batch()
        for shard in keys.SHARDS:
            batch.cmd.smembers(keys.event_index(shard))
        event_ids = sorted(e for ids in await batch.run(self._link.call("figures_events")) for e in ids)
        batch = self._link.batch()
        for event_id in event_ids:
            batch.cmd.hget(keys.event(event_id), "issued")
            batch.cmd.smembers(keys.list_index(event_id))
        replies = await batch.run(self._link.call("figures_lists"))
        lists = {e: sorted(replies[2 * i + 1]) for i, e in enumerate(event_ids)}
        batch = self._link.batch()
        for list_ids in lists.values():
            for list_id in list_ids:
                batch.cmd.hgetall(keys.check_in_list(list_id))
        flats = iter(await batch.run(self._link.call("figures_list")))
        out: dict[str, dict[str, Any]] = {}
        for i, event_id in enumerate(event_ids):
            per_list = {}
            for list_id in lists[event_id]:
                flat = next(flats)
                per_list[list_id] = {
                    "name": flat.get("name"), "admitted": int(flat.get("admitted", 0)),
                    "inside": int(flat.get("inside", 0)), "exits": int(flat.get("exits", 0)),
                    "refused": {r.value: int(flat.get(f"r:{r.value}", 0)) for r in Refusal},
                }
            out[event_id] = {"issued": int(replies[2 * i] or 0), "lists": per_list}
        return out

    async def _leaves(self, list_id: str) -> tuple[str, ...]:
        """The lists this list checks the holder out of: part of the scan's KEYS."""
        found = self._leaves_of.get(list_id)
        if found is None:
            async with self._link.call("list_leaves"):
                raw = await self.redis.hget(keys.check_in_list(list_id), "leaves")
            found = _split(raw)
            if raw is not None and len(self._leaves_of) < 100_000:  # an unknown list is not kept
                self._leaves_of[list_id] = found
        return found

    async def checkin(
        self, ticket_id: str, list_id: str, direction: Direction, *, origin: Origin, scanned_at_us: int | None = None,
        idempotency: IdempotencyKey | None = None, refusal: Refusal | None = None, offline: bool = False,
        code_id: str | None = None,
    ) -> tuple[CheckinResult, bool]:
        """Decide and record one scan: (the answer, whether it is the stored first answer to
        the same request). The same request again (nginx's re-send, the same
        Idempotency-Key) is answered from its record, never decided twice. One round trip
        (the list's `leaves` are read once per worker), two with an Idempotency-Key (its
        binding first).

        `refusal` is a scan already refused before Redis (a ticket token that did not
        verify; `ticket_id` is then ""): it is recorded and counted as the list's refusal.
        `offline`: the device admitted the holder offline and uploads the scan now, so a
        refusal is recorded as a conflict, not as a refusal at the gate.
        `code_id`: for a scanned UUID not of the list's event, the id the same text has as an
        imported code of the event: the scan is of that ticket if it exists."""
        event = event_of_list(list_id)
        leaves = await self._leaves(list_id)
        shard = keys.shard_of(list_id)
        same_event = refusal is None and event_of(ticket_id) == event
        if refusal is None and not same_event:
            refusal, ticket_id = await self._not_of_this_event(ticket_id, code_id)
            same_event = refusal is None
        if idempotency is not None:
            await bind(self._link, idempotency, self.cfg.idempotency_ttl_s)
            record, ttl_s = keys.idempotency_answer(idempotency.actor, idempotency.key, ticket_id, shard), \
                self.cfg.idempotency_ttl_s
        else:
            record, ttl_s = keys.replay(ticket_id, origin.actor, origin.replay_id, shard), self.cfg.replay_ttl_s
        script_keys = CheckinKeys(
            keys.check_in_list(list_id), keys.event(event), keys.stats(shard), keys.stream(shard), record,
            keys.ticket(ticket_id) if same_event else None,
            tuple(keys.check_in_list(lid) for lid in leaves) if same_event else ())
        argv = CheckinArgv(
            list_id, direction.value, "" if scanned_at_us is None else scanned_at_us, origin.actor,
            origin.request_id, origin.client_ip, self.cfg.events_maxlen, ticket_id, ttl_s,
            refusal.value if refusal else "", "1" if offline else "", self.cfg.offline_max_age_s * 1_000_000)
        reply = CheckinReply.of(await self._link.run(
            "checkin", self._link.scripts.checkin, script_keys.flat(), argv.flat(), write=True))
        if reply.reason == "no_list":
            raise ListNotFound(event, list_id)
        values = reply.values
        ticket = ticket_from(ticket_id, values) if values and values[0] else None
        used_at = reply.used_at_us / 1e6 if reply.used_at_us else None
        result = CheckinResult(reply.admitted, Refusal(reply.reason) if reply.reason else None, ticket, list_id,
                               direction, reply.inside, used_at, reply.used_list,
                               conflict=offline and not reply.admitted)
        return result, reply.replayed

    async def _not_of_this_event(self, ticket_id: str, code_id: str | None) -> tuple[Refusal | None, str]:
        """A scan of an id that is not of the list's event: a ticket of another event, an
        imported code that is a UUID (then its ticket, `code_id`, is scanned), or a code
        nobody issued. Its hash lives in another slot than the list's, so it is asked apart:
        a second round trip, on this path only. (refusal or None, the ticket id to scan)"""
        batch = self._link.batch()
        batch.cmd.exists(keys.ticket(ticket_id))
        if code_id is not None:
            batch.cmd.exists(keys.ticket(code_id))
        exists, *imported = await batch.run(self._link.call("ticket_exists"))
        if imported and imported[0]:
            return None, str(code_id)
        return (Refusal.WRONG_EVENT if exists else Refusal.UNKNOWN_TICKET), ticket_id

    async def annul(self, ticket_id: str, list_id: str, *, origin: Origin, window_s: int) -> int:
        """Undo this caller's own last scan of the ticket on the list; its occupancy after."""
        event = event_of_list(list_id)
        if event_of(ticket_id) != event:
            raise NothingToAnnul("no scan of this ticket on this list to annul")
        leaves = await self._leaves(list_id)
        shard = keys.shard_of(list_id)
        script_keys = AnnulKeys(keys.check_in_list(list_id), keys.stats(shard), keys.stream(shard),
                                keys.ticket(ticket_id), tuple(keys.check_in_list(lid) for lid in leaves))
        argv = AnnulArgv(list_id, origin.actor, window_s * 1_000_000, origin.request_id, origin.client_ip,
                         self.cfg.events_maxlen, ticket_id, tuple(leaves))
        reply = AnnulReply.of(await self._link.run(
            "annul", self._link.scripts.annul, script_keys.flat(), argv.flat(), write=True))
        if reply.outcome != "annulled":
            refusal = _ANNUL_REFUSALS.get(reply.outcome, _ANNUL_REFUSALS["nothing"])
            raise NothingToAnnul(refusal.format(window_s=window_s))
        return reply.inside


# annul.lua's outcomes other than 'annulled', as the 409's detail says them.
_ANNUL_REFUSALS = {
    "nothing": "no scan of this ticket on this list by this key to annul",
    "too_late": "that scan is older than the annul window ({window_s} s)",
    "superseded": "the ticket was scanned again since: only its latest scan can be annulled",
    "area_full": "the area the holder would be put back into is full now",
}


def _list_info(event_id: str, list_id: str, flat: dict[str, str]) -> ListInfo:
    capacity = flat.get("capacity")
    spec = ListSpec(flat["name"], _split(flat.get("types")), flat.get("reentry") == "1",
                    int(capacity) if capacity else None, _split(flat.get("leaves")))
    refused = {k[2:]: int(v) for k, v in flat.items() if k.startswith("r:")}
    return ListInfo(list_id, event_id, spec, int(flat.get("inside", 0)), int(flat.get("admitted", 0)),
                    int(flat.get("exits", 0)), refused, int(flat.get("conflicts", 0)))


def event_of_list(list_id: str) -> str:
    return list_id[:8]
