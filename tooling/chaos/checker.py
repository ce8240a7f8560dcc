"""The checker: the run's record against the final state, read through the API once the faults
are healed and the processor has caught up. What it holds the service to:

- lost: every acknowledged create, scan, annul and revocation is in the ticket's history
  (found by its request id) and in its state; an acknowledged revocation leaves it revoked.
- double: no ticket admitted twice at the single-entry gate: neither in its history (replayed
  with its annuls), nor in what the clients were told (two acknowledged admissions with no
  acknowledged or recorded annul between them means two people got in).
- capacity: no answer told a client of an area over its capacity, and the final count is
  within it; no event issued more tickets than its capacity, by its count or by the
  acknowledged creates.
- counters: each list's inside, admitted and exits and the event's issued equal a recount
  from the histories.

Operations whose outcome is unknown (a 5xx, a timeout) may be found or not: either is fine.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .history import Kind, Op, Outcome
from .workload import LISTS, Venue


@dataclass
class Violation:
    rule: str
    what: str
    ops: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "what": self.what, "ops": self.ops}


@dataclass
class FinalState:
    tickets: dict[str, dict[str, Any]]  # every ticket of the event, as GET /ticket/{id} shows it
    histories: dict[str, list[dict[str, Any]]]
    lists: dict[str, dict[str, Any]]  # list name -> GET /event/{id}/list/{list}
    issued: int
    stats: dict[str, Any] = field(default_factory=dict)  # GET /stats (the run's event is the only one)


async def read_final_state(url: str, venue: Venue, timeout_s: float = 120) -> FinalState:
    """Wait until the processor has applied every change (histories are its work), then read
    every ticket of the event, its history, the lists and the event."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await _until_caught_up(http, url, timeout_s)
        ids = await _ticket_ids(http, url, venue.event)
        sem = asyncio.Semaphore(16)

        async def one(tid: str) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
            async with sem:
                ticket = await _get(http, f"{url}/ticket/{tid}")
                history = await _get(http, f"{url}/ticket/{tid}/history")
                return tid, ticket, history

        read = await asyncio.gather(*(one(t) for t in ids))
        lists = {name: await _get(http, f"{url}/event/{venue.event}/list/{lid}") for name, lid in venue.lists.items()}
        event = await _get(http, f"{url}/event/{venue.event}")
        stats = await _get(http, f"{url}/stats")
    return FinalState({t: d for t, d, _ in read}, {t: h for t, _, h in read}, lists, int(event["issued"]), stats)


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    for _ in range(100):
        try:
            async with http.get(url) as r:
                if r.status == 200:
                    return await r.json()
        except (aiohttp.ClientError, TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} did not answer 200 after the faults were healed")


async def _until_caught_up(http: aiohttp.ClientSession, url: str, timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        stats = await _get(http, f"{url}/stats")
        if stats["processor_lag"] == 0:
            return
        await asyncio.sleep(0.25)
    raise RuntimeError("the processor did not catch up after the faults were healed")


async def _ticket_ids(http: aiohttp.ClientSession, url: str, event: str) -> list[str]:
    ids: list[str] = []
    page: str | None = f"{url}/ticket?limit=1000"
    while page is not None:
        here = page
        for _ in range(100):
            try:
                async with http.get(here) as r:
                    if r.status == 200:
                        ids += [t["id"] for t in await r.json() if t["event"] == event]
                        link = r.headers.get("Link", "")
                        page = url + link[link.index("<") + 1: link.index(">")] if link else None
                        break
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("could not list the tickets")
    return ids


class Checker:
    def __init__(self, ops: list[Op], venue: Venue, final: FinalState) -> None:
        self.ops = ops
        self.venue = venue
        self.final = final
        self.list_names = {lid: name for name, lid in venue.lists.items()}
        self.violations: list[Violation] = []

    def check(self) -> list[Violation]:
        self._lost()
        self._double()
        self._capacity()
        self._counters()
        return self.violations

    def _flag(self, rule: str, what: str, *ops: Op) -> None:
        self.violations.append(Violation(rule, what, [op.describe() for op in ops]))

    def _recorded(self, ticket: str) -> dict[str, dict[str, Any]]:
        return {c["request_id"]: c for c in self.final.histories.get(ticket, []) if c.get("request_id")}

    def _lost(self) -> None:
        for op in self.ops:
            if op.outcome is not Outcome.OK:
                continue
            if op.kind in (Kind.CREATE, Kind.BATCH):
                for tid in op.made:
                    if tid not in self.final.tickets:
                        self._flag("lost", f"ticket {tid} was acknowledged as created and is gone", op)
                continue
            assert op.ticket is not None
            if op.request_id not in self._recorded(op.ticket):
                self._flag("lost", f"{op.kind} of {op.ticket} was acknowledged and is not in its history", op)
            if op.kind is Kind.REVOKE and self.final.tickets.get(op.ticket, {}).get("status") != "revoked":
                self._flag("lost", f"{op.ticket} was acknowledged as revoked and is not", op)

    def _double(self) -> None:
        gate = self.venue.lists["gate"]
        for tid, history in self.final.histories.items():
            inside, seen = 0, 0
            for change in _replay(history, gate):
                inside += change
                seen = max(seen, inside)
            if seen > 1:
                self._flag("double", f"{tid}'s history admits it at the single-entry gate {seen} times")
        by_ticket: dict[str, list[Op]] = defaultdict(list)
        for op in self.ops:
            if op.list_name == "gate" and op.kind in (Kind.ENTRY, Kind.ANNUL) and op.ticket:
                by_ticket[op.ticket].append(op)
        for tid, ops in by_ticket.items():
            recorded_annuls = sum(1 for c in self.final.histories.get(tid, [])
                                  if c["type"] == "checkin_annulled" and c.get("list") == gate)
            told = [op for op in ops if op.kind is Kind.ENTRY and op.outcome is Outcome.OK
                    and op.answer.get("admitted")]
            annuls = max(recorded_annuls, sum(1 for op in ops if op.kind is Kind.ANNUL and op.outcome is Outcome.OK))
            if len(told) > 1 + annuls:
                self._flag("double", f"{tid} was admitted at the single-entry gate {len(told)} times "
                                     f"with {annuls} annuls", *told)

    def _capacity(self) -> None:
        capacity = int(LISTS["area"]["capacity"])
        for op in self.ops:
            inside = op.answer.get("inside")
            if op.list_name == "area" and op.outcome is Outcome.OK and isinstance(inside, int) and inside > capacity:
                self._flag("capacity", f"a client was told the area holds {inside} of {capacity}", op)
        final_inside = int(self.final.lists["area"]["inside"])
        if not 0 <= final_inside <= capacity:
            self._flag("capacity", f"the area holds {final_inside} of {capacity} at the end")
        acked = sum(len(op.made) for op in self.ops if op.outcome is Outcome.OK)
        if self.final.issued > self.venue.capacity or acked > self.venue.capacity:
            self._flag("capacity", f"the event of capacity {self.venue.capacity} issued {self.final.issued} "
                                   f"({acked} acknowledged)")

    def _counters(self) -> None:
        if self.final.issued != len(self.final.tickets):
            self._flag("counters", f"the event says {self.final.issued} issued; {len(self.final.tickets)} exist")
        if self.final.stats:
            statuses = Counter(str(t["status"]) for t in self.final.tickets.values())
            totals = {"total": len(self.final.tickets), "valid": statuses["valid"], "invalid": statuses["used"],
                      "revoked": statuses["revoked"]}
            shown = {k: self.final.stats.get(k) for k in totals}
            if shown != totals:
                self._flag("counters", f"/stats says {shown}; the tickets recount {totals}")
        for name, lid in self.venue.lists.items():
            recount: Counter[str] = Counter()
            for history in self.final.histories.values():
                recount += _tally(history, lid)
            shown = self.final.lists[name]
            for figure in ("inside", "admitted", "exits"):
                if int(shown[figure]) != recount[figure]:
                    self._flag("counters", f"{name}'s {figure} is {shown[figure]}; its histories recount "
                                           f"{recount[figure]}")


def _scans(history: list[dict[str, Any]], list_id: str) -> Iterator[tuple[str, int]]:
    """Each admitted scan at the list as (its direction, 1), an annul as (the direction of the
    scan it undid, -1): an annul undoes the last admitted scan, and only once."""
    last: str | None = None
    for c in history:
        if c.get("list") != list_id:
            continue
        if c["type"] == "checkin":
            last = str(c.get("direction"))
            yield last, 1
        elif c["type"] == "checkin_annulled" and last is not None:
            yield last, -1
            last = None


def _replay(history: list[dict[str, Any]], list_id: str) -> list[int]:
    """The holder's moves at the list: +1 in, -1 out."""
    return [sign if direction == "entry" else -sign for direction, sign in _scans(history, list_id)]


def _tally(history: list[dict[str, Any]], list_id: str) -> Counter[str]:
    """A ticket's part of a list's counters, recounted from its history."""
    counts: Counter[str] = Counter()
    for direction, sign in _scans(history, list_id):
        counts["admitted" if direction == "entry" else "exits"] += sign
    counts["inside"] = sum(_replay(history, list_id))
    return counts
