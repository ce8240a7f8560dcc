"""What a venue does, as clients through nginx: creates and batches, scans at a single-entry
gate, at a re-entry hall and at an area with a capacity, exits, annuls and revocations, on a
few hot tickets so that scans of one ticket race. Every operation goes once (no retries: a
retry would hide what the first one did), with an X-Request-Id of its own that the service
writes into the ticket's history, so the checker can find each one there."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from .history import Kind, Op, Outcome

AREA_CAPACITY = 6
# The lists of the run: name -> the body that makes it.
LISTS: dict[str, dict[str, Any]] = {
    "gate": {"name": "Gate", "reentry": False},
    "hall": {"name": "Hall", "reentry": True},
    "area": {"name": "Area", "reentry": True, "capacity": AREA_CAPACITY},
}
# How often each operation is picked.
_WEIGHTS: dict[tuple[Kind, str | None], int] = {
    (Kind.CREATE, None): 10, (Kind.BATCH, None): 3,
    (Kind.ENTRY, "gate"): 20, (Kind.ENTRY, "hall"): 12, (Kind.EXIT, "hall"): 8,
    (Kind.ENTRY, "area"): 16, (Kind.EXIT, "area"): 10,
    (Kind.ANNUL, None): 5, (Kind.REVOKE, None): 3,
}
BATCH_SIZE = 5
_HOT_TICKETS = 24


@dataclass(frozen=True)
class Venue:
    event: str
    capacity: int
    lists: dict[str, str]  # name -> list id


class Workload:
    def __init__(self, url: str, seed: int, workers: int = 6, event_capacity: int = 600,
                 timeout_s: float = 3.0) -> None:
        self.url = url
        self.seed = seed
        self.workers = workers
        self.event_capacity = event_capacity
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self.ops: list[Op] = []
        self.tickets: list[str] = []  # every ticket an acknowledged create or batch made
        self.admitted: list[tuple[str, str]] = []  # (ticket, list) of acknowledged admissions
        self.venue: Venue | None = None
        self.started = time.monotonic()

    # --- before the faults --------------------------------------------------------------------

    async def setup(self, http: aiohttp.ClientSession) -> Venue:
        event = await self._made(http, "/event", {"name": f"Chaos {self.seed}", "capacity": self.event_capacity})
        lists = {name: (await self._made(http, f"/event/{event}/list", body))
                 for name, body in LISTS.items()}
        self.venue = Venue(event, self.event_capacity, lists)
        return self.venue

    async def _made(self, http: aiohttp.ClientSession, path: str, body: dict[str, Any]) -> str:
        for _ in range(50):
            try:
                async with http.post(self.url + path, json=body, timeout=self.timeout) as r:
                    if r.status == 201:
                        return str((await r.json())["id"])
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"could not make {path}")

    # --- the run ------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.started = time.monotonic()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            await asyncio.gather(*(self._worker(http, w, stop) for w in range(self.workers)))

    async def _worker(self, http: aiohttp.ClientSession, worker: int, stop: asyncio.Event) -> None:
        rng = random.Random(self.seed * 1000 + worker)
        choices, weights = list(_WEIGHTS), list(_WEIGHTS.values())
        while not stop.is_set():
            kind, list_name = rng.choices(choices, weights)[0]
            op = self._plan(rng, worker, kind, list_name)
            if op is None:
                continue
            await self._do(http, op)

    def _plan(self, rng: random.Random, worker: int, kind: Kind, list_name: str | None) -> Op | None:
        op = Op(len(self.ops), worker, kind, f"chaos-{self.seed}-{len(self.ops):06d}", list_name=list_name)
        if kind in (Kind.ENTRY, Kind.EXIT, Kind.REVOKE):
            if not self.tickets:
                return None
            op.ticket = rng.choice(self.tickets[-_HOT_TICKETS:])
        elif kind is Kind.ANNUL:
            if not self.admitted:
                return None
            op.ticket, op.list_name = rng.choice(self.admitted[-_HOT_TICKETS:])
        self.ops.append(op)
        return op

    def _request(self, op: Op) -> tuple[str, dict[str, Any]]:
        assert self.venue is not None
        v = self.venue
        if op.kind is Kind.CREATE:
            return "/ticket", {"event": v.event}
        if op.kind is Kind.BATCH:
            return "/ticket/batch", {"tickets": [{"event": v.event}] * BATCH_SIZE}
        if op.kind is Kind.REVOKE:
            return f"/ticket/{op.ticket}/revoke", {"reason": "chaos"}
        assert op.list_name is not None
        if op.kind is Kind.ANNUL:
            return "/checkin/annul", {"ticket": op.ticket, "list": v.lists[op.list_name]}
        return "/checkin", {"ticket": op.ticket, "list": v.lists[op.list_name], "direction": op.kind.value}

    async def _do(self, http: aiohttp.ClientSession, op: Op) -> None:
        path, body = self._request(op)
        op.invoked_s = time.monotonic() - self.started
        try:
            async with http.post(self.url + path, json=body, headers={"X-Request-Id": op.request_id},
                                 timeout=self.timeout) as r:
                op.status = r.status
                answer = await r.json(content_type=None) if r.status < 500 else {}
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            op.answer = {"error": type(exc).__name__}
            answer = None
        op.completed_s = time.monotonic() - self.started
        if answer is None or op.status >= 500:
            op.outcome = Outcome.UNKNOWN
            return
        op.outcome = Outcome.OK if op.status < 300 else Outcome.FAIL
        self._learn(op, answer)

    def _learn(self, op: Op, answer: Any) -> None:
        """Keep what the client was told, and what later operations may use."""
        if op.outcome is not Outcome.OK:
            op.answer = {"type": str(answer.get("type", "")).rsplit("/", 1)[-1]} if isinstance(answer, dict) else {}
            return
        if op.kind is Kind.CREATE:
            op.made = [answer["id"]]
        elif op.kind is Kind.BATCH:
            op.made = [t["id"] for t in answer["tickets"]]
        elif op.kind in (Kind.ENTRY, Kind.EXIT):
            op.answer = {k: answer.get(k) for k in ("admitted", "reason", "inside")}
            if op.kind is Kind.ENTRY and answer.get("admitted"):
                assert op.ticket is not None and op.list_name is not None
                self.admitted.append((op.ticket, op.list_name))
        elif op.kind is Kind.REVOKE:
            op.answer = {"status": answer.get("status")}
        self.tickets.extend(op.made)
