"""The check-in promises under every sequence: a reference model of tickets, lists and areas
in plain Python, and a Hypothesis state machine that drives random sequences of creates,
batches, scans (entry, exit, online and offline with chosen clocks), annulments,
revocations, the seed's invalidate and validate, and re-sent requests through the store, on
fakeredis and on a real redis-server. Every answer is checked against the model, and after
every step the invariants (docs/checkin.md#check-in-invariants) against Redis itself:

- a revoked ticket is never admitted;
- 0 <= inside <= capacity for every area, and inside is the count of holders in it;
- a ticket enters a single-entry list once;
- every counter (a list's inside, admitted, exits, refusals and conflicts; the shard's
  valid, invalid and revoked) equals the model's recount;
- an annul undoes only what still holds;
- an answer is replayed only to the request that earned it.

`make test` runs a short run per backend; MODEL_EXAMPLES=10000 runs a long one.

Must change together: service/lua/checkin.lua, annul.lua and transition.lua (what the model
mirrors), and docs/checkin.md#check-in-invariants (what it promises).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import fakeredis
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule
from redis.asyncio import Redis

from service.errors import NothingToAnnul, TransitionRefused
from service.models import Direction, EventSpec, ListSpec, Origin, TicketSpec, Transition, new_ticket_id
from service.store import Store, StoreConfig
from tooling.procs import RedisServer

T = TypeVar("T")
ACTORS = ("g1", "g2")
# Times an offline device may claim, as offsets from the run's start: two hours and a minute
# back (both believed: within OFFLINE_MAX_AGE_S), and a day ahead (judged now).
OFFLINE_CLAIMS_S = (-7200, -60, 86400)
EXPIRED_S = -3600  # valid_until of an expired ticket: expired now, valid two hours back
MAX_TICKETS = 4


@dataclass
class Gate:
    """A list as the model knows it."""

    name: str
    reentry: bool
    capacity: int | None = None
    types: tuple[str, ...] = ()
    leaves: tuple[str, ...] = ()
    id: str = ""
    inside: int = 0
    admitted: int = 0
    exits: int = 0
    conflicts: int = 0
    refused: dict[str, int] = field(default_factory=dict)


@dataclass
class Last:
    """A list's last admitted scan of a ticket: what an annul undoes (checkin.lua's last:<list>)."""

    direction: str
    seq: int
    actor: str
    flipped: bool
    left: tuple[str, ...]
    first: bool
    u1: bool
    claimed: str  # the device's scanned_at as sent, '' for none


@dataclass
class Holder:
    """A ticket as the model knows it."""

    id: str
    type: str
    valid_until: float | None
    status: str = "valid"  # valid, used, revoked
    plain: bool = False  # used by the seed's plain invalidate
    first_at: set[str] = field(default_factory=set)  # lists it was admitted at once
    inside: set[str] = field(default_factory=set)
    u1: bool = False
    last: dict[str, Last] = field(default_factory=dict)


@dataclass
class Answer:
    admitted: bool
    reason: str | None
    conflict: bool


class Venue:
    """The reference model: what the store must answer, and the counters it must keep."""

    def __init__(self, start_s: float) -> None:
        self.start_s = start_s
        self.gates = {g.name: g for g in (
            Gate("door", reentry=False),
            Gate("vip", reentry=False, capacity=1, types=("vip",)),
            Gate("hall", reentry=True, capacity=2),
            Gate("lounge", reentry=True, leaves=("hall",)),
        )}
        self.holders: dict[str, Holder] = {}
        self.seq = itertools.count(1)
        self.counts = {"valid": 0, "used": 0, "revoked": 0}

    def issue(self, ticket_id: str, kind: str, expired: bool) -> None:
        until = self.start_s + EXPIRED_S if expired else None
        self.holders[ticket_id] = Holder(ticket_id, kind, until)
        self.counts["valid"] += 1

    def _status(self, h: Holder, status: str) -> None:
        self.counts[h.status] -= 1
        self.counts[status] += 1
        h.status = status

    def _entry_refusal(self, h: Holder, g: Gate, at_s: float) -> str | None:
        if h.status == "revoked":
            return "revoked"
        if g.types and h.type not in g.types:
            return "type_not_allowed"
        if h.valid_until is not None and at_s > h.valid_until:
            return "expired"
        if g.reentry:
            if g.name in h.inside:
                return "already_inside"
        elif g.name in h.first_at or (h.status == "used" and (h.plain or not h.u1)):
            return "already_used"
        if g.capacity is not None and g.inside >= g.capacity:
            return "area_full"
        return None

    def _admit(self, h: Holder, g: Gate, actor: str, claimed: str) -> None:
        g.inside += 1
        g.admitted += 1
        h.inside.add(g.name)
        first, u1 = g.name not in h.first_at, not h.u1
        h.first_at.add(g.name)
        h.u1 = True
        flipped = not g.reentry and h.status == "valid"
        if flipped:
            self._status(h, "used")
        left = []
        for other in g.leaves:
            if other in h.inside:
                h.inside.discard(other)
                self.gates[other].inside -= 1
                self.gates[other].exits += 1
                left.append(other)
        h.last[g.name] = Last("entry", next(self.seq), actor, flipped, tuple(left), first, u1, claimed)

    def scan(self, ticket_id: str, gate: str, direction: str, actor: str, claim_s: int | None,
             offline: bool) -> Answer:
        h, g = self.holders.get(ticket_id), self.gates[gate]
        claimed = "" if claim_s is None else str(round((self.start_s + claim_s) * 1e6))
        now_s = time.time()
        at_s = min(self.start_s + claim_s, now_s) if offline and claim_s is not None else now_s
        reason: str | None
        if h is None:
            reason = "unknown_ticket"
        elif direction == "entry":
            reason = self._entry_refusal(h, g, at_s)
            last = h.last.get(gate)
            if (offline and claimed and reason in ("already_used", "already_inside") and last is not None
                    and (last.direction, last.actor, last.claimed) == ("entry", actor, claimed)):
                return Answer(True, None, False)  # the device's own scan, landed before
            if reason is None:
                self._admit(h, g, actor, claimed)
        elif gate not in h.inside:
            reason = "not_inside"
        else:
            reason = None
            h.inside.discard(gate)
            g.inside -= 1
            g.exits += 1
            h.last[gate] = Last("exit", next(self.seq), actor, False, (), False, False, claimed)
        if reason is not None and offline:
            g.conflicts += 1
        elif reason is not None:
            g.refused[reason] = g.refused.get(reason, 0) + 1
        return Answer(reason is None, reason, reason is not None and offline)

    def annul(self, ticket_id: str, gate: str, actor: str) -> str:
        h, g = self.holders[ticket_id], self.gates[gate]
        last = h.last.get(gate)
        if last is None or last.actor != actor:
            return "nothing"
        if any(other.seq >= last.seq for name, other in h.last.items() if name != gate):
            return "superseded"
        back = [self.gates[o] for o in last.left if o not in h.inside]
        full = [x for x in ([g] if last.direction == "exit" else back)
                if x.capacity is not None and x.inside >= x.capacity]
        if (gate in h.inside) != (last.direction == "entry"):
            return "superseded"
        if full:
            return "area_full"
        if last.direction == "entry":
            h.inside.discard(gate)
            g.inside -= 1
            g.admitted -= 1
            if last.first:
                h.first_at.discard(gate)
            if last.u1:
                h.u1 = False
            if last.flipped and h.status == "used":
                self._status(h, "valid")
            for other in back:
                h.inside.add(other.name)
                other.inside += 1
                other.exits -= 1
        else:
            h.inside.add(gate)
            g.inside += 1
            g.exits -= 1
        del h.last[gate]
        return "annulled"

    def transition(self, ticket_id: str, transition: Transition) -> bool:
        h = self.holders[ticket_id]
        target = {Transition.INVALIDATE: "used", Transition.VALIDATE: "valid", Transition.REVOKE: "revoked"}[transition]
        if h.status in (target, "revoked"):
            return False
        self._status(h, target)
        h.plain = transition is Transition.INVALIDATE
        return True


def _run(loop: asyncio.AbstractEventLoop, call: Awaitable[T]) -> T:
    return loop.run_until_complete(call)


class CheckinMachine(RuleBasedStateMachine):
    """Drives the store and the model side by side; `make_redis` is set per backend."""

    make_redis: Callable[[], Redis]
    tickets = Bundle("tickets")

    def __init__(self) -> None:
        super().__init__()
        RAN["sequences"] += 1
        self.loop = asyncio.new_event_loop()
        self.redis = self.make_redis()
        _run(self.loop, self.redis.flushall())
        # Generous timeouts: the subject is what is decided, not how fast (a loaded CI machine).
        self.store = Store(self.redis, StoreConfig(replay_ttl_s=600, timeout_ms=20_000))
        self.model = Venue(time.time())
        self.requests = itertools.count()
        self.sent: list[tuple[dict[str, Any], Answer]] = []
        event = _run(self.loop, self.store.tickets.create_event(EventSpec("Model")))
        self.event = event.id
        for g in self.model.gates.values():
            leaves = tuple(self.model.gates[o].id for o in g.leaves)
            spec = ListSpec(g.name, g.types, g.reentry, g.capacity, leaves)
            g.id = _run(self.loop, self.store.checkin.create_list(self.event, spec)).id

    def teardown(self) -> None:
        _run(self.loop, self.redis.aclose())
        self.loop.close()

    def _origin(self, actor: str, what: str) -> Origin:
        return Origin(actor=actor, request_id=f"r{next(self.requests)}", forwarded=True, request=what)

    # A few tickets each run, so that a run's steps meet the same tickets again and again.
    @precondition(lambda self: len(self.model.holders) < MAX_TICKETS)
    @rule(target=tickets, kind=st.sampled_from(["general", "vip"]), expired=st.booleans())
    def create(self, kind: str, expired: bool) -> str:
        RAN["create"] += 1
        until = self.model.start_s + EXPIRED_S if expired else None
        made = _run(self.loop, self.store.tickets.create(spec=TicketSpec(self.event, kind, valid_until=until)))
        self.model.issue(made.ticket.id, kind, expired)
        return made.ticket.id

    @precondition(lambda self: len(self.model.holders) < MAX_TICKETS)
    @rule(size=st.integers(1, 3))
    def batch(self, size: int) -> None:
        RAN["batch"] += 1
        specs = [TicketSpec(self.event, "general")] * size
        made, _ = _run(self.loop, self.store.tickets.issue_batch(specs, origin=self._origin("box", "batch")))
        for t in made:
            self.model.issue(t.id, "general", False)

    @rule(ticket=st.one_of(tickets, st.just("made-up")), gate=st.sampled_from(["door", "vip", "hall", "lounge"]),
          direction=st.sampled_from(["entry", "entry", "exit"]), actor=st.sampled_from(ACTORS),
          claim=st.one_of(st.none(), st.sampled_from(OFFLINE_CLAIMS_S)), offline=st.booleans())
    def scan(self, ticket: str, gate: str, direction: str, actor: str, claim: int | None, offline: bool) -> None:
        RAN["scan"] += 1
        ticket_id = new_ticket_id(self.event) if ticket == "made-up" else ticket
        offline = offline and claim is not None
        call = {"ticket_id": ticket_id, "list_id": self.model.gates[gate].id, "direction": Direction(direction),
                "scanned_at_us": None if claim is None else round((self.model.start_s + claim) * 1e6),
                "offline": offline, "origin": self._origin(actor, f"checkin {ticket_id} {gate} {direction}")}
        expected = self.model.scan(ticket_id, gate, direction, actor, claim, offline)
        answer = self._checkin(call, replayed=False)
        assert answer == expected, (call, answer, expected)
        self.sent.append((call, answer))

    def _checkin(self, call: dict[str, Any], replayed: bool) -> Answer:
        result, was_replayed = _run(self.loop, self.store.checkin.checkin(**call))
        assert was_replayed is replayed
        if result.admitted and result.ticket is not None and call["direction"] is Direction.ENTRY:
            assert result.ticket.state.value != "revoked"  # a holder may always leave
        return Answer(result.admitted, result.reason.value if result.reason else None, result.conflict)

    @precondition(lambda self: bool(self.sent))
    @rule(data=st.data())
    def resend(self, data: st.DataObject) -> None:
        """nginx re-sends a scan it already sent: the first answer, nothing decided again."""
        RAN["resend"] += 1
        call, first = data.draw(st.sampled_from(self.sent))
        assert self._checkin(call, replayed=True) == first

    @rule(ticket=tickets, gate=st.sampled_from(["door", "vip", "hall", "lounge"]), actor=st.sampled_from(ACTORS))
    def annul(self, ticket: str, gate: str, actor: str) -> None:
        RAN["annul"] += 1
        expected = self.model.annul(ticket, gate, actor)
        try:
            _run(self.loop, self.store.checkin.annul(ticket, self.model.gates[gate].id,
                                                     origin=self._origin(actor, "annul"), window_s=600))
            outcome = "annulled"
        except NothingToAnnul as exc:
            outcome = next((k for k, v in _ANNUL_WORDS.items() if v in str(exc)), str(exc))
        assert outcome == expected, (ticket, gate, actor, outcome, expected)

    @rule(ticket=tickets, transition=st.sampled_from(list(Transition)))
    def transition(self, ticket: str, transition: Transition) -> None:
        RAN["transition"] += 1
        expected = self.model.transition(ticket, transition)
        try:
            _run(self.loop, self.store.tickets.transition(ticket, transition, origin=self._origin("ops", "t")))
            changed = True
        except TransitionRefused:
            changed = False
        assert changed == expected, (ticket, transition)

    @invariant()
    def counters_are_the_models(self) -> None:
        RAN["steps"] += 1  # an invariant is checked after every step
        lists = {i.id: i for i in _run(self.loop, self.store.checkin.lists(self.event))}
        for g in self.model.gates.values():
            got = lists[g.id]
            assert 0 <= got.inside <= (g.capacity if g.capacity is not None else got.inside)
            holders_in = sum(g.name in h.inside for h in self.model.holders.values())
            assert (got.inside, got.admitted, got.exits, got.conflicts) == (
                g.inside, g.admitted, g.exits, g.conflicts) and got.inside == holders_in, g.name
            assert {k: v for k, v in (got.refused or {}).items() if v} == g.refused, g.name
        stats = _run(self.loop, self.store.tickets.stats())
        c = self.model.counts
        assert (stats.valid, stats.invalid, stats.revoked) == (c["valid"], c["used"], c["revoked"])


# How each of annul's refusals is worded (store/checkin.py), to tell them apart.
_ANNUL_WORDS = {"nothing": "by this key to annul", "too_late": "older than", "superseded": "scanned again",
                "area_full": "is full"}


EXAMPLES = int(os.environ.get("MODEL_EXAMPLES", "25"))
# What a run went through, for its report (a long run prints it: pytest -s).
RAN = Counter[str]()


def _check(make_redis: Callable[[], Redis], backend: str) -> None:
    machine: type[CheckinMachine] = type("Machine", (CheckinMachine,), {"make_redis": staticmethod(make_redis)})
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES, stateful_step_count=40, deadline=None, derandomize=False,
        suppress_health_check=list(HealthCheck))
    RAN.clear()
    started = time.monotonic()
    machine.TestCase().runTest()
    print(f"\nmodel on {backend}: {RAN['sequences']} sequences, {RAN['steps']} steps ({dict(RAN)}), "
          f"{time.monotonic() - started:.0f} s, nothing found")


# A long run takes about a second a sequence on a real redis-server.
@pytest.mark.slow
@pytest.mark.timeout(max(600, 2 * EXAMPLES))
def test_the_model_on_fakeredis() -> None:
    _check(lambda: fakeredis.FakeAsyncRedis(decode_responses=True), "fakeredis")


@pytest.mark.slow
@pytest.mark.timeout(max(600, 2 * EXAMPLES))
def test_the_model_on_a_real_redis(redis_server: RedisServer) -> None:
    _check(lambda: Redis.from_url(redis_server.url, decode_responses=True), "redis-server")
