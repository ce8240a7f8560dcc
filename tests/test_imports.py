"""Tickets sold elsewhere, on every backend: imported all or nothing, a code never in two
tickets, scanned by its code like one of ours, judged offline from the gate's book by its
digest, and removed by source while never scanned."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

import pytest
from redis.asyncio import Redis

from service.api.app import create_app
from service.api.appkeys import CONSUMER
from service.api_keys import ApiKeys
from service.settings import Settings
from service.store.link import Link

from .conftest import FROM_PROXY, PROXY_SECRET, TEST_SIGNER, AiohttpClient, Api
from .test_api import assert_problem

ADMIN = {"Authorization": "Bearer adm-0123456789abcdef"}
BOX = {"Authorization": "Bearer box-0123456789abcdef"}
GATE = {"Authorization": "Bearer gate-0123456789abcdef"}
KEYS = "ops:admin:adm-0123456789abcdef,box:issuer:box-0123456789abcdef,gate:scanner:gate-0123456789abcdef"


@pytest.fixture
async def app_api(aiohttp_client: AiohttpClient, any_redis: Redis) -> tuple[Any, Api]:
    app = create_app(Settings(api_keys=ApiKeys.parse(KEYS), signer=TEST_SIGNER, proxy_secret=PROXY_SECRET),
                     redis=any_redis)
    return app, Api(await aiohttp_client(app))


async def _venue(api: Api, capacity: int | None = None) -> tuple[str, str]:
    body: dict[str, Any] = {"name": "Fest"} if capacity is None else {"name": "Fest", "capacity": capacity}
    event = (await api.post("/event", json=body, headers=ADMIN)).body["id"]
    door = (await api.post(f"/event/{event}/list", json={"name": "Door"}, headers=ADMIN)).body["id"]
    return event, door


async def _import(api: Api, event: str, codes: list[Any], source: str = "shop", **headers: str) -> Any:
    items = [c if isinstance(c, dict) else {"code": c} for c in codes]
    return await api.post(f"/event/{event}/import", json={"source": source, "codes": items}, headers={**BOX, **headers})


async def _scan(api: Api, code: str, door: str, **body: Any) -> dict[str, Any]:
    r = await api.post("/checkin", json={"ticket": code, "list": door, **body}, headers=GATE)
    assert r.status == 200, r.body
    return r.body  # type: ignore[no-any-return]


async def _process(app: Any) -> None:
    consumer = app[CONSUMER]
    await consumer.ensure_group()
    await consumer.apply(await consumer.read_new("c1", 1000))


async def test_an_imported_code_is_a_ticket_in_every_way(app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    event, door = await _venue(api)
    before = (await api.get("/stats", headers=ADMIN)).body
    r = await _import(api, event, [{"code": "SHOP-0001", "type": "vip", "holder": "Ada", "seat": "A1"}, "SHOP-0002"])
    assert r.status == 201 and r.body["source"] == "shop"
    first, second = r.body["tickets"]
    assert (first["code"], first["source"], first["type"], first["holder"], first["event"]) == \
        ("SHOP-0001", "shop", "vip", "Ada", event)
    assert first["status"] == "valid" and first["id"][:8] == event and first["id"] != second["id"]
    # The seed's routes, by id; the count of the event and the stats.
    assert (await api.get(f"/ticket/{first['id']}", headers=ADMIN)).body == first
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 2
    after = (await api.get("/stats", headers=ADMIN)).body
    assert (after["total"] - before["total"], after["valid"] - before["valid"]) == (2, 2)
    # Scanned by its code: admitted once, then already used.
    admitted = await _scan(api, "SHOP-0001", door)
    assert admitted["admitted"] is True and admitted["ticket"]["id"] == first["id"]
    again = await _scan(api, "SHOP-0001", door)
    assert (again["admitted"], again["reason"]) == (False, "already_used")
    # The seed's own routes, by id.
    assert (await api.get(f"/ticket?id={second['id']}", headers=ADMIN)).body == [second]
    used = await api.request("PATCH", f"/ticket/invalidate?id={second['id']}", headers=ADMIN)
    assert used.status == 200 and used.body["valid"] is False
    assert (await api.request("PATCH", f"/ticket/validate?id={second['id']}", headers=ADMIN)).body["valid"] is True
    # Revoked like any ticket: refused at the gate.
    assert (await api.post(f"/ticket/{second['id']}/revoke", json={}, headers=BOX)).status == 200
    assert (await _scan(api, "SHOP-0002", door))["reason"] == "revoked"
    # History: made, admitted, refused.
    await _process(app)
    history = (await api.get(f"/ticket/{first['id']}/history", headers=ADMIN)).body
    assert [c["type"] for c in history] == ["created", "checkin", "checkin_refused"]
    assert history[0]["source"] == "shop" and history[0]["imported"] == {
        "code_digest": hashlib.sha256(f"{event}\nSHOP-0001".encode()).hexdigest()[:32], "type": "vip",
        "valid_from": None, "valid_until": None}


async def test_a_code_nobody_imported_is_an_unknown_ticket(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door = await _venue(api)
    await _import(api, event, ["SHOP-1"])
    answer = await _scan(api, "SHOP-2", door)
    assert (answer["admitted"], answer["reason"], answer["ticket"]) == (False, "unknown_ticket", None)
    other, other_door = await _venue(api)  # another event's gate does not know this one's codes
    assert (await _scan(api, "SHOP-1", other_door))["reason"] == "unknown_ticket"


async def test_a_code_given_twice_in_a_call_imports_nothing_and_is_named(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, _ = await _venue(api)
    r = await _import(api, event, ["A", "B", "A", "C", "B"])
    assert_problem(r, 409)
    assert r.body["duplicates"] == [{"index": 2, "code": "A", "where": "call"},
                                    {"index": 4, "code": "B", "where": "call"}]
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 0


async def test_a_code_already_imported_imports_nothing_and_names_its_ticket(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door = await _venue(api)
    stored = (await _import(api, event, ["A", "B"])).body["tickets"]
    r = await _import(api, event, ["C", "B", "D"], source="other-shop")
    assert_problem(r, 409)
    assert r.body["duplicates"] == [{"index": 1, "code": "B", "where": "stored", "ticket": stored[1]["id"]}]
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 2
    assert (await _scan(api, "C", door))["reason"] == "unknown_ticket"
    # Another event may have the same code: a code is one ticket where it can be scanned.
    other, other_door = await _venue(api)
    assert (await _import(api, other, ["B"])).status == 201
    assert (await _scan(api, "B", other_door))["admitted"] is True
    assert (await _scan(api, "B", door))["admitted"] is True


async def test_the_same_import_again_gets_its_tickets_back(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, _ = await _venue(api)
    first = await _import(api, event, ["A", "B"], **{"Idempotency-Key": "import-1"})
    again = await _import(api, event, ["A", "B"], **{"Idempotency-Key": "import-1"})
    assert first.status == again.status == 201 and again.body == first.body
    assert again.headers["Idempotent-Replayed"] == "true"
    reused = await _import(api, event, ["A", "C"], **{"Idempotency-Key": "import-1"})
    assert_problem(reused, 422)
    # As nginx re-sends it to another replica: the same request id, the same request.
    resend = {"X-Request-Id": "ef" * 16, **FROM_PROXY}
    made = await _import(api, event, ["D"], **resend)
    assert (await _import(api, event, ["D"], **resend)).body == made.body
    other_request = await _import(api, event, ["D"], **{**resend, "X-Request-Id": "ab" * 16})
    assert_problem(other_request, 409)
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 3


async def test_an_import_the_capacity_cannot_hold_imports_nothing(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, _ = await _venue(api, capacity=3)
    assert (await api.post("/ticket", json={"event": event}, headers=BOX)).status == 201
    assert_problem(await _import(api, event, ["A", "B", "C"]), 409)
    assert (await _import(api, event, ["A", "B"])).status == 201
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 3


async def test_codes_a_gate_would_read_as_ours_are_refused(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door = await _venue(api)
    ours = (await api.post("/ticket", json={"event": event}, headers=BOX)).body["id"]
    token = (await api.get(f"/ticket/{ours}/token", headers=BOX)).body["token"]
    r = await _import(api, event, ["fine", ours, token, ours.upper()])
    assert_problem(r, 422)
    assert [c["index"] for c in r.body["codes"]] == [1, 2, 3]
    # A UUID of another shape is a code: found, on the path of ids not of this event.
    uuid_code = "0b2e7c1a-4f6d-4a8e-9c3b-5d7e1f2a3b4c"
    made = (await _import(api, event, [uuid_code])).body["tickets"][0]
    answer = await _scan(api, uuid_code, door)
    assert answer["admitted"] is True and answer["ticket"]["id"] == made["id"]


@pytest.mark.parametrize("body", [
    {"codes": [{"code": "A"}]}, {"source": "shop"}, {"source": "shop", "codes": []},
    {"source": "a shop", "codes": [{"code": "A"}]}, {"source": "shop", "codes": [{"code": " A"}]},
    {"source": "shop", "codes": [{"code": "A\n"}]}, {"source": "shop", "codes": [{"code": "A", "colour": "red"}]},
    {"source": "shop", "codes": [{"code": "A"}] * 1001},
    {"source": "shop", "codes": [{"code": "A", "valid_from": 20, "valid_until": 10}]},
])
async def test_a_malformed_import_is_a_400(app_api: tuple[Any, Api], body: Any) -> None:
    _, api = app_api
    event, _ = await _venue(api)
    assert_problem(await api.post(f"/event/{event}/import", json=body, headers=BOX), 400)


async def test_who_may_import(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, _ = await _venue(api)
    assert_problem(await _import(api, event, ["A"], **GATE), 403)
    assert_problem(await api.request("DELETE", f"/event/{event}/import/shop", headers=GATE), 403)
    assert (await _import(api, event, ["A"], **ADMIN)).status == 201
    assert_problem(await _import(api, "0badc0de", ["A"]), 404)
    assert_problem(await api.request("DELETE", "/event/0badc0de/import/shop", headers=BOX), 404)
    assert_problem(await api.request("DELETE", f"/event/{event}/import/a%20shop", headers=BOX), 400)


async def test_withdrawing_a_source_removes_its_unscanned_tickets_and_names_the_rest(
        app_api: tuple[Any, Api]) -> None:
    app, api = app_api
    event, door = await _venue(api)
    hall = (await api.post(f"/event/{event}/list", json={"name": "Hall", "reentry": True}, headers=ADMIN)).body["id"]
    made = (await _import(api, event, [f"S-{i}" for i in range(6)])).body["tickets"]
    ids = [t["id"] for t in made]
    other = (await _import(api, event, ["O-1"], source="box")).body["tickets"][0]
    await _scan(api, "S-0", door)  # admitted: kept
    await _scan(api, "S-1", hall)
    await _scan(api, "S-1", hall, direction="exit")  # in and out again: kept
    await _scan(api, "S-2", hall)
    assert (await api.post("/checkin/annul", json={"ticket": "S-2", "list": hall}, headers=GATE)).status == 200
    await api.post(f"/ticket/{ids[3]}/revoke", json={}, headers=BOX)  # revoked, never scanned: removed
    await _scan(api, "S-4", door, direction="exit")  # refused (not inside): not a scan that admitted
    stats = (await api.get("/stats", headers=ADMIN)).body
    r = await api.request("DELETE", f"/event/{event}/import/shop", headers=BOX)
    assert r.status == 200
    assert (r.body["removed"], r.body["kept"]) == (3, [{"ticket": ids[0], "code": "S-0"},
                                                       {"ticket": ids[1], "code": "S-1"},
                                                       {"ticket": ids[2], "code": "S-2"}])
    after = (await api.get("/stats", headers=ADMIN)).body
    assert (stats["total"] - after["total"], stats["valid"] - after["valid"], stats["revoked"] - after["revoked"]) \
        == (3, 2, 1)
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 4
    for gone in (ids[3], ids[4], ids[5]):
        assert_problem(await api.get(f"/ticket/{gone}", headers=ADMIN), 404)
    assert (await _scan(api, "S-5", door))["reason"] == "unknown_ticket"
    assert (await _scan(api, "S-1", door))["admitted"] is True  # kept, still a ticket
    assert (await api.get(f"/ticket/{other['id']}", headers=ADMIN)).status == 200  # another source's
    again = await api.request("DELETE", f"/event/{event}/import/shop", headers=BOX)
    assert (again.body["removed"], len(again.body["kept"])) == (0, 3)
    # The feed says so, the processor counts it and drops the removed tickets' histories.
    await _process(app)
    changes = (await api.get(f"/changes?event={event}&limit=1000", headers=ADMIN)).body
    removed = [c for c in changes if c["type"] == "removed"]
    assert sorted(c["ticket_id"] for c in removed) == sorted(ids[3:]) and all(c["source"] == "shop" for c in removed)
    assert (await api.get("/stats", headers=ADMIN)).body["processed"]["removed"] == 3
    assert_problem(await api.get(f"/ticket/{ids[3]}/history", headers=ADMIN), 404)


async def test_the_book_carries_every_imported_code_as_its_digest(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door = await _venue(api)
    ours = (await api.post("/ticket", json={"event": event}, headers=BOX)).body["id"]
    made = (await _import(api, event, [{"code": "A", "type": "day", "valid_from": 1000, "valid_until": 2000},
                                        "B"])).body["tickets"]
    await _scan(api, "B", door)
    book = (await api.get(f"/event/{event}/list/{door}/book", headers=GATE)).body["tickets"]
    by_id = {t["id"]: t for t in book}
    assert set(by_id) == {made[0]["id"], made[1]["id"]} and ours not in by_id  # ours: its token says it all
    digest = hashlib.sha256(f"{event}\nA".encode()).hexdigest()[:32]
    assert by_id[made[0]["id"]]["imported"] == {"code_digest": digest, "type": "day", "valid_from": 1000,
                                                "valid_until": 2000}
    assert by_id[made[1]["id"]]["used_at"] is not None
    assert "A" not in str(book).replace(digest, "")  # no code in clear


async def test_concurrent_imports_of_one_code_make_one_ticket(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, _ = await _venue(api)
    answers = await asyncio.gather(*(_import(api, event, [f"solo-{i}", "SAME"], source=f"s{i}") for i in range(8)))
    assert sorted(a.status for a in answers) == [201] + [409] * 7
    assert (await api.get(f"/event/{event}", headers=ADMIN)).body["issued"] == 2


async def test_a_code_is_annulled_by_its_code(app_api: tuple[Any, Api]) -> None:
    _, api = app_api
    event, door = await _venue(api)
    await _import(api, event, ["A"])
    await _scan(api, "A", door)
    r = await api.post("/checkin/annul", json={"ticket": "A", "list": door}, headers=GATE)
    assert r.status == 200 and r.body["inside"] == 0
    assert (await _scan(api, "A", door))["admitted"] is True


async def test_a_scan_of_a_code_is_one_round_trip(real_api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """The code gives the ticket's key without a read: the scan is the one script call a scan
    of our own ticket is (every call the store makes to Redis, counted: a command, a script,
    or a call of redis-py's own, a pipeline's included)."""
    event = (await real_api.post("/event", json={"name": "Fest"})).body["id"]
    door = (await real_api.post(f"/event/{event}/list", json={"name": "Door"})).body["id"]
    await real_api.post(f"/event/{event}/import", json={"source": "shop", "codes": [{"code": "A"}, {"code": "B"}]})
    assert (await real_api.post("/checkin", json={"ticket": "A", "list": door})).body["admitted"]  # warms the list
    sent: list[str] = []
    command, call = Link.command, Link.call

    async def counted_command(self: Link, op: str, *args: Any, **kw: Any) -> Any:
        sent.append(op)
        return await command(self, op, *args, **kw)

    def counted_call(self: Link, op: str, *args: Any, **kw: Any) -> Any:
        sent.append(op)
        return call(self, op, *args, **kw)

    monkeypatch.setattr(Link, "command", counted_command)
    monkeypatch.setattr(Link, "call", counted_call)
    assert (await real_api.post("/checkin", json={"ticket": "B", "list": door})).body["admitted"]
    assert sent == ["checkin"]
    # A code that is a UUID of no shape of this event is looked for on the path of another
    # event's ids: a second round trip, on that path only.
    uuid_code = "0b2e7c1a-4f6d-4a8e-9c3b-5d7e1f2a3b4c"
    await real_api.post(f"/event/{event}/import", json={"source": "shop", "codes": [{"code": uuid_code}]})
    sent.clear()
    assert (await real_api.post("/checkin", json={"ticket": uuid_code, "list": door})).body["admitted"]
    assert sent == ["ticket_exists", "checkin"]
