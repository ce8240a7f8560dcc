"""Check-in at a venue's gates through the HTTP API, against fakeredis and a real
redis-server alike: every refusal code, single entry and re-entry, areas with capacity and
"leaves", annulment, offline scan times, bound scanner keys, and the races that must have
one outcome."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api_keys import ApiKeys
from service.models import new_ticket_id
from service.settings import Settings

from .conftest import FROM_PROXY, AiohttpClient, Api
from .test_api import assert_problem


class Venue:
    def __init__(self, api: Api, event: dict[str, Any]) -> None:
        self.api, self.event, self.id = api, event, event["id"]

    @classmethod
    async def open(cls, api: Api, **event: Any) -> Venue:
        r = await api.post("/event", json={"name": "Festival", **event})
        assert r.status == 201
        return cls(api, r.body)

    async def list(self, **body: Any) -> dict[str, Any]:
        r = await self.api.post(f"/event/{self.id}/list", json={"name": "Gate", **body})
        assert r.status == 201, r.body
        made: dict[str, Any] = r.body
        return made

    async def ticket(self, **body: Any) -> str:
        r = await self.api.post("/ticket", json={"event": self.id, **body})
        assert r.status == 201, r.body
        ticket_id: str = r.body["id"]
        return ticket_id

    async def scan(self, ticket: str, gate: dict[str, Any], direction: str = "entry", **extra: Any) -> dict[str, Any]:
        r = await self.api.post("/checkin", json={"ticket": ticket, "list": gate["id"], "direction": direction,
                                                  **extra})
        assert r.status == 200, r.body
        answer: dict[str, Any] = r.body
        assert answer["list"] == gate["id"] and answer["direction"] == direction
        assert answer["message"]
        return answer

    async def inside(self, gate: dict[str, Any]) -> int:
        info = (await self.api.get(f"/event/{self.id}/list/{gate['id']}")).body
        return int(info["inside"])


def refused(answer: dict[str, Any], reason: str) -> None:
    assert answer["admitted"] is False and answer["reason"] == reason, answer


async def test_each_refusal_code(any_api: Api) -> None:
    now = time.time()
    venue = await Venue.open(any_api)
    other = await Venue.open(any_api, name="Another show")
    gate = await venue.list()
    vip = await venue.list(name="VIP", types=["vip"])
    area = await venue.list(name="Lounge", reentry=True, capacity=1)

    refused(await venue.scan(new_ticket_id(venue.id), gate), "unknown_ticket")
    refused(await venue.scan(await other.ticket(), gate), "wrong_event")
    refused(await venue.scan((await any_api.post("/ticket")).body["id"], gate), "wrong_event")
    refused(await venue.scan(await venue.ticket(type="general"), vip), "type_not_allowed")
    refused(await venue.scan(await venue.ticket(valid_from=now + 3600), gate), "too_early")
    refused(await venue.scan(await venue.ticket(valid_until=now - 3600), gate), "expired")
    cancelled = await venue.ticket()
    assert (await any_api.post(f"/ticket/{cancelled}/revoke")).status == 200
    refused(await venue.scan(cancelled, gate), "revoked")
    used = await venue.ticket()
    first = await venue.scan(used, gate)
    assert first["admitted"] is True and first["reason"] is None and first["ticket"]["status"] == "used"
    again = await venue.scan(used, gate)
    refused(again, "already_used")
    assert again["used_list"] == gate["id"] and abs(again["used_at"] - time.time()) < 60
    regular = await venue.ticket()
    assert (await venue.scan(regular, area))["admitted"] is True
    refused(await venue.scan(regular, area), "already_inside")
    refused(await venue.scan(await venue.ticket(), area, "exit"), "not_inside")
    refused(await venue.scan(await venue.ticket(), area), "area_full")

    counts = (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body
    assert counts["admitted"] == 1 and counts["inside"] == 1
    assert {k: v for k, v in counts["refused"].items() if v} == {
        "unknown_ticket": 1, "wrong_event": 2, "too_early": 1, "expired": 1, "revoked": 1, "already_used": 1}


async def test_an_events_window_bounds_its_tickets_and_an_offline_scan_keeps_its_time(any_api: Api) -> None:
    now = time.time()
    venue = await Venue.open(any_api, starts_at=now - 7200, ends_at=now - 3600)
    gate = await venue.list()
    refused(await venue.scan(await venue.ticket(), gate), "expired")
    # A device that was offline scanned it while the event ran: that time decides.
    late = await venue.scan(await venue.ticket(), gate, scanned_at=now - 5000, offline=True)
    assert late["admitted"] is True


async def test_reentry_entry_exit_entry(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    hall = await venue.list(name="Hall", reentry=True)
    ticket = await venue.ticket()
    assert (await venue.scan(ticket, hall))["inside"] == 1
    assert (await venue.scan(ticket, hall, "exit"))["inside"] == 0
    assert (await venue.scan(ticket, hall))["admitted"] is True
    refused(await venue.scan(ticket, hall), "already_inside")
    assert await venue.inside(hall) == 1


async def test_a_single_entry_list_admits_once_even_after_an_exit(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    assert (await venue.scan(ticket, gate))["admitted"] is True
    assert (await venue.scan(ticket, gate, "exit"))["admitted"] is True
    refused(await venue.scan(ticket, gate), "already_used")
    # The seed's plain scan agrees: the ticket is used.
    assert_problem(await any_api.post(f"/ticket/{ticket}/invalidate"), 409)


async def test_a_ticket_used_at_a_plain_scan_is_already_used_at_a_gate(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    assert (await any_api.post(f"/ticket/{ticket}/invalidate")).status == 200
    answer = await venue.scan(ticket, gate)
    refused(answer, "already_used")
    assert answer["used_list"] is None


async def test_entering_an_area_leaves_the_one_it_names(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    floor = await venue.list(name="Floor", reentry=True)
    lounge = await venue.list(name="Lounge", reentry=True, leaves=[floor["id"]])
    assert lounge["leaves"] == [floor["id"]]
    ticket = await venue.ticket()
    await venue.scan(ticket, floor)
    assert await venue.inside(floor) == 1
    assert (await venue.scan(ticket, lounge))["inside"] == 1
    assert await venue.inside(floor) == 0
    assert (await any_api.get(f"/event/{venue.id}/list/{floor['id']}")).body["exits"] == 1
    # Back to the floor: it is not inside it any more, so it is admitted again.
    assert (await venue.scan(ticket, floor))["admitted"] is True


async def two_gates(aiohttp_client: AiohttpClient, redis: Redis) -> tuple[Api, dict[str, str], dict[str, str],
                                                                         dict[str, str]]:
    """The API with auth on: (api, an admin's headers, gate one's, gate two's)."""
    keys = "g1:scanner:gate-one-0123456789,g2:scanner:gate-two-0123456789,ops:admin:ops-admin-0123456789"
    api = Api(await aiohttp_client(create_app(Settings(api_keys=ApiKeys.parse(keys)), redis=redis)))
    admin, g1, g2 = ({"Authorization": f"Bearer {s}"} for s in
                     ("ops-admin-0123456789", "gate-one-0123456789", "gate-two-0123456789"))
    return api, admin, g1, g2


async def test_annul_undoes_the_last_scan_once_by_its_own_key_only(aiohttp_client: AiohttpClient,
                                                                    fake_redis: Redis) -> None:
    api, admin, g1, g2 = await two_gates(aiohttp_client, fake_redis)
    event = (await api.post("/event", json={"name": "Show"}, headers=admin)).body
    floor = (await api.post(f"/event/{event['id']}/list", json={"name": "Floor", "reentry": True}, headers=admin)).body
    gate = (await api.post(f"/event/{event['id']}/list", json={"name": "Gate", "capacity": 10,
                                                              "leaves": [floor["id"]]}, headers=admin)).body
    ticket = (await api.post("/ticket", json={"event": event["id"]}, headers=admin)).body["id"]
    await api.post("/checkin", json={"ticket": ticket, "list": floor["id"]}, headers=g1)
    r = await api.post("/checkin", json={"ticket": ticket, "list": gate["id"]}, headers=g1)
    assert r.body["admitted"] is True and r.body["ticket"]["status"] == "used"
    annul = {"ticket": ticket, "list": gate["id"]}
    assert_problem(await api.post("/checkin/annul", json=annul, headers=g2), 409)
    r = await api.post("/checkin/annul", json=annul, headers=g1)
    assert r.status == 200 and r.body["inside"] == 0
    assert_problem(await api.post("/checkin/annul", json=annul, headers=g1), 409)
    # Everything is as before the scan: valid again, back on the floor, and it may enter.
    assert (await api.get(f"/ticket/{ticket}", headers=admin)).body["status"] == "valid"
    assert (await api.get(f"/event/{event['id']}/list/{floor['id']}", headers=admin)).body["inside"] == 1
    r = await api.post("/checkin", json={"ticket": ticket, "list": gate["id"]}, headers=g2)
    assert r.body["admitted"] is True


async def test_a_scanner_bound_to_an_event_scans_that_event_only(aiohttp_client: AiohttpClient,
                                                                 fake_redis: Redis) -> None:
    bootstrap = Api(await aiohttp_client(create_app(Settings(), redis=fake_redis)))
    mine, theirs = [Venue(bootstrap, (await bootstrap.post("/event", json={"name": n})).body) for n in "AB"]
    gate_mine, gate_theirs = await mine.list(), await theirs.list()
    ticket_mine, ticket_theirs = await mine.ticket(), await theirs.ticket()
    keys = f"bound:scanner:bound-gate-0123456789:{mine.id}"
    api = Api(await aiohttp_client(create_app(Settings(api_keys=ApiKeys.parse(keys)), redis=fake_redis)))
    auth = {"Authorization": "Bearer bound-gate-0123456789"}
    r = await api.post("/checkin", json={"ticket": ticket_mine, "list": gate_mine["id"]}, headers=auth)
    assert r.status == 200 and r.body["admitted"] is True
    assert_problem(await api.post("/checkin", json={"ticket": ticket_theirs, "list": gate_theirs["id"]},
                                  headers=auth), 403)
    assert_problem(await api.post(f"/ticket/{ticket_theirs}/invalidate", headers=auth), 403)


@pytest.mark.parametrize("body", [
    {}, {"ticket": " x", "list": "0000beef-0000"}, {"ticket": "x\u0007", "list": "0000beef-0000"},
    {"ticket": new_ticket_id(), "list": "nope"},
    {"ticket": new_ticket_id(), "list": "0000beef-0000", "direction": "sideways"},
    {"ticket": new_ticket_id(), "list": "0000beef-0000", "scanned_at": "yesterday"},
    {"ticket": new_ticket_id(), "list": "0000beef-0000", "gate": 3},
])
async def test_a_malformed_scan_is_a_400(any_api: Api, body: dict[str, Any]) -> None:
    assert_problem(await any_api.post("/checkin", json=body), 400)


async def test_an_unknown_list_is_a_404(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    r = await any_api.post("/checkin", json={"ticket": await venue.ticket(), "list": f"{venue.id}-0000"})
    assert_problem(r, 404)
    assert_problem(await any_api.get(f"/event/{venue.id}/list/{venue.id}-0000"), 404)
    assert_problem(await any_api.post(f"/event/{venue.id}/list", json={"name": "B", "leaves": ["0000beef-0000"]}),
                   400)


async def test_occupancy_is_exact_under_concurrent_entries(real_api: Api) -> None:
    venue = await Venue.open(real_api)
    area = await venue.list(name="Pit", reentry=True, capacity=50)
    tickets = [await venue.ticket() for _ in range(200)]
    answers = await asyncio.gather(*(venue.scan(t, area) for t in tickets))
    admitted = [a["ticket"]["id"] for a in answers if a["admitted"]]
    assert len(admitted) == 50 and sum(1 for a in answers if a["reason"] == "area_full") == 150
    assert await venue.inside(area) == 50
    # Exits free places again, exactly as many.
    await asyncio.gather(*(venue.scan(t, area, "exit") for t in admitted[:20]))
    waiting = [t for t in tickets if t not in admitted]
    answers = await asyncio.gather(*(venue.scan(t, area) for t in waiting))
    assert sum(1 for a in answers if a["admitted"]) == 20 and await venue.inside(area) == 50


async def test_a_revocation_racing_a_scan_has_one_outcome(real_api: Api) -> None:
    venue = await Venue.open(real_api)
    gate = await venue.list()
    tickets = [await venue.ticket() for _ in range(40)]

    async def race(ticket: str) -> tuple[bool, str | None]:
        scan, revoke = await asyncio.gather(venue.scan(ticket, gate), real_api.post(f"/ticket/{ticket}/revoke"))
        assert revoke.status == 200
        return scan["admitted"], scan["reason"]

    outcomes = set(await asyncio.gather(*(race(t) for t in tickets)))
    assert outcomes <= {(True, None), (False, "revoked")}


async def test_stats_carry_each_event_and_list(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    await venue.scan(ticket, gate)
    refused(await venue.scan(ticket, gate), "already_used")
    figures = (await any_api.get("/stats")).body["events"][venue.id]
    assert figures["issued"] == 1
    assert figures["lists"][gate["id"]]["admitted"] == 1 and figures["lists"][gate["id"]]["inside"] == 1
    assert figures["lists"][gate["id"]]["refused"]["already_used"] == 1


async def test_the_feed_carries_every_scan_with_list_direction_reason_and_actor(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list(reentry=True)
    ticket = await venue.ticket()
    await venue.scan(ticket, gate)
    await venue.scan(ticket, gate)
    await venue.scan(ticket, gate, "exit")
    feed = [e for e in (await any_api.get("/changes?limit=100")).body if e["ticket_id"] == ticket]
    assert [(e["type"], e["list"], e["direction"], e["reason"], e["actor"]) for e in feed] == [
        ("created", None, None, None, "anonymous"),
        ("checkin", gate["id"], "entry", None, "anonymous"),
        ("checkin_refused", gate["id"], "entry", "already_inside", "anonymous"),
        ("checkin", gate["id"], "exit", None, "anonymous"),
    ]


async def test_a_resent_scan_gets_its_first_answer_never_a_false_refusal(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    resend = {"X-Request-Id": "ef" * 16, **FROM_PROXY}
    body = {"ticket": ticket, "list": gate["id"]}
    first = await any_api.post("/checkin", json=body, headers=resend)
    again = await any_api.post("/checkin", json=body, headers=resend)
    assert first.body["admitted"] is True and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    # Another request is a second scan, and is refused.
    refused((await any_api.post("/checkin", json=body)).body, "already_used")
    assert (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body["admitted"] == 1


async def test_an_offline_scan_uploaded_twice_with_its_key_counts_once(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    ticket = await venue.ticket()
    body = {"ticket": ticket, "list": gate["id"], "scanned_at": time.time() - 60}
    key = {"Idempotency-Key": "device-7-scan-91"}
    first = await any_api.post("/checkin", json=body, headers=key)
    again = await any_api.post("/checkin", json=body, headers=key)
    assert first.body["admitted"] is True and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    assert_problem(await any_api.post("/checkin", json={**body, "direction": "exit"}, headers=key), 422)


async def annul(api: Api, ticket: str, gate: dict[str, Any]) -> Any:
    return await api.post("/checkin/annul", json={"ticket": ticket, "list": gate["id"]})


async def test_an_annul_never_brings_a_revoked_ticket_back(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate, other = await venue.list(), await venue.list(name="Other")
    ticket = await venue.ticket()
    assert (await venue.scan(ticket, gate))["admitted"] is True
    assert (await any_api.post(f"/ticket/{ticket}/revoke", json={})).status == 200
    r = await annul(any_api, ticket, gate)
    assert r.status == 200 and r.body["inside"] == 0  # the holder did not go in
    assert (await any_api.get(f"/ticket/{ticket}")).body["status"] == "revoked"
    refused(await venue.scan(ticket, other), "revoked")
    refused(await venue.scan(ticket, gate), "revoked")
    stats = (await any_api.get("/stats")).body
    assert (stats["valid"], stats["invalid"], stats["revoked"]) == (0, 0, 1)


async def test_only_the_latest_scan_is_annulled_so_an_area_never_goes_below_zero(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    hall = await venue.list(name="Hall", reentry=True, capacity=3)
    vip = await venue.list(name="VIP", reentry=True, leaves=[hall["id"]])
    ticket = await venue.ticket()
    await venue.scan(ticket, hall)
    await venue.scan(ticket, vip)  # leaves the hall
    assert await venue.inside(hall) == 0
    r = await annul(any_api, ticket, hall)  # the hall entry was superseded by the VIP entry
    assert_problem(r, 409)
    assert "latest" in r.body["detail"]
    assert await venue.inside(hall) == 0
    await venue.scan(ticket, vip, "exit")
    assert (await venue.inside(hall), await venue.inside(vip)) == (0, 0)
    # Undone in order, latest first, each undo leaves counts a real sequence of scans gives.
    assert (await annul(any_api, ticket, vip)).status == 200  # the exit: back in the VIP area
    assert (await venue.inside(vip), await venue.inside(hall)) == (1, 0)
    assert (await annul(any_api, ticket, vip)).status == 409  # that scan is gone; the entry was overwritten
    others = [await venue.ticket() for _ in range(4)]
    answers = [await venue.scan(t, hall) for t in others]
    assert [a["admitted"] for a in answers] == [True, True, True, False]
    assert await venue.inside(hall) == 3


async def test_annulling_an_exit_into_a_full_area_is_refused(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    hall = await venue.list(name="Hall", reentry=True, capacity=2)
    first, second, third = [await venue.ticket() for _ in range(3)]
    await venue.scan(first, hall)
    await venue.scan(second, hall)
    await venue.scan(first, hall, "exit")
    assert (await venue.scan(third, hall))["admitted"] is True
    r = await annul(any_api, first, hall)
    assert_problem(r, 409)
    assert "full" in r.body["detail"]
    assert await venue.inside(hall) == 2
    # An entry that left a full area since cannot be annulled back into it either.
    lounge = await venue.list(name="Lounge", reentry=True, leaves=[hall["id"]])
    await venue.scan(second, lounge)
    assert (await venue.scan(first, hall))["admitted"] is True
    assert_problem(await annul(any_api, second, lounge), 409)
    assert (await venue.inside(hall), await venue.inside(lounge)) == (2, 1)


async def test_a_request_id_replays_only_the_request_that_earned_it(any_api: Api) -> None:
    """One X-Request-Id on different requests: each is decided as itself, never answered with
    another's stored answer."""
    venue = await Venue.open(any_api)
    gate, hall = await venue.list(), await venue.list(name="Hall", reentry=True)
    ticket = await venue.ticket()
    same = {"X-Request-Id": "ab" * 16, **FROM_PROXY}
    first = await any_api.post("/checkin", json={"ticket": ticket, "list": gate["id"]}, headers=same)
    assert first.body["admitted"] is True
    other = await any_api.post("/checkin", json={"ticket": ticket, "list": hall["id"]}, headers=same)
    assert other.body["list"] == hall["id"] and other.body["admitted"] is True
    assert "Idempotent-Replayed" not in other.headers
    assert await venue.inside(hall) == 1  # recorded there, not a replay of the gate's answer
    out = await any_api.post("/checkin", json={"ticket": ticket, "list": hall["id"], "direction": "exit"},
                             headers=same)
    assert out.body["direction"] == "exit" and out.body["admitted"] is True
    assert await venue.inside(hall) == 0
    # A seed transition and then a scan under one id: each its own answer, never a 500.
    fresh = await venue.ticket()
    assert (await any_api.post(f"/ticket/{fresh}/invalidate", headers=same)).status == 200
    r = await any_api.post("/checkin", json={"ticket": fresh, "list": gate["id"]}, headers=same)
    assert r.status == 200
    refused(r.body, "already_used")


async def test_a_request_id_on_other_bodies_makes_other_things(any_api: Api) -> None:
    same = {"X-Request-Id": "cd" * 16, **FROM_PROXY}
    first = await any_api.post("/event", json={"name": "Opening night"}, headers=same)
    second = await any_api.post("/event", json={"name": "Closing night"}, headers=same)
    assert (first.status, second.status) == (201, 201)
    assert second.body["name"] == "Closing night" and second.body["id"] != first.body["id"]
    again = await any_api.post("/event", json={"name": "Opening night"}, headers=same)
    assert again.body["id"] == first.body["id"]  # the same request: the event it made
    tickets = [await any_api.post("/ticket", json={"event": e}, headers=same) for e in (first.body["id"],
                                                                                         second.body["id"])]
    # An event's ticket id is its 8-digit event id and 90 random bits: none shared.
    randoms = [t.body["id"][9:] for t in tickets]
    assert randoms[0][5:] != randoms[1][5:]


async def test_a_devices_clock_is_believed_only_for_an_offline_upload_and_only_within_bounds(any_api: Api) -> None:
    now = time.time()
    venue = await Venue.open(any_api, starts_at=now - 7200, ends_at=now - 1800)
    gate = await venue.list()
    # Online, the holder is at the gate now: a clock an hour behind does not admit them.
    refused(await venue.scan(await venue.ticket(), gate, scanned_at=now - 3600), "expired")
    # Offline, within the day an upload is believed: its time decides.
    assert (await venue.scan(await venue.ticket(), gate, scanned_at=now - 3600, offline=True))["admitted"]
    # Offline, three days back is judged as of a day ago (OFFLINE_MAX_AGE_S): after the event
    # that ran from five to two days ago had ended.
    past = Venue(any_api, (await any_api.post("/event", json={
        "name": "Last week", "starts_at": now - 5 * 86400, "ends_at": now - 2 * 86400})).body)
    old = await past.scan(await past.ticket(), await past.list(), scanned_at=now - 3 * 86400, offline=True)
    assert old["conflict"] is True and old["reason"] == "expired"
    # A clock ten days ahead is judged now: a ticket valid from tomorrow was not valid yet.
    soon = Venue(any_api, (await any_api.post("/event", json={"name": "Tomorrow", "starts_at": now + 86400})).body)
    later_gate = await soon.list()
    ahead = await soon.scan(await soon.ticket(), later_gate, scanned_at=now + 10 * 86400, offline=True)
    assert ahead["conflict"] is True and ahead["reason"] == "too_early"
    refused(await soon.scan(await soon.ticket(), later_gate, scanned_at=now + 10 * 86400), "too_early")


async def test_another_gates_upload_at_the_same_time_is_a_conflict_not_a_retry(aiohttp_client: AiohttpClient,
                                                                             fake_redis: Redis) -> None:
    api, admin, g1, g2 = await two_gates(aiohttp_client, fake_redis)
    event = (await api.post("/event", json={"name": "Show"}, headers=admin)).body
    gate = (await api.post(f"/event/{event['id']}/list", json={"name": "Gate"}, headers=admin)).body
    ticket = (await api.post("/ticket", json={"event": event["id"]}, headers=admin)).body["id"]
    scanned_at = round(time.time() - 3, 6)
    scan = {"ticket": ticket, "list": gate["id"], "scanned_at": scanned_at}
    assert (await api.post("/checkin", json=scan, headers=g1)).body["admitted"] is True
    other = (await api.post("/checkin", json={**scan, "offline": True}, headers=g2)).body
    assert other["conflict"] is True and other["reason"] == "already_used"
    own = (await api.post("/checkin", json={**scan, "offline": True}, headers=g1)).body
    assert own["admitted"] is True and own["conflict"] is False
    counts = (await api.get(f"/event/{event['id']}/list/{gate['id']}", headers=admin)).body
    assert (counts["admitted"], counts["conflicts"]) == (1, 1)


async def test_a_code_nobody_issued_is_unknown_whatever_its_prefix(any_api: Api) -> None:
    venue = await Venue.open(any_api)
    gate = await venue.list()
    for made_up in ("00000000-0000-4000-8000-000000000000", new_ticket_id("0badf00d"), new_ticket_id(venue.id)):
        refused(await venue.scan(made_up, gate), "unknown_ticket")
    other = await Venue.open(any_api, name="Elsewhere")
    refused(await venue.scan(await other.ticket(), gate), "wrong_event")
    counts = (await any_api.get(f"/event/{venue.id}/list/{gate['id']}")).body["refused"]
    assert (counts["unknown_ticket"], counts["wrong_event"]) == (3, 1)


@pytest.mark.parametrize("path", ["/changes?after=", "/events?after=", "/changes?event={event}&after="])
async def test_an_empty_feed_cursor_means_from_the_start(any_api: Api, path: str) -> None:
    venue = await Venue.open(any_api)
    await venue.ticket()
    url = path.format(event=venue.id)
    given, start = await any_api.get(url), await any_api.get(url.replace("after=", "").rstrip("&?"))
    assert given.status == start.status == 200
    assert given.body == start.body and given.body


async def test_a_plain_invalidate_uses_a_ticket_at_every_single_entry_list(any_api: Api) -> None:
    """Found by tests/test_model.py: a ticket admitted at a re-entry area, then used by the
    seed's plain invalidate, was admitted at a single-entry gate."""
    venue = await Venue.open(any_api)
    hall, door = await venue.list(name="Hall", reentry=True), await venue.list(name="Door")
    ticket = await venue.ticket()
    assert (await venue.scan(ticket, hall))["admitted"] is True
    assert (await any_api.post(f"/ticket/{ticket}/invalidate")).status == 200
    refused(await venue.scan(ticket, door), "already_used")
    assert (await any_api.post(f"/ticket/{ticket}/validate")).status == 200
    assert (await venue.scan(ticket, door))["admitted"] is True


async def test_a_gates_book_comes_from_the_tickets_so_a_flood_cannot_trim_a_revocation_away(
        aiohttp_client: AiohttpClient, any_redis: Redis, settings: Settings) -> None:
    """Refusals flooded a shard's stream past a revocation, and a gate that built its offline
    book from the feed then admitted the revoked ticket. The book is read from the tickets."""
    api = Api(await aiohttp_client(create_app(dataclasses.replace(settings, events_maxlen=50), redis=any_redis)))
    venue = await Venue.open(api)
    gate = await venue.list(reentry=True)
    revoked, used, untouched = await venue.ticket(), await venue.ticket(), await venue.ticket()
    assert (await api.post(f"/ticket/{revoked}/revoke", json={})).status == 200
    assert (await venue.scan(used, gate))["admitted"] is True
    for _ in range(400):  # junk from one key: codes nobody issued
        refused(await venue.scan(new_ticket_id(venue.id), gate), "unknown_ticket")
    feed = (await api.get("/changes", params={"event": venue.id, "limit": 1000})).body
    assert revoked not in {c["ticket_id"] for c in feed if c["type"] == "revoked"}  # trimmed away
    pages, cursor = [], None
    while True:
        r = await api.get(f"/event/{venue.id}/list/{gate['id']}/book",
                          params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status == 200
        pages.append(r.body)
        cursor = r.body["next"]
        if cursor is None:
            break
    book = {t["id"]: t for page in pages for t in page["tickets"]}
    assert book[revoked]["status"] == "revoked"
    assert book[used]["inside"] is True and book[used]["used_at"] is not None
    assert untouched not in book
    # The feed takes over where the book's first page stood: nothing after it is missed.
    assert (await api.post(f"/ticket/{untouched}/revoke", json={})).status == 200
    after = (await api.get("/changes", params={"event": venue.id, "after": pages[0]["changes_after"]})).body
    assert [c["ticket_id"] for c in after if c["type"] == "revoked"] == [untouched]
